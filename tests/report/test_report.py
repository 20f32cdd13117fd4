"""`rlft report` on synthetic run directories: files written, every plot present, alarms listed
and shaded, eval table, samples escaped, compared runs overlaid, a run still being written."""

from __future__ import annotations

import json

import pytest
from report_support import XSS_IMG, XSS_SCRIPT, make_run, synthetic_metrics, write_jsonl

from rlft.config.loader import ConfigError
from rlft.report import write_report
from rlft.report.page import chosen_steps
from rlft.report.plots import PANELS, Panel, panel_keys, render_panel
from rlft.report.runs import load_run, load_runs


def test_report_writes_html_and_one_png_per_panel(tmp_path):
    run = make_run(tmp_path)
    path = write_report(run)
    assert path == run / "report.html"
    text = path.read_text(encoding="utf-8")
    assert sorted(p.name for p in (run / "report").iterdir()) == sorted(f"{p.name}.png" for p in PANELS)
    assert text.count('<img alt="') == len(PANELS)  # every panel has data in the synthetic run
    assert text.count("data:image/png;base64,") == len(PANELS)  # self-contained
    # entropy 2 * 0.8^s with window 3: last-window mean 2.54 * 0.8^s <= 0.2 x first mean 1.30 from step 11
    assert "<td>entropy_collapse</td><td>11-20</td>" in text
    assert '<figure id="plot-entropy" class="alarmed">' in text
    assert "alarm: run_a: entropy_collapse (steps 11-20)" in text
    assert '<figure id="plot-reward">' in text  # no alarm about rewards
    # eval files (before .125, after .375) and eval/* at steps 5, 10, 15, 20
    assert "<td>before</td><td>0.125</td>" in text and "<td>after</td><td>0.375</td>" in text
    assert "<tr><td>20</td><td>0.4</td><td>0.5</td><td>18</td></tr>" in text  # accuracy .2+.01*20, ...


def test_report_escapes_every_run_provided_string(tmp_path):
    text = write_report(make_run(tmp_path)).read_text(encoding="utf-8")
    assert "<script" not in text.lower() and "<img src=x" not in text
    assert "&lt;script&gt;window.pwned=1&lt;/script&gt;" in text
    assert "Repeat &lt;img src=x onerror=&quot;window.pwned=1&quot;&gt;" in text
    assert (
        '<span class="tag tag-best">best</span>' in text
        and '<span class="tag tag-worst">worst</span>' in text
    )
    assert XSS_SCRIPT and XSS_IMG  # the payloads the synthetic samples carry


def test_sample_steps_are_spread_and_include_the_last():
    # 10 steps, 4 shown: positions round(i * 9 / 3) = 0, 3, 6, 9
    assert chosen_steps(list(range(1, 11)), 4) == [1, 4, 7, 10]
    assert chosen_steps([3, 3, 1], 10) == [1, 3]
    assert chosen_steps([1, 2, 3], 1) == [3]


def test_panel_keys_follow_patterns_and_exclusions():
    panel = Panel("r", "R", ("reward/mean", "reward/*"), ("reward/*_failures", "reward/std"))
    keys = ["reward/std", "reward/fmt", "reward/fmt_failures", "reward/mean", "loss/x", "reward/acc"]
    assert panel_keys(panel, keys) == ["reward/mean", "reward/acc", "reward/fmt"]


def test_compared_runs_share_the_axes_with_a_legend_entry_each(tmp_path):
    a, b = make_run(tmp_path, "run_a"), make_run(tmp_path, "run_b", steps=12, scale=2.0)
    runs = load_runs([a, b])
    plot = render_panel(next(p for p in PANELS if p.name == "entropy"), runs)
    assert plot.labels == ("policy/entropy (run_a)", "policy/entropy (run_b)")
    # run_b's 12 steps: entropy_collapse from step 11 too; both episodes shaded
    assert plot.alarms == ("run_a: entropy_collapse (steps 11-20)", "run_b: entropy_collapse (steps 11-12)")
    text = write_report(a, [b], tmp_path / "cmp.html").read_text(encoding="utf-8")
    assert (tmp_path / "cmp" / "reward.png").exists()
    assert "rlft report: run_a vs run_b" in text and "<td>run_b</td><td>entropy_collapse</td>" in text
    same_name = load_runs([a, make_run(tmp_path / "other", "run_a")])
    assert [r.name for r in same_name] == [f"{tmp_path.name}/run_a", "other/run_a"]


def test_report_of_a_run_still_being_written(tmp_path):
    run = make_run(tmp_path, steps=8)
    (run / "summary.json").unlink()
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 9, "reward/me')  # the loop is writing step 9 right now
    data = load_run(run)
    assert (data.last_step, data.finished) == (8, False)
    assert "<td>8</td><td>8</td><td>running or stopped</td>" in write_report(run).read_text()
    write_jsonl(run / "metrics.jsonl", synthetic_metrics(9))  # step 9 done: a new report sees it
    assert "<td>9</td><td>9</td><td>running or stopped</td>" in write_report(run).read_text()


def test_bad_inputs_name_the_file_and_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="run directory not found: .*nope"):
        load_run(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="metrics.jsonl not found: is .*empty an rlft run directory"):
        load_run(tmp_path / "empty")
    run = make_run(tmp_path)
    (run / "config.yaml").write_text("alarms:\n  windw: 3\n")
    with pytest.raises(ConfigError, match=r"config.yaml: unknown config key 'alarms.windw'; did you mean"):
        load_run(run)
    (run / "config.yaml").write_text("alarms:\n  window: 3\n")
    write_jsonl(run / "samples.jsonl", [{"prompt": "p", "completion": "c"}, {"step": 1}])
    with pytest.raises(ValueError, match=r"samples.jsonl: record 1 has no integer 'step' field"):
        load_run(run)
    (run / "eval_after.json").write_text(json.dumps([1, 2]))
    write_jsonl(run / "samples.jsonl", [])
    with pytest.raises(ValueError, match=r"eval_after.json: expected a JSON object, got list"):
        load_run(run)
    with pytest.raises(ValueError, match="--out must name an .html file"):
        write_report(make_run(tmp_path, "ok"), out=tmp_path / "report.txt")
