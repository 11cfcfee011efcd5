# Shared by the rules: the methods, paths, the number of phases, and each step's settings and command line.
# Each step's rule declares its files as named inputs and outputs (they become the step's paths.<name>),
# takes its params from step_params() and its shell from STEP, the one template.
import functools
import json
import os
import re
import shlex
import sys
from pathlib import Path

from snakemake.settings.types import DeploymentMethod

# lst from this checkout, here and in the jobs (also under --sdm conda, whose environment lacks lst)
SRC = Path(workflow.basedir) / "src"
sys.path.insert(0, str(SRC))
import lst.engine.cluster
import lst.conf
import lst.data.lvis_json
import lst.errors
import lst.methods
from lst.data.phase_plan import phase_count
from lst.steps.settings import READS, covers

RESULTS = f"results/{config['dataset']['name']}"
# The seeded steps' files (models, replay streams, teacher logits, evaluations): one folder per seed, so that
# adding a seed runs only its own jobs. The data, split and trimmed weights under RESULTS serve every seed.
SEEDS = [int(seed) for seed in config["seeds"]]
RUN = f"{RESULTS}/seed{{seed}}"  # with the {seed} wildcard of a rule's paths
# the software of the steps (snakemake --sdm conda), the same pins as requirements.lock
ENV = "../../envs/lst.yaml"
# the interpreter of the steps: the one running snakemake (the venv), or the environment's under --sdm conda
if "python" in config:
    PYTHON = config["python"]
elif DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method:
    PYTHON = "python"
else:
    PYTHON = sys.executable


# ---- Composing the steps' Hydra config ---------------------------------------------------------------------


@functools.cache
def composed(overrides):
    """The Hydra config of lst composed with ``overrides``, resolved; a bad key or value raises, in one line."""
    return lst.conf.compose(overrides)


