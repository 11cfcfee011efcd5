"""The summary for a browser: its tables and the forgetting plot in one self-contained HTML fragment (the
front page of ``snakemake --report``, which inlines it)."""

from __future__ import annotations

import base64
import html
import os
from pathlib import Path

import markdown


def summary_html(summary_markdown: str, plot: str | os.PathLike) -> str:
    """``summary_markdown`` (summary.md) as HTML tables, then ``plot`` (a PNG) embedded as a data URI."""
    # the text is text: AP<10 and AP_phase<j> are not HTML tags
    tables = markdown.markdown(html.escape(summary_markdown, quote=False), extensions=["tables"])
    data = base64.b64encode(Path(plot).read_bytes()).decode("ascii")
    caption = "Forgetting: the mask AP of each phase's classes after every later phase, a line per method."
    image = f'<figure><img src="data:image/png;base64,{data}" alt="forgetting plot" style="width: 100%"/>'
    return f"{tables}\n{image}<figcaption>{caption}</figcaption></figure>\n"
