rule make_demo:
    output:
        train_json="resources/demo/train.json",
        val_json="resources/demo/val.json",
    log:
        "resources/logs/make_demo.log",
    benchmark:
        "resources/logs/make_demo.benchmark.tsv"
    params:
        args=hydra_args("make_demo", "resources/logs/make_demo", out_dir="resources/demo"),
    shell:
        "{PYTHON:q} -m lst.steps.make_demo {params.args} threads={threads} > {log:q} 2>&1"


rule prepare_data:
    input:
        train_json=config["dataset"]["train_json"],
        val_json=config["dataset"]["val_json"],
    output:
        DATA,
    log:
        f"{RESULTS}/logs/prepare_data.log",
    benchmark:
        f"{RESULTS}/benchmarks/prepare_data.tsv"
    params:
        args=hydra_args("prepare_data", f"{RESULTS}/data", data_dir=f"{RESULTS}/data"),
    shell:
        "{PYTHON:q} -m lst.steps.prepare_data {params.args} threads={threads} > {log:q} 2>&1"


rule split:
    input:
        DATA,
    output:
        SPLIT,
    log:
        f"{RESULTS}/logs/split.log",
    benchmark:
        f"{RESULTS}/benchmarks/split.tsv"
    params:
        args=hydra_args("split", f"{RESULTS}/split", data_dir=f"{RESULTS}/data", split_dir=f"{RESULTS}/split"),
    shell:
        "{PYTHON:q} -m lst.steps.split {params.args} threads={threads} > {log:q} 2>&1"


rule check_data:
    input:
        DATA,
    output:
        CHECKED,
    log:
        f"{RESULTS}/logs/check_data.log",
    benchmark:
        f"{RESULTS}/benchmarks/check_data.tsv"
    threads: 1
    params:
        args=hydra_args("check_data", f"{RESULTS}/data", data_dir=f"{RESULTS}/data", report=CHECKED),
    shell:
        "{PYTHON:q} -m lst.steps.check_data {params.args} threads={threads} > {log:q} 2>&1"
