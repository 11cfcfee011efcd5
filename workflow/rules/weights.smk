rule trim_weights:
    input:
        config["weights"] or [],
    output:
        f"{RESULTS}/weights/init.pt",
    log:
        f"{RESULTS}/logs/trim_weights.log",
    benchmark:
        f"{RESULTS}/benchmarks/trim_weights.tsv"
    params:
        args=hydra_args("trim_weights", f"{RESULTS}/weights", source_weights=config["weights"], init=INIT),
    shell:
        "{PYTHON:q} -m lst.steps.trim_weights {params.args} threads={threads} > {log:q} 2>&1"
