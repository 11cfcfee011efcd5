import base64
import re

import pandas as pd

from lst.reporting.report import summarize, summary_markdown
from lst.reporting.summary_page import summary_html


def _metrics(ap: float, phases: int) -> pd.DataFrame:
    rows = [("segm", "AP", ap), ("bbox", "AP", ap / 2), ("segm", "APr", 0.1), ("segm", "AP<10", -1.0)]
    rows += [("segm", "AP10-100", 0.25), ("segm", "AP100-1000", ap - 0.2)]
    rows += [("segm", f"AP_phase{j}", ap + j / 100) for j in range(phases + 1)]
    return pd.DataFrame(rows, columns=["iou_type", "metric", "value"])


def test_summary_tables():
    summary = summarize(
        [(0, "base", 0, _metrics(0.5, 0)), (0, "lst", 1, _metrics(0.4, 1)), (0, "lst", 2, _metrics(0.3, 2)),
         (0, "joint", 2, _metrics(0.35, 2))]
    )  # fmt: skip
    assert list(summary.columns) == ["seed", "method", "phase", "iou_type", "metric", "value"]
    table = summary_markdown(summary, "demo", reference="lst")
    assert "One seed (0): one run cannot measure spread" in table and "Paired" not in table
    assert "| lst | 50.0 | 40.0 | 30.0 |" in table  # phase 0 is the shared base model
    assert "| joint | n/a | n/a | 35.0 |" in table  # a joint baseline has no base phase
    # last phase in detail: AP, APr, APc (absent), APf (absent), AP_phase0..2, box AP
    assert "| lst | 30.0 | 10.0 | n/a | n/a | 30.0 | 31.0 | 32.0 | 15.0 |" in table
    # by training instances: AP<10 (no class), AP10-100, AP100-1000, AP>=1000 (absent), box AP
    assert "| lst | n/a | 25.0 | 10.0 | n/a | 15.0 |" in table
    assert "| joint | n/a | 25.0 | 15.0 | n/a | 17.5 |" in table


def test_three_seeds_give_mean_std_and_paired_differences_by_hand():
    entries = []
    for seed, (lst_ap, finetune_ap) in enumerate([(0.40, 0.30), (0.42, 0.33), (0.47, 0.33)]):
        entries += [(seed, "base", 0, _metrics(0.5 + seed / 100, 0)), (seed, "lst", 1, _metrics(lst_ap, 1)),
                    (seed, "finetune", 1, _metrics(finetune_ap, 1))]  # fmt: skip
    table = summary_markdown(summarize(entries), "demo", reference="finetune")
    assert "3 seeds (0, 1, 2): mean ± sample standard deviation (n - 1) over them." in table
    # lst's AP 0.40, 0.42, 0.47: mean 43.0, std sqrt((9 + 1 + 16) / 2) = 3.6; the base 50, 51, 52: 51.0 ± 1.0
    assert "| lst | 51.0 ± 1.0 (n=3) | 43.0 ± 3.6 (n=3) |" in table
    # lst - finetune per seed: 0.10, 0.09, 0.14: mean 11.0, sd 2.646, half width 4.303 x 2.646 / sqrt(3) = 6.57
    paired = table.split("## Paired differences from finetune")[1]
    # APr is 0.10 for both on every seed: a difference of 0, which no number of seeds tells from none
    assert "| lst | +11.0 [+4.4, +17.6] | +0.0 [+0.0, +0.0] (not distinguishable on 3 seeds) | n/a | n/a |" in paired
    assert "| finetune |" not in paired  # the reference itself


def test_plots_are_written(tmp_path):
    from lst.reporting.plots import eval_curve_plot, forgetting_plot, per_class_plot

    entries = [(0, "base", 0, _metrics(0.5, 0)), (0, "lst", 1, _metrics(0.4, 1)), (0, "lst", 2, _metrics(0.3, 2))]
    entries += [(1, "base", 0, _metrics(0.52, 0)), (1, "lst", 1, _metrics(0.42, 1)), (1, "lst", 2, _metrics(0.33, 2))]
    forgetting_plot(summarize(entries), tmp_path / "forgetting.png")
    per_class = pd.DataFrame({"iou_type": "segm", "category_id": [1, 2, 3], "instance_count": [3, 30, 300],
                              "ap": [0.1, float("nan"), 0.5]})  # fmt: skip
    per_class_plot({"lst": pd.concat([per_class.assign(seed=0), per_class.assign(seed=1)])}, tmp_path / "per_class.png")
    curve = pd.DataFrame({"iteration": [4, 8], "iou_type": "segm", "metric": "AP", "value": [0.1, 0.2]})
    eval_curve_plot({(0, "lst", 1): curve, (1, "lst", 1): curve.assign(value=[0.15, 0.22])}, tmp_path / "curve.png")
    for name in ("forgetting.png", "per_class.png", "curve.png"):
        data = (tmp_path / name).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 5000
        assert (tmp_path / name).stat().st_mode & 0o044  # readable by others, like any new file


def test_summary_html_holds_the_tables_and_the_plot(tmp_path):
    plot = tmp_path / "forgetting.png"
    plot.write_bytes(b"\x89PNG\r\n\x1a\n not really a picture")
    text = "# demo: results\n\n## AP_phase<j>\n\n| method | AP<10 |\n|---|---|\n| lst | 47.7 |\n"
    html = summary_html(text, plot)
    assert "<th>method</th>" in html and "<td>lst</td>" in html and "<td>47.7</td>" in html
    assert "<h2>AP_phase&lt;j&gt;</h2>" in html and "<th>AP&lt;10</th>" in html  # text, not tags
    (data,) = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert base64.b64decode(data) == plot.read_bytes()
