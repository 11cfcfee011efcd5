rule trim_weights:
    input:
        source_weights=config["weights"] or [],
    output:
        init=f"{RESULTS}/weights/init.pt",
    log:
        f"{RESULTS}/logs/trim_weights.log",
    benchmark:
        f"{RESULTS}/benchmarks/trim_weights.tsv"
    conda:
        ENV
    params:
        **step_params("trim_weights"),
    shell:
        STEP
