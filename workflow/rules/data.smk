rule make_demo:
    output:
        out_dir=multiext("resources/demo/", "train.json", "val.json"),
    log:
        "resources/logs/make_demo.log",
    benchmark:
        "resources/logs/make_demo.benchmark.tsv"
    conda:
        ENV
    params:
        **step_params("make_demo", logs="resources/logs"),
    shell:
        STEP


rule prepare_data:
    input:
        config["dataset"]["train_json"],
        config["dataset"]["val_json"],
    output:
        data_dir=DATA,
    log:
        f"{RESULTS}/logs/prepare_data.log",
    benchmark:
        f"{RESULTS}/benchmarks/prepare_data.tsv"
    conda:
        ENV
    params:
        **step_params("prepare_data"),
    shell:
        STEP


rule split:
    input:
        data_dir=DATA,
    output:
        split_dir=SPLIT,
    log:
        f"{RESULTS}/logs/split.log",
    benchmark:
        f"{RESULTS}/benchmarks/split.tsv"
    conda:
        ENV
    params:
        **step_params("split"),
    shell:
        STEP


rule check_data:
    input:
        checked_image_folders,  # refuses a missing folder at DAG build
        data_dir=DATA,
    output:
        report=CHECKED,
    log:
        f"{RESULTS}/logs/check_data.log",
    benchmark:
        f"{RESULTS}/benchmarks/check_data.tsv"
    threads: 1
    conda:
        ENV
    params:
        **step_params("check_data"),
    shell:
        STEP
