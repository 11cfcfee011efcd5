rule evaluate:
    input:
        CHECKED,
        data_dir=DATA,
        split_dir=SPLIT,
        model=f"{RUN}/{{method}}/phase{{phase}}/model.pt",
    output:
        out_dir=multiext(
            f"{RUN}/{{method}}/phase{{phase}}/eval/",
            "metrics.parquet",
            "per_class.parquet",
            "detections.parquet",
            "metrics.md",
        ),
        # every model's is gallery.png: the report tells them apart by their labels
        gallery=report(
            f"{RUN}/{{method}}/phase{{phase}}/eval/gallery.png",
            caption="../report/model_gallery.rst",
            category="Galleries",
            labels={"model": "{method}", "phase": "{phase}", "seed": "{seed}"},
        ),
    log:
        f"{RESULTS}/logs/evaluate/seed{{seed}}_{{method}}_phase{{phase}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate/seed{{seed}}_{{method}}_phase{{phase}}.tsv"
    threads: config["threads"]
    conda:
        ENV
    params:
        **step_params("evaluate"),
    shell:
        STEP
