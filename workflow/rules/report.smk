EVALUATIONS = [f"{RESULTS}/{BASE}/phase0/eval/metrics.parquet"] + [
    f"{RESULTS}/{method}/phase{k}/eval/metrics.parquet"
    for method in config["methods"]
    for k in ([K] if method in JOINT else range(1, K + 1))
]


BASE_LINKS = [
    f"{RESULTS}/{method}/phase0/{file}"
    for method in config["methods"]
    if method in METHODS
    for file in BASE_FILES
]
CURVES = [path.replace("eval/metrics.parquet", "eval_curve.parquet") for path in EVALUATIONS]


rule report:
    input:
        EVALUATIONS,
        [path.replace("metrics.parquet", "per_class.parquet") for path in EVALUATIONS],
        BASE_LINKS,
        CURVES,
    output:
        f"{RESULTS}/summary.parquet",
        report(f"{RESULTS}/summary.md", caption="../report/summary.rst", category="Results"),
        report(f"{RESULTS}/plots/forgetting.png", caption="../report/forgetting.rst", category="Plots"),
        report(f"{RESULTS}/plots/per_class_ap.png", caption="../report/per_class_ap.rst", category="Plots"),
        report(f"{RESULTS}/plots/eval_curve.png", caption="../report/eval_curve.rst", category="Plots"),
    log:
        f"{RESULTS}/logs/report.log",
    benchmark:
        f"{RESULTS}/benchmarks/report.tsv"
    params:
        args=hydra_args("report", f"{RESULTS}/report", out_dir=RESULTS, metrics=EVALUATIONS, curves=CURVES),
    shell:
        "{PYTHON:q} -m lst.steps.report {params.args} > {log:q} 2>&1"
        " && echo 'lst: summary written to {output[1]}'"
