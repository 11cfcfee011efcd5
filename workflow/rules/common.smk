# Shared helpers of the rules: paths, the number of phases, and the Hydra command line of each step.
import os
import re
import shlex
import sys
from pathlib import Path

from snakemake.settings.types import DeploymentMethod

RESULTS = f"results/{config['dataset']['name']}"
# The interpreter of the rules: the one running snakemake (the venv), or the env's under --sdm conda.
if "python" in config:
    PYTHON = config["python"]
elif DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method:
    PYTHON = "python"
else:
    PYTHON = sys.executable
# Jobs import lst from this checkout, whatever environment they run in.
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(Path(workflow.basedir) / "src"), os.environ.get("PYTHONPATH")) if p
)
BASE = "base"  # the shared phase-0 model lives in results/<dataset>/base/phase0
METHODS = {
    # incremental methods: what each adds to fine-tuning on the new classes
    "finetune": {"replay": False, "distill": False, "meta": False},
    "replay": {"replay": True, "distill": False, "meta": False},
    "distill": {"replay": False, "distill": True, "meta": False},
    "lst": {"replay": True, "distill": True, "meta": False},
    "lst_meta": {"replay": True, "distill": True, "meta": True},
}
JOINT = {
    # non-incremental baselines, trained on every class at once: with repeat-factor sampling?
    "joint": False,
    "joint_rfs": True,
}


wildcard_constraints:
    method="[a-z_]+",
    phase=r"\d+",


def count_categories(train_json):
    """Categories in the train json, for phase counts given as base + step only."""
    import msgspec

    class Categories(msgspec.Struct):
        categories: list[msgspec.Raw]

    if not Path(train_json).is_file():
        raise ValueError(
            f"{train_json}: not found, so the number of phases cannot be counted from its categories; "
            "give phases.num_incremental or phases.sizes in the config"
        )
    return len(msgspec.json.decode(Path(train_json).read_bytes(), type=Categories).categories)


def num_incremental_phases():
    phases = config["phases"]
    if "sizes" in phases:
        return len(phases["sizes"]) - 1
    if phases.get("num_incremental") is not None:
        return phases["num_incremental"]
    num = count_categories(config["dataset"]["train_json"])
    return -(-(num - phases["base"]) // phases["step"])


K = num_incremental_phases()


def hydra_quoted(text):
    """``text`` as a Hydra quoted string: only quotes, and backslashes before a quote or the end, are escaped."""
    text = re.sub(r"(\\*)'", lambda m: 2 * m.group(1) + "\\'", str(text))
    return "'" + re.sub(r"(\\+)$", lambda m: 2 * m.group(1), text) + "'"


def hydra_value(value):
    """A dataset value in Hydra's override grammar: a dict ({train: DIR, val: DIR}) as {key:'value',...}."""
    if isinstance(value, dict):
        return "{" + ",".join(f"{key}:{hydra_quoted(item)}" for key, item in value.items()) + "}"
    return value


def hydra_args(step, run_dir, method=BASE, phase=0, **paths):
    """Quoted Hydra overrides for a step: preset, dataset, phases, method, paths, the user's overrides.

    Params built from wildcards alone (no input, output or threads arguments): Snakemake records only such
    params, so a changed override reruns the step. The shell adds ``threads={threads}``.
    """
    phases = config["phases"]
    if "sizes" in phases:
        phases = {"sizes": phases["sizes"]}
    flags = METHODS.get(method, {"replay": False, "distill": False, "meta": False})
    args = [
        f"preset={config['preset']}",
        f"seed={config['seed']}",
        f"phase={phase}",
        f"method.name={method}",
        f"method.replay={flags['replay']}",
        f"method.distill={flags['distill']}",
        f"method.meta={flags['meta']}",
        f"method.repeat_factor_sampling={JOINT.get(method, False)}",
        f"replay.world_size={PROCESSES_PER_TRAIN}",  # replay streams are split for the training processes
        f"hydra.run.dir={run_dir}",
        f"hydra.output_subdir=.hydra/{step}",
        f"hydra.job.name={step}",
    ]
    if step == "train_base" and BACKBONE_WEIGHTS:  # the models built afresh: base and joint
        args.append(f"model.backbone_weights={BACKBONE_WEIGHTS}")
    args += [f"dataset.{key}={hydra_value(value)}" for key, value in config["dataset"].items()]
    args += [f"phases.{key}={value}" for key, value in phases.items()]
    for key, value in paths.items():
        value = f"[{','.join(map(str, value))}]" if isinstance(value, list) else value
        args.append(f"paths.{key}={value}")
    args += config.get("overrides", {}).get("all", []) + config.get("overrides", {}).get(step, [])
    return " ".join(shlex.quote(str(arg)) for arg in args)


# Processes of each training job (DDP): one per GPU, or gloo processes on a CPU; above 1, torchrun starts them.
PROCESSES_PER_TRAIN = config.get("processes_per_train", 1)


def train_command(module):
    """python -m <module>, or torchrun with PROCESSES_PER_TRAIN processes on this node."""
    python = shlex.quote(PYTHON)
    if PROCESSES_PER_TRAIN == 1:
        return f"{python} -m {module}"
    return f"{python} -m torch.distributed.run --standalone --nproc-per-node={PROCESSES_PER_TRAIN} -m {module}"


# a phase-0 model folder's files, linked from base/phase0 into every incremental method's phase0
BASE_FILES = ("model.pt", "eval_curve.parquet") + tuple(
    f"eval/{name}" for name in ("metrics.parquet", "per_class.parquet", "detections.parquet", "metrics.md")
)


def model_path(method, phase):
    return f"{RESULTS}/{BASE}/phase0/model.pt" if int(phase) == 0 else f"{RESULTS}/{method}/phase{phase}/model.pt"


# the trimmed COCO checkpoint the base phase starts from, when the config names one
INIT = f"{RESULTS}/weights/init.pt" if config["weights"] else None
# an ImageNet state dict for the backbone body of the models built afresh (the COCO checkpoint wins)
BACKBONE_WEIGHTS = config.get("backbone_weights")
DATA = multiext(f"{RESULTS}/data/", "images.parquet", "annotations.parquet", "categories.parquet")
# written by check_data once every image is on disk and every mask decodes; rules that read images need it
CHECKED = f"{RESULTS}/data/check.md"
SPLIT = multiext(f"{RESULTS}/split/", "categories.parquet", "images.parquet", "phases.parquet", "phases.md")
