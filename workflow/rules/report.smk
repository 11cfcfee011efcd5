rule report:
    input:
        BASE_LINKS,  # the layout of results/<dataset>/<method>/phase0 (not read)
        **REPORT,  # metrics, per_class, curves: one file each of the report.models (REPORTED), in order
    output:
        summary_table=f"{RESULTS}/summary.parquet",
        summary=report(f"{RESULTS}/summary.md", caption="../report/summary.rst", category="Results"),
        summary_html=f"{RESULTS}/summary.html",  # the report's front page inlines it
        forgetting_plot=report(
            f"{RESULTS}/plots/forgetting.png", caption="../report/forgetting.rst", category="Plots"
        ),
        per_class_plot=report(
            f"{RESULTS}/plots/per_class_ap.png", caption="../report/per_class_ap.rst", category="Plots"
        ),
        eval_curve_plot=report(
            f"{RESULTS}/plots/eval_curve.png", caption="../report/eval_curve.rst", category="Plots"
        ),
    log:
        f"{RESULTS}/logs/report.log",
    benchmark:
        f"{RESULTS}/benchmarks/report.tsv"
    conda:
        ENV
    params:
        **step_params("report"),
    shell:
        f"{STEP} && echo 'lst: summary written to {{output.summary}}'"


rule gallery:
    input:
        CHECKED,
        data_dir=DATA,
        split_dir=SPLIT,
        detections=GALLERY,
    output:
        gallery=report(f"{RESULTS}/plots/gallery.png", caption="../report/gallery.rst", category="Plots"),
    log:
        f"{RESULTS}/logs/gallery.log",
    benchmark:
        f"{RESULTS}/benchmarks/gallery.tsv"
    conda:
        ENV
    params:
        **step_params("gallery"),
    shell:
        STEP
