"""The ranking app in a real browser (Playwright + Debian's Chromium): rank with drag and keyboard,
submit, reload (progress kept), skip to the done page; XSS payloads stay inert; the export holds
exactly the ranking made in the UI."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from label_support import XSS_IMG, XSS_SCRIPT

from rlft.label.app import display_order
from rlft.label.cli import cmd_label

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).parent / "artifacts"


def card_order(page) -> list[int]:
    return [int(i) for i in page.eval_on_selector_all("#cards > li", "els => els.map(e => e.dataset.index)")]


def rank_badges(page) -> dict[int, str]:
    script = "els => els.map(e => [e.dataset.index, e.querySelector('.rank').textContent])"
    return {int(i): r for i, r in page.eval_on_selector_all("#cards > li", script)}


def rank_in_ui(page) -> None:
    """Drag, arrow keys, then digits: the final ranking is [2, [0, 3], 1]."""
    from playwright.sync_api import expect

    card = lambda i: page.locator(f'#cards > li[data-index="{i}"]')  # noqa: E731
    shown = display_order("alice", "q1", 4)
    assert card_order(page) == shown
    # drag the last card onto the top edge of the first: it becomes first
    card(shown[-1]).drag_to(card(shown[0]), target_position={"x": 30, "y": 3})
    assert card_order(page) == [shown[-1], *shown[:-1]]
    # ArrowDown moves the focused card one place down
    card(shown[-1]).focus()
    page.keyboard.press("ArrowDown")
    assert card_order(page) == [shown[0], shown[-1], *shown[1:-1]]
    expect(card(shown[-1])).to_be_focused()
    # "t" ties the focused card with the card above; pressing it again unties
    page.keyboard.press("t")
    assert [rank_badges(page)[i] for i in card_order(page)] == ["1", "1", "2", "3"]
    page.keyboard.press("t")
    assert [rank_badges(page)[i] for i in card_order(page)] == ["1", "2", "3", "4"]
    assert card_order(page) == [shown[0], shown[-1], *shown[1:-1]]
    # digits assign ranks; equal numbers tie
    for index, key in ((2, "1"), (0, "2"), (3, "2"), (1, "3")):
        card(index).focus()
        page.keyboard.press(key)
    assert rank_badges(page) == {2: "1", 0: "2", 3: "2", 1: "3"}
    assert card_order(page)[0] == 2 and card_order(page)[-1] == 1
    for index in (0, 3):
        expect(card(index).locator(".tie-badge")).to_be_visible()
    expect(card(2).locator(".tie-badge")).to_be_hidden()


def screenshot(page, tmp_path: Path) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    for target in (ARTIFACTS / "label_app.png", tmp_path / "label_app.png"):
        page.screenshot(path=str(target), full_page=True)
        assert target.stat().st_size > 5_000


def test_rank_in_browser_then_export(tmp_path: Path, start_server, responses_file: Path):
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"{CHROMIUM} not found: the browser tests need Debian's chromium; `make setup` installs it"
        )
    from playwright.sync_api import expect, sync_playwright

    server = start_server(tmp_path / "ui.sqlite", "--responses", str(responses_file))
    problems: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_context(viewport={"width": 1000, "height": 1000}).new_page()
        page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.goto(server.url)
        page.fill("#annotator", "alice")
        page.click("#start")
        expect(page.locator("#task")).to_be_visible()
        assert "token" not in page.url  # dropped from the address bar; the cookie carries it
        expect(page.locator("#progress")).to_have_text("0 of 2 ranked by you")
        expect(page.locator("#prompt")).to_have_text("What is 2+2?")
        expect(page.locator("#cards > li")).to_have_count(4)
        texts = page.eval_on_selector_all("#cards .text", "els => els.map(e => e.textContent)")
        assert {XSS_SCRIPT, XSS_IMG} <= set(texts)  # shown as text
        assert page.locator("#cards img, #cards script").count() == 0

        rank_in_ui(page)
        screenshot(page, tmp_path)
        page.click("#submit")
        expect(page.locator("#progress")).to_have_text("1 of 2 ranked by you")
        expect(page.locator("#prompt")).to_have_text("Name a colour.")

        page.reload()  # progress lives on the server; the name in localStorage
        expect(page.locator("#progress")).to_have_text("1 of 2 ranked by you")
        expect(page.locator("#prompt")).to_have_text("Name a colour.")
        expect(page.locator("#annotator")).to_have_value("alice")
        page.click("#skip")
        expect(page.locator("#done")).to_be_visible()
        expect(page.locator("#progress")).to_have_text("1 of 2 ranked by you (1 skipped)")
        assert page.evaluate("typeof window.pwned") == "undefined"
        browser.close()
    assert problems == []  # no CSP violations, no script errors

    out = tmp_path / "export.jsonl"
    args = argparse.Namespace(label_command="export", db=str(server.db), out=str(out))
    assert cmd_label(args) == 0
    (line,) = out.read_text(encoding="utf-8").splitlines()
    row = json.loads(line)
    assert row["ranking"] == [2, [0, 3], 1]
    assert row["id"] == "q1" and row["annotator"] == "alice" and row["answer"] == "4"
    assert row["responses"] == ["four", XSS_SCRIPT, "4, obviously", XSS_IMG]
