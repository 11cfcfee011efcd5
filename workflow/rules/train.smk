# train_base, train_joint and train_phase run one DDP process per GPU (gpus_per_train) or processes_per_train
# on a CPU (torchrun when > 1), sharing the job's threads; their requests: jobs.smk. train_meta stays one process.


# a base model (phase 0): the shared one, and one per distinct method.base of the incremental methods
rule train_base:
    input:
        CHECKED,
        BACKBONE_WEIGHTS or [],  # the step gets it as model.backbone_weights, a setting of the model
        data_dir=DATA,
        split_dir=SPLIT,
        init=INIT or [],
    output:
        model=f"{RUN}/{{method}}/phase0/model.pt",
        eval_curve=f"{RUN}/{{method}}/phase0/eval_curve.parquet",
    wildcard_constraints:
        method=one_of(BASES),
    log:
        f"{RESULTS}/logs/train_base/seed{{seed}}_{{method}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train_base/seed{{seed}}_{{method}}.tsv"
    threads: TRAIN_THREADS
    resources:
        **train_resources("train_base"),
    conda:
        ENV
    params:
        **step_params("train_base"),
    shell:
        STEP


rule train_meta:
    input:
        CHECKED,
        data_dir=DATA,
        split_dir=SPLIT,
        previous=f"{RUN}/{{method}}/phase0/model.pt",
    output:
        model=f"{RUN}/{{method}}/phase0/meta.pt",
    wildcard_constraints:
        method=one_of(BASES),
    log:
        f"{RESULTS}/logs/train_meta/seed{{seed}}_{{method}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train_meta/seed{{seed}}_{{method}}.tsv"
    threads: config["threads"]
    conda:
        ENV
    params:
        **step_params("train_meta"),
    shell:
        STEP


# a joint method: one model on every class, trained as a base model is (train_base's step) at phase K
rule train_joint:
    input:
        CHECKED,
        BACKBONE_WEIGHTS or [],
        data_dir=DATA,
        split_dir=SPLIT,
        init=INIT or [],
    output:
        model=f"{RUN}/{{method}}/phase{K}/model.pt",
        eval_curve=f"{RUN}/{{method}}/phase{K}/eval_curve.parquet",
    wildcard_constraints:
        method=one_of(JOINT),
    log:
        f"{RESULTS}/logs/train_joint/seed{{seed}}_{{method}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train_joint/seed{{seed}}_{{method}}.tsv"
    threads: TRAIN_THREADS
    resources:
        **train_resources("train_joint"),
    conda:
        ENV
    params:
        **step_params("train_joint", "train_base", phase=K),
    shell:
        STEP


rule train_phase:
    input:
        CHECKED,
        unpack(train_phase_inputs),  # previous, replay (+ teacher_logits, meta: as the method says)
        data_dir=DATA,
        split_dir=SPLIT,
    output:
        model=f"{RUN}/{{method}}/phase{{phase}}/model.pt",
        eval_curve=f"{RUN}/{{method}}/phase{{phase}}/eval_curve.parquet",
    wildcard_constraints:
        method=one_of(INCREMENTAL),
        phase="[1-9][0-9]*",
    log:
        f"{RESULTS}/logs/train_phase/seed{{seed}}_{{method}}_phase{{phase}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train_phase/seed{{seed}}_{{method}}_phase{{phase}}.tsv"
    threads: TRAIN_THREADS
    resources:
        **train_resources("train_phase"),
    conda:
        ENV
    params:
        **step_params("train_phase"),
    shell:
        STEP


# Phase 0 of every incremental method is its base model (method.base): a relative link keeps the
# results/<dataset>/<method>/phase<k>/ layout true for k = 0 without copying weights.
ruleorder: link_base > evaluate


rule link_base:
    input:
        lambda w: f"{RESULTS}/seed{w.seed}/{base_of(w.method)}/phase0/{w.file}",
    output:
        f"{RUN}/{{method}}/phase0/{{file}}",
    wildcard_constraints:
        method=one_of(INCREMENTAL),
        file="|".join(BASE_FILES),
    log:
        f"{RESULTS}/logs/link_base/seed{{seed}}/{{method}}/{{file}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/link_base/seed{{seed}}/{{method}}/{{file}}.tsv"
    localrule: True
    conda:
        ENV
    shell:
        "ln -sfr {input:q} {output:q} > {log:q} 2>&1"
