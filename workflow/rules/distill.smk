rule extract_logits:
    input:
        DATA,
        SPLIT,
        CHECKED,
        previous=lambda w: model_path(w.method, int(w.phase) - 1),
    output:
        f"{RESULTS}/{{method}}/phase{{phase}}/teacher_logits.parquet",
    wildcard_constraints:
        method="|".join(m for m, flags in METHODS.items() if flags["distill"]),
        phase="[1-9][0-9]*",
    log:
        f"{RESULTS}/logs/extract_logits/{{method}}_phase{{phase}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/extract_logits/{{method}}_phase{{phase}}.tsv"
    threads: config["threads"]
    params:
        args=lambda w: hydra_args(
            "extract_logits", f"{RESULTS}/{w.method}/phase{w.phase}", w.method, w.phase,
            data_dir=f"{RESULTS}/data", split_dir=f"{RESULTS}/split", previous=model_path(w.method, int(w.phase) - 1),
            teacher_logits=f"{RESULTS}/{w.method}/phase{w.phase}/teacher_logits.parquet",
        ),
    shell:
        "{PYTHON:q} -m lst.steps.extract_logits {params.args} threads={threads} > {log:q} 2>&1"
