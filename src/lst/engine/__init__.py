"""Engine: the trainer (loop, hooks, optimiser and schedule) and how a process runs (DDP, device,
precision). Method-agnostic: methods plug in through the steps. May import lst.data and lst.modeling."""
