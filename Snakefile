# lst: Learning to Segment the Tail as one DAG.  snakemake --cores N   (see README.md and docs/)
from snakemake.utils import min_version, validate

min_version("9.0")


# A config given with --configfile is a whole configuration (merging it into the demo's would leave
# demo values in it); without one, the embedded demo runs.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"



validate(config, "workflow/schemas/config.schema.yaml")


# --sdm conda: the environment's packages for the workflow itself (it composes the steps' Hydra configs);
# each rule runs its step in the same environment (conda: ENV)
conda: "envs/lst.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/checks.smk"
include: "workflow/rules/jobs.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/weights.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/distill.smk"
include: "workflow/rules/replay.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        f"{RESULTS}/summary.md",
        f"{RESULTS}/plots/gallery.png",
    default_target: True
