"""Methods: the torch side of LST's incremental methods, one module per method's logic: logit distillation
and the meta-module. Replay is a sample stream (lst.data.sampling). May import data, modeling, engine."""
