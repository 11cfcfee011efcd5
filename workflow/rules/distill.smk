rule extract_logits:
    input:
        CHECKED,
        data_dir=DATA,
        split_dir=SPLIT,
        previous=lambda w: model_path(w.seed, w.method, int(w.phase) - 1),
    output:
        teacher_logits=f"{RUN}/{{method}}/phase{{phase}}/teacher_logits.parquet",
    wildcard_constraints:
        method=one_of([m for m in INCREMENTAL if lst.methods.TEACHER_LOGITS in METHODS[m].phase_inputs()]),
        phase="[1-9][0-9]*",
    log:
        f"{RESULTS}/logs/extract_logits/seed{{seed}}_{{method}}_phase{{phase}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/extract_logits/seed{{seed}}_{{method}}_phase{{phase}}.tsv"
    threads: config["threads"]
    conda:
        ENV
    params:
        **step_params("extract_logits"),
    shell:
        STEP
