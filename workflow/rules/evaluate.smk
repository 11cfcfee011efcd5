rule evaluate:
    input:
        DATA,
        SPLIT,
        CHECKED,
        model=f"{RESULTS}/{{method}}/phase{{phase}}/model.pt",
    output:
        multiext(f"{RESULTS}/{{method}}/phase{{phase}}/eval/", "metrics.parquet", "per_class.parquet", "detections.parquet", "metrics.md"),
    log:
        f"{RESULTS}/logs/evaluate/{{method}}_phase{{phase}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate/{{method}}_phase{{phase}}.tsv"
    threads: config["threads"]
    params:
        args=lambda w: hydra_args(
            "evaluate", f"{RESULTS}/{w.method}/phase{w.phase}/eval", w.method, w.phase,
            data_dir=f"{RESULTS}/data", split_dir=f"{RESULTS}/split", model=f"{RESULTS}/{w.method}/phase{w.phase}/model.pt",
            out_dir=f"{RESULTS}/{w.method}/phase{w.phase}/eval",
        ),
    shell:
        "{PYTHON:q} -m lst.steps.evaluate {params.args} threads={threads} > {log:q} 2>&1"
