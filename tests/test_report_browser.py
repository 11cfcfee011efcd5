"""The tiny run's `snakemake --report report.html` in a real browser (headless Chromium): every image loads,
on the front page and in each image result as the report shows it, and the ablation table is readable."""

import html as html_module
import json
import shutil
import subprocess

import pytest

CHROMIUM = next((shutil.which(name) for name in ("chromium", "chromium-browser") if shutil.which(name)), None)

# Run in the page once the report's app has rendered: the front page's images and text, then each image
# result shown as the report's own button does (app.setView content "img"); the findings go into the DOM.
PROBE = """
<script>
const lstSleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));  // virtual time: instant
async function lstLoaded(img) {
  for (let i = 0; i < 100 && !img.complete; i++) await lstSleep(100);  // (img.decode() stalls headless)
  return {src: img.src.slice(0, 40), loaded: img.complete && img.naturalWidth > 0, width: img.naturalWidth};
}
async function lstProbe() {
  const found = {front: [], text: document.querySelector("#app").innerText, results: {}};
  const cells = (row) => [...row.cells].map((cell) => cell.innerText.trim());
  found.tables = [...document.querySelectorAll("#app table")].map((table) => [...table.rows].map(cells));
  for (const img of document.querySelectorAll("#app img")) found.front.push(await lstLoaded(img));
  for (const [path, entry] of Object.entries(results)) {
    if (!entry.mime_type.startsWith("image/")) continue;
    app.setView({content: "img", contentPath: entry.data_uri, resultPath: path});
    await lstSleep(200);
    const img = [...document.querySelectorAll("#app img")].find((image) => image.src === entry.data_uri);
    found.results[path] = img ? await lstLoaded(img) : null;
  }
  return found;
}
function lstReport(found) {
  const out = document.createElement("pre");
  out.id = "lst-probe";
  out.textContent = JSON.stringify(found);
  document.body.appendChild(out);
}
const lstFailed = (error) => lstReport({error: String(error)});
window.addEventListener("load", () => setTimeout(() => lstProbe().then(lstReport, lstFailed), 500));
</script>
"""


@pytest.fixture(scope="module")
def rendered(tiny_report, tmp_path_factory) -> dict:
    """What the probe found in the report, rendered by headless Chromium."""
    if CHROMIUM is None:
        pytest.skip("no chromium on PATH (Debian: apt-get install chromium; .ci/run installs it as root)")
    page = tmp_path_factory.mktemp("browser") / "report.html"
    html = tiny_report.read_text()
    page.write_text(html[: html.rindex("</body>")] + PROBE + html[html.rindex("</body>") :])
    command = [CHROMIUM, "--headless", "--disable-gpu", "--no-sandbox", "--disable-dev-shm-usage",
               f"--user-data-dir={page.parent / 'profile'}", "--virtual-time-budget=30000", "--dump-dom",
               page.as_uri()]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    dom = result.stdout
    assert 'id="lst-probe"' in dom, f"the probe did not run:\n{dom[-2000:]}\n{result.stderr[-2000:]}"
    text = dom.split('id="lst-probe">', 1)[1].split("</pre>", 1)[0]
    found = json.loads(html_module.unescape(text))
    assert "error" not in found, found["error"]
    return found | {"summary": (tiny_report.parent / "results/demo/summary.md").read_text()}


def test_every_image_of_the_report_loads(rendered):
    assert rendered["front"], "the front page shows no image (the forgetting plot)"
    assert all(image["loaded"] for image in rendered["front"]), rendered["front"]
    images = {path.rsplit("/", 1)[-1]: found for path, found in rendered["results"].items()}
    assert {"forgetting.png", "per_class_ap.png", "eval_curve.png", "gallery.png"} <= set(images)
    assert all(found is not None and found["loaded"] for found in rendered["results"].values()), rendered["results"]


def test_the_front_page_shows_the_ablation(rendered):
    assert "Mask AP after each phase" in rendered["text"]
    assert "Forgetting: the mask AP of each phase" in rendered["text"]
    ablation = rendered["tables"][0]  # as summary.md's first table: mask AP (%) of each method after each phase
    assert ablation[0] == ["method", "phase 0", "phase 1", "phase 2"]
    rows = {row[0]: row[1:] for row in ablation[1:]}
    assert set(rows) == {"finetune", "lst", "lst_meta", "joint_rfs", "lst_seesaw"}
    summary = rendered["summary"].splitlines()
    for method, cells in rows.items():
        assert f"| {method} | {' | '.join(cells)} |" in summary, method  # the same numbers as summary.md
