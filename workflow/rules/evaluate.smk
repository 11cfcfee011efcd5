rule evaluate:
    input:
        CHECKED,
        data_dir=DATA,
        split_dir=SPLIT,
        model=f"{RESULTS}/{{method}}/phase{{phase}}/model.pt",
    output:
        out_dir=multiext(
            f"{RESULTS}/{{method}}/phase{{phase}}/eval/",
            "metrics.parquet",
            "per_class.parquet",
            "detections.parquet",
            "metrics.md",
        ),
        # not a report() item: the report names its files by file name, and every model's is gallery.png
        gallery=f"{RESULTS}/{{method}}/phase{{phase}}/eval/gallery.png",
    log:
        f"{RESULTS}/logs/evaluate/{{method}}_phase{{phase}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate/{{method}}_phase{{phase}}.tsv"
    threads: config["threads"]
    conda:
        ENV
    params:
        **step_params("evaluate"),
    shell:
        STEP
