# train_base, train_joint and train_phase run config["processes_per_train"] DDP processes (torchrun when > 1),
# sharing the job's threads; train_meta stays one process.


rule train_base:
    input:
        DATA,
        SPLIT,
        CHECKED,
        init=INIT or [],
        backbone=BACKBONE_WEIGHTS or [],
    output:
        f"{RESULTS}/{BASE}/phase0/model.pt",
        curve=f"{RESULTS}/{BASE}/phase0/eval_curve.parquet",
    log:
        f"{RESULTS}/logs/train_base.log",
    benchmark:
        f"{RESULTS}/benchmarks/train_base.tsv"
    threads: config["threads"]
    params:
        command=train_command("lst.steps.train_base"),
        args=hydra_args(
            "train_base", f"{RESULTS}/{BASE}/phase0", BASE, 0,
            data_dir=f"{RESULTS}/data", split_dir=f"{RESULTS}/split", init=INIT or "null",
            model=f"{RESULTS}/{BASE}/phase0/model.pt", work_dir=f"{RESULTS}/{BASE}/phase0/train",
            eval_curve=f"{RESULTS}/{BASE}/phase0/eval_curve.parquet",
        ),
    shell:
        "{params.command} {params.args} threads={threads} > {log:q} 2>&1"


rule train_meta:
    input:
        DATA,
        SPLIT,
        CHECKED,
        previous=f"{RESULTS}/{BASE}/phase0/model.pt",
    output:
        f"{RESULTS}/{BASE}/phase0/meta.pt",
    log:
        f"{RESULTS}/logs/train_meta.log",
    benchmark:
        f"{RESULTS}/benchmarks/train_meta.tsv"
    threads: config["threads"]
    params:
        args=hydra_args(
            "train_meta", f"{RESULTS}/{BASE}/phase0",
            data_dir=f"{RESULTS}/data", split_dir=f"{RESULTS}/split", previous=f"{RESULTS}/{BASE}/phase0/model.pt",
            model=f"{RESULTS}/{BASE}/phase0/meta.pt",
        ),
    shell:
        "{PYTHON:q} -m lst.steps.train_meta {params.args} threads={threads} > {log:q} 2>&1"


rule train_joint:
    input:
        DATA,
        SPLIT,
        CHECKED,
        init=INIT or [],
        backbone=BACKBONE_WEIGHTS or [],
    output:
        f"{RESULTS}/{{method}}/phase{K}/model.pt",
        curve=f"{RESULTS}/{{method}}/phase{K}/eval_curve.parquet",
    wildcard_constraints:
        method="|".join(JOINT),
    log:
        f"{RESULTS}/logs/train_joint/{{method}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train_joint/{{method}}.tsv"
    threads: config["threads"]
    params:
        command=train_command("lst.steps.train_base"),
        args=lambda w: hydra_args(
            "train_base", f"{RESULTS}/{w.method}/phase{K}", w.method, K,
            data_dir=f"{RESULTS}/data", split_dir=f"{RESULTS}/split", init=INIT or "null",
            model=f"{RESULTS}/{w.method}/phase{K}/model.pt", work_dir=f"{RESULTS}/{w.method}/phase{K}/train",
            eval_curve=f"{RESULTS}/{w.method}/phase{K}/eval_curve.parquet",
        ),
    shell:
        "{params.command} {params.args} threads={threads} > {log:q} 2>&1"


def train_phase_inputs(w):
    inputs = {
        "previous": model_path(w.method, int(w.phase) - 1),
        "replay": f"{RESULTS}/{w.method}/phase{w.phase}/replay.parquet",
    }
    if METHODS[w.method]["distill"]:
        inputs["teacher_logits"] = f"{RESULTS}/{w.method}/phase{w.phase}/teacher_logits.parquet"
    if METHODS[w.method]["meta"]:
        inputs["meta"] = f"{RESULTS}/{BASE}/phase0/meta.pt"
    return inputs


rule train_phase:
    input:
        DATA,
        SPLIT,
        CHECKED,
        unpack(train_phase_inputs),
    output:
        f"{RESULTS}/{{method}}/phase{{phase}}/model.pt",
        curve=f"{RESULTS}/{{method}}/phase{{phase}}/eval_curve.parquet",
    wildcard_constraints:
        method="|".join(METHODS),
        phase="[1-9][0-9]*",
    log:
        f"{RESULTS}/logs/train_phase/{{method}}_phase{{phase}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train_phase/{{method}}_phase{{phase}}.tsv"
    threads: config["threads"]
    params:
        command=train_command("lst.steps.train_phase"),
        args=lambda w: hydra_args(
            "train_phase", f"{RESULTS}/{w.method}/phase{w.phase}", w.method, w.phase,
            data_dir=f"{RESULTS}/data", split_dir=f"{RESULTS}/split", **train_phase_inputs(w),
            model=f"{RESULTS}/{w.method}/phase{w.phase}/model.pt",
            eval_curve=f"{RESULTS}/{w.method}/phase{w.phase}/eval_curve.parquet",
            work_dir=f"{RESULTS}/{w.method}/phase{w.phase}/train",
        ),
    shell:
        "{params.command} {params.args} threads={threads} > {log:q} 2>&1"


# Phase 0 of every incremental method is the shared base model: a relative link keeps the
# results/<dataset>/<method>/phase<k>/ layout true for k = 0 without copying weights.
ruleorder: link_base > evaluate


rule link_base:
    input:
        f"{RESULTS}/{BASE}/phase0/{{file}}",
    output:
        f"{RESULTS}/{{method}}/phase0/{{file}}",
    wildcard_constraints:
        method="|".join(METHODS),
        file="|".join(BASE_FILES),
    log:
        f"{RESULTS}/logs/link_base/{{method}}/{{file}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/link_base/{{method}}/{{file}}.tsv"
    localrule: True
    shell:
        "ln -sfr {input:q} {output:q} > {log:q} 2>&1"
