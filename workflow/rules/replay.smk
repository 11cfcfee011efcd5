# Annotation-only: builds without images or models (snakemake results/<d>/lst/phase1/replay.parquet).
rule build_replay:
    input:
        data_dir=[
            f"{RESULTS}/data/annotations.parquet",
            f"{RESULTS}/data/images.parquet",  # widths and heights, for aspect grouping
        ],
        split_dir=f"{RESULTS}/split/categories.parquet",
    output:
        replay=f"{RUN}/{{method}}/phase{{phase}}/replay.parquet",
    wildcard_constraints:
        method=one_of(INCREMENTAL),
        phase="[1-9][0-9]*",
    log:
        f"{RESULTS}/logs/build_replay/seed{{seed}}_{{method}}_phase{{phase}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/build_replay/seed{{seed}}_{{method}}_phase{{phase}}.tsv"
    conda:
        ENV
    params:
        **step_params("build_replay"),
    shell:
        STEP
