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
        [("base", 0, _metrics(0.5, 0)), ("lst", 1, _metrics(0.4, 1)), ("lst", 2, _metrics(0.3, 2)),
         ("joint", 2, _metrics(0.35, 2))]
    )  # fmt: skip
    assert set(summary.columns) == {"method", "phase", "iou_type", "metric", "value"}
    table = summary_markdown(summary, "demo")
    assert "| lst | 50.0 | 40.0 | 30.0 |" in table  # phase 0 is the shared base model
    assert "| joint | n/a | n/a | 35.0 |" in table  # a joint baseline has no base phase
    # last phase in detail: AP, APr, APc (absent), APf (absent), AP_phase0..2, box AP
    assert "| lst | 30.0 | 10.0 | n/a | n/a | 30.0 | 31.0 | 32.0 | 15.0 |" in table
    # by training instances: AP<10 (no class), AP10-100, AP100-1000, AP>=1000 (absent), box AP
    assert "| lst | n/a | 25.0 | 10.0 | n/a | 15.0 |" in table
    assert "| joint | n/a | 25.0 | 15.0 | n/a | 17.5 |" in table


def test_plots_are_written(tmp_path):
    from lst.reporting.plots import forgetting_plot, per_class_plot

    summary = summarize([("base", 0, _metrics(0.5, 0)), ("lst", 1, _metrics(0.4, 1)), ("lst", 2, _metrics(0.3, 2))])
    forgetting_plot(summary, tmp_path / "forgetting.png")
    per_class = pd.DataFrame({"iou_type": "segm", "instance_count": [3, 30, 300], "ap": [0.1, float("nan"), 0.5]})
    per_class_plot({"lst": per_class}, tmp_path / "per_class.png")
    for name in ("forgetting.png", "per_class.png"):
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
