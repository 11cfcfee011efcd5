# What each training job asks for: its DDP processes share the global batch, and with gpus_per_train its
# GPUs, CPUs, memory and time limit come from here (lst.engine.cluster), sized from each model's schedule; the
# cluster profile names only the partitions. Checked when the DAG is built, before any job.
import lst.engine.budget
from lst.data.sampling import per_process_batch

# Snakemake's --set-resources and --set-threads replace a rule's value key by key: these would undo the
# GPU count and the CPUs per GPU derived here (runtime and mem_mb may be set by hand)
DERIVED_RESOURCES = ("gpu", "gpus", "nodes", "cpus_per_gpu", "cpus_per_task")
TRAIN_RULES = {"train_base": BASES, "train_joint": JOINT, "train_phase": INCREMENTAL}


def training_config(rule_name, method):
    """The resolved config of ``method``'s job of ``rule_name`` (train_joint: train_base's step at phase K)."""
    step = "train_phase" if rule_name == "train_phase" else "train_base"
    cfg = composed(tuple(step_overrides(step, method, None, every_value=True)))
    return {**cfg, "phase": K if rule_name == "train_joint" else cfg["phase"]}


def training_schedule(rule_name, method):
    """(schedule, the key of its batch): train_base as the job derives it, or train_phase."""
    cfg = training_config(rule_name, method)
    if rule_name == "train_phase":
        return cfg["train_phase"], "train_phase.batch_size"
    return lst.engine.budget.base_schedule(cfg, K), "train_base.batch_size"


def check_batches():
    """Every training job's global batch splits evenly across its processes (one line naming the key)."""
    for rule_name, methods in TRAIN_RULES.items():
        for method in methods:
            schedule, key = training_schedule(rule_name, method)
            try:
                per_process_batch(schedule["batch_size"], PROCESSES_PER_TRAIN, key)
            except lst.errors.ConfigError as error:
                raise lst.errors.ConfigError(f"{error} (method {method}, {rule_name})") from None


def gpu_jobs():
    """{(rule_name, method): lst.engine.cluster.TrainingJob} of every training job on GPUs."""
    jobs = {}
    for rule_name, methods in TRAIN_RULES.items():
        for method in methods:
            schedule, key = training_schedule(rule_name, method)
            backbone = training_config("train_base", base_of(method))["model"]["backbone"]
            job = lst.engine.cluster.training_job(schedule, backbone, GPUS_PER_TRAIN, config["gpu_jobs"], key)
            jobs[rule_name, method] = job
    device = training_config("train_base", BASE)["device"]
    if device == "cpu":
        raise lst.errors.ConfigError(f"device: cpu with gpus_per_train: {GPUS_PER_TRAIN}; give device auto or cuda")
    return jobs


def check_profile():
    """No --set-resources / --set-threads (a profile's) that would undo the derived GPU request."""
    settings = workflow.resource_settings
    for rule_name in TRAIN_RULES:
        given = settings.overwrite_resources.get(rule_name, {})
        derived = [f"set-resources {key}" for key in given if key in DERIVED_RESOURCES]
        derived += ["set-threads"] if rule_name in settings.overwrite_threads else []
        if derived:
            raise lst.errors.ConfigError(
                f"{rule_name}: {' and '.join(derived)} (from the profile or the command line) would undo the request "
                f"derived from gpus_per_train: {GPUS_PER_TRAIN} and gpu_jobs; remove it (runtime and mem_mb may stay)"
            )


def training_plan(rule_name, method, job):
    """One line of what a job asks for, as the dry run shows it."""
    by_hand = workflow.resource_settings.overwrite_resources.get(rule_name, {})
    shown = {key: f"{by_hand[key].value} (set-resources)" if key in by_hand else value for key, value in
             (("mem_mb", job.mem_mb), ("runtime", f"{job.runtime} min"))}  # fmt: skip
    return (
        f"lst: {rule_name} {method}: gpu={job.gpus} on nodes=1, {job.gpus} processes x {job.images_per_process} "
        f"image(s) = global batch {job.batch_size}, {job.iterations} iterations, threads={job.threads}, "
        f"mem_mb={shown['mem_mb']}, runtime={shown['runtime']}"
    )


refused(check_batches)
GPU_JOBS = refused(gpu_jobs) if GPUS_PER_TRAIN else {}
if GPU_JOBS:
    refused(check_profile)
    if workflow.is_main_process:
        for (rule_name, method), job in GPU_JOBS.items():
            print(training_plan(rule_name, method, job), file=sys.stderr)
# torch threads of a training job: the CPUs it gets
TRAIN_THREADS = config["gpu_jobs"]["cpus_per_gpu"] * GPUS_PER_TRAIN if GPUS_PER_TRAIN else config["threads"]


def train_resources(rule_name):
    """The resources of ``rule_name``'s jobs: none on a CPU (the profile's), else the derived request."""
    jobs = [job for (name, _), job in GPU_JOBS.items() if name == rule_name]
    if not jobs:
        return {}
    return {**jobs[0].resources(), "runtime": lambda wildcards: GPU_JOBS[rule_name, wildcards.method].runtime}
