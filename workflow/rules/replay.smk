# Annotation-only: builds without images or models (snakemake results/<d>/lst/phase1/replay.parquet).
rule build_replay:
    input:
        f"{RESULTS}/data/annotations.parquet",
        f"{RESULTS}/data/images.parquet",  # widths and heights, for aspect grouping
        f"{RESULTS}/split/categories.parquet",
    output:
        f"{RESULTS}/{{method}}/phase{{phase}}/replay.parquet",
    wildcard_constraints:
        method="|".join(METHODS),
        phase="[1-9][0-9]*",
    log:
        f"{RESULTS}/logs/build_replay/{{method}}_phase{{phase}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/build_replay/{{method}}_phase{{phase}}.tsv"
    params:
        args=lambda w: hydra_args(
            "build_replay", f"{RESULTS}/{w.method}/phase{w.phase}", w.method, w.phase,
            data_dir=f"{RESULTS}/data", split_dir=f"{RESULTS}/split",
            replay=f"{RESULTS}/{w.method}/phase{w.phase}/replay.parquet",
        ),
    shell:
        "{PYTHON:q} -m lst.steps.build_replay {params.args} threads={threads} > {log:q} 2>&1"