def hydra_value(value):
    """``value`` in Hydra's override grammar: lists and dicts element-wise, strings quoted unless plain names."""
    if isinstance(value, dict):
        return "{" + ",".join(f"{key}:{hydra_value(item)}" for key, item in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(hydra_value(item) for item in value) + "]"
    if value is None:
        return "null"
    if isinstance(value, str) and not (
        re.fullmatch(r"[A-Za-z_/][\w./-]*", value) and value.lower() not in ("true", "false", "null", "inf", "nan")
    ):
        return hydra_quoted(value)
    return str(value)


def hydra_quoted(text):
    """``text`` as a Hydra quoted string: only quotes, and backslashes before a quote or the end, are escaped."""
    text = re.sub(r"(\\*)'", lambda m: 2 * m.group(1) + "\\'", str(text))
    text = re.sub(r"(\\+)$", lambda m: 2 * m.group(1), text)
    return f"'{text}'"


def refused(make):
    """``make()``; for bad input (a config value, a method, a file: lst.errors.InputError) one line and exit 1,
    before any job, instead of a traceback."""
    try:
        return make()
    except lst.errors.InputError as error:
        print(f"lst: {error}", file=sys.stderr)
        raise SystemExit(1) from None


# The methods: one file each in src/lst/conf/method/ or a folder of method_dirs (lst.conf.methods); each names
# its family (lst.methods), which says its kind and the files its phases need (Method.phase_inputs).
METHOD_DIRS = config["method_dirs"]
BASE = lst.conf.BASE  # the shared phase-0 model lives in results/<dataset>/base/phase0
refused(lambda: lst.conf.check_method_names(config["methods"], METHOD_DIRS))


def check_seeds():
    """No scalar ``seed`` (configs before ``seeds``: say what to write) and no seed twice."""
    if "seed" in config:
        raise lst.errors.ConfigError(
            f"config seed: {config['seed']!r}: seeds is a list now; write seeds: [{config['seed']}] (every seeded "
            "step runs once per seed)"
        )
    if len(set(SEEDS)) < len(SEEDS):
        raise lst.errors.ConfigError(f"config seeds: {SEEDS} repeats a seed; give each seed once")


refused(check_seeds)


def method_overrides(method):
    """The Hydra overrides that select ``method``: its file, and the folders of users' methods."""
    return [f"method={method}"] + ([f"method_dirs={hydra_value(METHOD_DIRS)}"] if METHOD_DIRS else [])


def load_configured_method(name):
    """The method ``name`` as the steps compose it (preset, its file, overrides.all), its settings checked."""
    overrides = (f"preset={config['preset']}", *method_overrides(name), *config["overrides"].get("all", []))
    return lst.methods.load_method(composed(overrides)["method"], METHOD_DIRS)


METHODS = refused(lambda: {name: load_configured_method(name) for name in config["methods"]})
INCREMENTAL = [name for name, method in METHODS.items() if method.kind is lst.methods.Kind.incremental]
JOINT = [name for name, method in METHODS.items() if method.kind is lst.methods.Kind.joint]


def base_methods():
    """The phase-0 models: the shared base and each distinct ``method.base`` of the incremental methods, each
    a method file of a joint family, trained on the base classes; methods naming the same file share it."""
    names = dict.fromkeys([BASE, *(METHODS[name].base for name in INCREMENTAL)])
    bases = {name: load_configured_method(name) for name in names}
    for name, method in bases.items():
        if method.kind is not lst.methods.Kind.joint:
            users = [m for m in INCREMENTAL if METHODS[m].base == name]
            raise lst.errors.ConfigError(
                f"method.base of {', '.join(users)}: {name!r} is a method of kind {method.kind.value}; "
                "a base model is trained as a joint model is (a method file of a joint family)"
            )
    return bases


BASES = refused(base_methods)


def one_of(names):
    """A wildcard constraint matching exactly ``names``; none at all when empty (an empty one matches anything)."""
    return "|".join(names) or "(?!)"


wildcard_constraints:
    method="[a-z_][a-z0-9_]*",
    phase=r"\d+",
    seed=r"\d+",


@functools.cache
def count_categories(train_json):
    """Categories in the train json, for phase counts given as base + step only; read and checked as the steps
    read it (a file that is missing or not LVIS json: one line naming it)."""
    if not Path(train_json).is_file():
        raise lst.errors.DataError(
            f"{train_json}: not found, so the number of phases cannot be counted from its categories; "
            "give phases.num_incremental or phases.sizes in the config"
        )
    return lst.data.lvis_json.count_categories(train_json)


# the incremental phases, as the split step counts them (the categories are read only if K depends on them)
K = refused(lambda: phase_count(config["phases"], lambda: count_categories(config["dataset"]["train_json"])))

# Processes of each training job (DDP): one per GPU, or gloo processes on a CPU; above 1, torchrun starts them.
GPUS_PER_TRAIN = config["gpus_per_train"]
PROCESSES_PER_TRAIN = refused(
    lambda: lst.engine.cluster.training_processes(GPUS_PER_TRAIN, config["processes_per_train"])
)
TRAINING = ("train_base", "train_phase")  # the steps that run under torchrun

# a phase-0 model folder's files, linked from base/phase0 into every incremental method's phase0
BASE_FILES = ("model.pt", "eval_curve.parquet") + tuple(
    f"eval/{name}"
    for name in ("metrics.parquet", "per_class.parquet", "detections.parquet", "metrics.md", "gallery.png")
)
# the trimmed COCO checkpoint the base phase starts from, when the config names one
INIT = f"{RESULTS}/weights/init.pt" if config["weights"] else None
# an ImageNet state dict for the backbone body of the models built afresh (the COCO checkpoint wins)
BACKBONE_WEIGHTS = config["backbone_weights"]
DATA = multiext(f"{RESULTS}/data/", "images.parquet", "annotations.parquet", "categories.parquet")
# written by check_data once every image is on disk and every mask decodes; rules that read images need it
CHECKED = f"{RESULTS}/data/check.md"
SPLIT = multiext(f"{RESULTS}/split/", "categories.parquet", "images.parquet", "phases.parquet", "phases.md")

# The models of the report, for every seed: the base models, every phase of the incremental methods, the
# joint ones' last
REPORTED = [
    (seed, method, phase)
    for seed in SEEDS
    for method, phase in [(base, 0) for base in BASES]
    + [(method, phase) for method in config["methods"] for phase in ([K] if method in JOINT else range(1, K + 1))]
]
REPORT = {
    name: [f"{RESULTS}/seed{seed}/{method}/phase{phase}/{file}" for seed, method, phase in REPORTED]
    for name, file in (
        ("metrics", "eval/metrics.parquet"),
        ("per_class", "eval/per_class.parquet"),
        ("curves", "eval_curve.parquet"),
    )
}
# the gallery's columns: the detections of the models of the last phase of the first seed, in REPORTED's order
GALLERY = [
    f"{RESULTS}/seed{seed}/{method}/phase{phase}/eval/detections.parquet"
    for seed, method, phase in REPORTED
    if phase == K and seed == SEEDS[0]
]
BASE_LINKS = [
    f"{RESULTS}/seed{seed}/{method}/phase0/{file}"
    for seed in SEEDS
    for method in config["methods"]
    if method in INCREMENTAL
    for file in BASE_FILES
]
# the method the others are compared with seed by seed: the config's, or the first incremental method
REFERENCE = config["reference"] or next(iter(INCREMENTAL), None)


def check_reference():
    if REFERENCE is not None and REFERENCE not in config["methods"]:
        raise lst.errors.ConfigError(f"config reference: {REFERENCE!r} is not one of methods {config['methods']}")


refused(check_reference)


def base_of(method):
    """The phase-0 model ``method`` starts from (results/<dataset>/<base>/phase0); a base model's is itself."""
    return METHODS[method].base if method in METHODS else method if method in BASES else BASE


def model_path(seed, method, phase):
    if int(phase) == 0:
        return f"{RESULTS}/seed{seed}/{base_of(method)}/phase0/model.pt"
    return f"{RESULTS}/seed{seed}/{method}/phase{phase}/model.pt"


def train_phase_inputs(wildcards):
    """What phase k of an incremental method trains from: model k-1, its stream, teacher logits, meta-module;
    the stream and the logits from the folder of the method that computes them (shared_step_owner)."""
    seed, method, phase = int(wildcards.seed), wildcards.method, int(wildcards.phase)
    run = f"{RESULTS}/seed{seed}"
    inputs = {
        "previous": model_path(seed, method, phase - 1),
        "replay": f"{run}/{shared_step_owner('build_replay', seed, method, phase)}/phase{phase}/replay.parquet",
    }
    made = {
        lst.methods.TEACHER_LOGITS: lambda: (
            f"{run}/{shared_step_owner('extract_logits', seed, method, phase)}/phase{phase}/teacher_logits.parquet"
        ),
        lst.methods.META: lambda: f"{run}/{base_of(method)}/phase0/meta.pt",
    }
    return inputs | {name: made[name]() for name in METHODS[method].phase_inputs()}


# the incremental methods whose phases read each shared step's output
SHARED_STEP_USERS = {
    "build_replay": INCREMENTAL,
    "extract_logits": [m for m in INCREMENTAL if lst.methods.TEACHER_LOGITS in METHODS[m].phase_inputs()],
}


@functools.cache
def shared_step_inputs(step, seed, method, phase):
    """All that ``method``'s job of ``step`` at ``phase`` computes from: the settings the step reads, resolved
    (of the method section, the family and its settings: what draws the stream), and the previous model."""
    values = {}
    for key in READS[step]:
        wildcards = {"seed": seed, "method": method, "phase": phase}
        value = json.loads(step_setting(step, phase, wildcards, key).partition("=")[2])
        values[key] = {k: value[k] for k in ("family", "settings")} if key == "method" else value
    previous = model_path(seed, method, phase - 1) if step == "extract_logits" else None
    return json.dumps(values, sort_keys=True), previous


def shared_step_owner(step, seed, method, phase):
    """The first method in ``methods`` whose job of ``step`` (build_replay, extract_logits) at ``phase`` computes
    the same as ``method``'s: the one job for all of them, in its folder."""
    inputs = shared_step_inputs(step, seed, method, phase)
    return next(m for m in SHARED_STEP_USERS[step] if shared_step_inputs(step, seed, m, phase) == inputs)


# ---- The steps' settings and command lines -------------------------------------------------------------------

# The shell of every step rule. params.command: the step with its settings, paths and Hydra's folder.
STEP = "{params.command} threads={threads} > {log:q} 2>&1"

# Values of the Hydra config set by the workflow config; each step gets those it reads (READS).
WORKFLOW_VALUES = {
    **{f"dataset.{key}": value for key, value in config["dataset"].items()},
    **{
        f"phases.{key}": value
        for key, value in config["phases"].items()
        if "sizes" not in config["phases"] or key == "sizes"  # sizes wins over base + step
    },
    "replay.world_size": PROCESSES_PER_TRAIN,  # the replay streams are split for the training processes
    **({"model.backbone_weights": BACKBONE_WEIGHTS} if BACKBONE_WEIGHTS else {}),
    "report.models": [
        {"seed": seed, "method": method, "phase": phase, "base": base_of(method)} for seed, method, phase in REPORTED
    ],
    "report.reference": REFERENCE,
}


def step_params(rule, step=None, phase=0, logs=f"{RESULTS}/logs"):
    """The params of the rule that runs lst.steps.<step> (``step`` defaults to ``rule``), at ``phase`` unless
    a {phase} wildcard says. ``command`` is not recorded (it is derived from the files, which Snakemake tracks);
    recorded is the resolved value of each setting the step reads (READS), one param each, so that
    Snakemake reruns exactly the steps whose settings changed, and the processes of a training step."""
    step = step or rule
    params = {
        "command": lambda wildcards, input, output: step_command(rule, step, phase, logs, wildcards, input, output)
    }
    for key in READS[step]:
        params[key.replace(".", "_")] = lambda wildcards, key=key: step_setting(step, phase, wildcards, key)
    if step in TRAINING:
        params["processes"] = PROCESSES_PER_TRAIN
    return params


def step_overrides(step, method, phase, every_value=False, seed=None):
    """The Hydra overrides of a step: preset, method, the values of WORKFLOW_VALUES it reads (all of them
    with ``every_value``), the phase and the seed, the user's overrides. ``phase``, ``seed`` None: none."""
    values = WORKFLOW_VALUES | ({} if phase is None else {"phase": phase}) | ({} if seed is None else {"seed": seed})
    args = [f"preset={config['preset']}"] + (method_overrides(method) if method else [])
    args += [f"{key}={hydra_value(value)}" for key, value in values.items() if every_value or covers(READS[step], key)]
    return args + config["overrides"].get("all", []) + config["overrides"].get(step, [])


def check_step_configs():
    """Each step's config composed now, for each method where it reads one: a bad value of ``overrides`` is one
    line before any job (these are the compositions step_setting makes, cached)."""
    for step in READS:
        for method in [None, *(dict.fromkeys([*config["methods"], *BASES]) if covers(READS[step], "method") else [])]:
            composed(tuple(step_overrides(step, method, None, every_value=True)))


def step_setting(step, phase, wildcards, key):
    """``key=<value>``: the resolved value of setting ``key`` for a job of the step, as its command composes it.

    Composed once per method with every workflow value (the step's command leaves out those it does not
    read: they set no key it reads, as the config has no interpolations), the phase and the seed set after."""
    method = wildcards.get("method")
    overrides = tuple(step_overrides(step, method, None, every_value=True))
    value = {**composed(overrides), "phase": int(wildcards.get("phase", phase))}
    if "seed" in wildcards.keys():
        value["seed"] = int(wildcards["seed"])
    for part in key.split("."):
        value = value[part]
    return f"{key}={json.dumps(value, sort_keys=True)}"


refused(check_step_configs)


def step_command(rule, step, phase, logs, wildcards, input, output):
    """A step's command line: launcher, settings, its named inputs and outputs as paths.<name>, Hydra's folder."""
    method, phase, seed = wildcards.get("method"), int(wildcards.get("phase", phase)), wildcards.get("seed")
    job = "_".join(
        ([f"seed{seed}"] if seed is not None else [])
        + ([method] if method else [])
        + ([f"phase{phase}"] if "phase" in wildcards.keys() else [])
    )
    args = step_overrides(step, method, phase, seed=None if seed is None else int(seed))
    files = [*input.items(), *output.items()]
    args += [f"paths.{name}={hydra_value(path_value(name, paths))}" for name, paths in files if paths]
    # Hydra's record of the config (config.yaml, overrides.yaml) beside the logs, not among the outputs
    args += [f"hydra.run.dir={os.path.join(logs, 'hydra', rule, job)}", "hydra.output_subdir=."]
    return f"{launcher(step)} {' '.join(shlex.quote(str(arg)) for arg in args)}"


def path_value(name, files):
    """A named input or output as the step's path: ``*_dir`` names the folder holding the files."""
    if name.endswith("_dir"):
        return os.path.commonpath([os.path.dirname(path) for path in ([files] if isinstance(files, str) else files)])
    return str(files) if isinstance(files, str) else [str(path) for path in files]


def launcher(step):
    """``python -m lst.steps.<step>`` with this checkout's lst, under torchrun for several training processes."""
    command = f"PYTHONPATH={shlex.quote(str(SRC))}${{PYTHONPATH:+:$PYTHONPATH}} {shlex.quote(PYTHON)}"
    if step in TRAINING and PROCESSES_PER_TRAIN > 1:
        command += f" -m torch.distributed.run --standalone --nproc-per-node={PROCESSES_PER_TRAIN}"
    return f"{command} -m lst.steps.{step}"
