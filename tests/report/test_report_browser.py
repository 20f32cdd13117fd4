"""The report in headless Chromium (Playwright + Debian's chromium): every plot loads, the page
is not blank, the console stays clean, and the HTML payloads in samples stay text."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from report_support import XSS_SCRIPT, make_run

from rlft.report import write_report
from rlft.report.plots import PANELS

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
ARTIFACTS = Path(__file__).parent / "artifacts"


def pixel_std(png: bytes) -> float:
    """Standard deviation of the grey levels of a screenshot (0 for a blank page)."""
    from PIL import Image, ImageStat

    return ImageStat.Stat(Image.open(io.BytesIO(png)).convert("L")).stddev[0]


def test_report_renders_in_chromium(tmp_path):
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"{CHROMIUM} not found: the browser tests need Debian's chromium; `make setup` installs it"
        )
    from playwright.sync_api import sync_playwright

    a, b = make_run(tmp_path, "run_a"), make_run(tmp_path, "run_b", steps=12, scale=2.0)
    html = write_report(a, [b])
    problems: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_context(viewport={"width": 1200, "height": 900}).new_page()
        page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.goto(html.as_uri())
        page.wait_for_load_state("load")
        figures = page.eval_on_selector_all("figure[id^=plot-] img", "els => els.map(e => e.naturalWidth)")
        assert len(figures) == len(PANELS) and all(w == 750 for w in figures)  # 7.5 in x 100 dpi
        ids = page.eval_on_selector_all("figure", "els => els.map(e => e.id)")
        assert ids == [f"plot-{p.name}" for p in PANELS]
        assert page.locator("figure.alarmed").count() == 1  # the entropy plot
        assert page.locator("#alarms tr.alarm").count() == 2  # run_a and run_b: entropy_collapse
        # the open (last) step of run_a's samples shows the payload as text; nothing injected ran
        texts = page.eval_on_selector_all("details[open] pre", "els => els.map(e => e.textContent)")
        assert XSS_SCRIPT in texts
        assert page.locator("body script, #samples img").count() == 0
        assert page.evaluate("typeof window.pwned") == "undefined"
        ARTIFACTS.mkdir(exist_ok=True)
        shot = page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
        browser.close()
    assert pixel_std(shot) > 20  # plots and text, not a blank page
    assert problems == []
