"""`rlft report`: one self-contained HTML page (plus PNGs) about one or more runs. An edge
module: imported only by the `report` command (it needs matplotlib)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rlft.report.page import render_page
from rlft.report.plots import render_plots
from rlft.report.runs import load_runs


def write_report(
    run_dir: str | Path,
    compare: Sequence[str | Path] = (),
    out: str | Path | None = None,
    max_sample_steps: int = 10,
) -> Path:
    """Write the report of run_dir (with `compare` runs overlaid) to `out` (default
    run_dir/report.html) and its PNGs to the folder next to it named like it without .html
    (run_dir/report/). Re-reads every file, so it also works on a run still in progress."""
    runs = load_runs([run_dir, *compare])
    html_path = Path(out) if out is not None else Path(run_dir) / "report.html"
    if html_path.suffix != ".html":
        raise ValueError(f"--out must name an .html file, got {html_path}")
    plots, empty = render_plots(runs, html_path.with_suffix(""))
    html_path.write_text(render_page(runs, plots, empty, max_sample_steps), encoding="utf-8")
    return html_path
