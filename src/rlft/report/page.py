"""The report page: one self-contained HTML file (PNGs inline as base64, inline CSS, no
scripts; a Content-Security-Policy forbids any). Every run-provided string goes through
html.escape."""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from rlft.report.plots import Panel, Plot
from rlft.report.runs import RunData

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; max-width: 1100px; }
table { border-collapse: collapse; margin: 8px 0 16px; }
td, th { border: 1px solid #ccc; padding: 3px 8px; text-align: left; vertical-align: top; }
figure { display: inline-block; margin: 6px; }
figure.alarmed img { outline: 3px solid #d62728; }
figcaption { font-size: 12px; color: #d62728; max-width: 750px; }
pre { white-space: pre-wrap; word-break: break-word; background: #f6f6f6; padding: 6px; margin: 2px 0; }
.tag { font-weight: bold; padding: 0 4px; border-radius: 3px; }
.tag-best { background: #cfc; } .tag-worst { background: #fcc; }
.alarm { background: #fee; } .note { color: #666; }
"""
EVAL_FIELDS = ("accuracy", "pass@k", "maj@k", "reward", "n", "k", "mean_response_tokens")


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else esc(value)


def table(header: Sequence[str], rows: Iterable[Sequence[Any]], row_class: str = "") -> str:
    cls = f' class="{esc(row_class)}"' if row_class else ""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join(f"<tr{cls}>" + "".join(f"<td>{fmt(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def runs_section(runs: Sequence[RunData]) -> str:
    rows = [
        (r.name, str(r.path), len(r.records), r.last_step, "finished" if r.finished else "running or stopped")
        for r in runs
    ]
    return "<h2>Runs</h2>" + table(("run", "directory", "steps logged", "last step", "status"), rows)


def alarms_section(runs: Sequence[RunData]) -> str:
    rows = [(r.name, a.name, f"{a.first_step}-{a.last_step}", a.message) for r in runs for a in r.alarms]
    if not rows:
        return '<section id="alarms"><h2>Alarms</h2><p>No alarm fired.</p></section>'
    return (
        '<section id="alarms"><h2>Alarms</h2>'
        + table(("run", "alarm", "steps", "what"), rows, "alarm")
        + "</section>"
    )


def plots_section(plots: Sequence[Plot], empty: Sequence[Panel]) -> str:
    parts = ['<section id="plots"><h2>Metrics over steps</h2>']
    for p in plots:
        data = base64.b64encode(p.png).decode("ascii")
        cls = ' class="alarmed"' if p.alarms else ""
        caption = f"<figcaption>alarm: {esc('; '.join(p.alarms))}</figcaption>" if p.alarms else ""
        alt = f"{p.panel.title}: {', '.join(p.labels)}"
        parts.append(
            f'<figure id="plot-{esc(p.panel.name)}"{cls}>'
            f'<img alt="{esc(alt)}" src="data:image/png;base64,{data}">{caption}</figure>'
        )
    if empty:
        names = ", ".join(p.title for p in empty)
        parts.append(f'<p class="note">Not logged by these runs: {esc(names)}.</p>')
    return "".join(parts) + "</section>"


def eval_section(runs: Sequence[RunData]) -> str:
    parts = ['<section id="eval"><h2>Evaluation</h2>']
    # a missing or null field (maj@k under reward scoring, reward under answer matching) shows blank
    rows = [
        (r.name, tag, *("" if e.get(f) is None else e[f] for f in EVAL_FIELDS))
        for r in runs
        for tag, e in r.evals.items()
    ]
    if rows:
        parts.append(table(("run", "when", *EVAL_FIELDS), rows))
    for r in runs:
        keys = [k for k in r.keys if k.startswith("eval/")]
        steps = [rec for rec in r.records if any(k in rec for k in keys)]
        if steps:
            parts.append(f"<h3>{esc(r.name)}: during training</h3>")
            parts.append(table(("step", *keys), [(s["step"], *(s.get(k, "") for k in keys)) for s in steps]))
    if len(parts) == 1:
        parts.append('<p class="note">No evaluation results (eval_before/after.json, eval/* metrics).</p>')
    return "".join(parts) + "</section>"


def chosen_steps(steps: Sequence[int], limit: int) -> list[int]:
    """At most `limit` of the sorted distinct steps, evenly spread, always the first and last."""
    distinct = sorted(set(steps))
    if len(distinct) <= limit:
        return distinct
    if limit <= 1:
        return distinct[-limit:] if limit else []
    return sorted({distinct[round(i * (len(distinct) - 1) / (limit - 1))] for i in range(limit)})


def _sample_group(samples: Sequence[Mapping[str, Any]]) -> str:
    first = samples[0]
    parts = [f'<pre class="prompt">{esc(first.get("prompt", ""))}</pre>']
    if first.get("answer") is not None:
        parts.append(f"<p>reference answer: <code>{esc(first['answer'])}</code></p>")
    for s in samples:
        tag = s.get("tag") or ""
        badge = f'<span class="tag tag-{esc(tag)}">{esc(tag)}</span> ' if tag else ""
        parts.append(
            f"<div>{badge}score {fmt(s.get('score', ''))}<pre>{esc(s.get('completion', ''))}</pre></div>"
        )
    return '<div class="group">' + "".join(parts) + "</div>"


def samples_section(runs: Sequence[RunData], max_steps: int) -> str:
    parts = ['<section id="samples"><h2>Sample completions</h2>']
    for r in runs:
        steps = chosen_steps([s["step"] for s in r.samples], max_steps)
        parts.append(f"<h3>{esc(r.name)}</h3>")
        if not steps:
            parts.append('<p class="note">No samples.jsonl records.</p>')
        for i, step in enumerate(steps):
            groups: dict[Any, list[Mapping[str, Any]]] = {}
            for s in (s for s in r.samples if s["step"] == step):
                groups.setdefault(s.get("group", s.get("prompt")), []).append(s)
            body = "".join(_sample_group(g) for g in groups.values())
            is_open = " open" if i == len(steps) - 1 else ""
            parts.append(f"<details{is_open}><summary>step {step}</summary>{body}</details>")
    return "".join(parts) + "</section>"


def render_page(
    runs: Sequence[RunData], plots: Sequence[Plot], empty: Sequence[Panel], max_steps: int
) -> str:
    title = "rlft report: " + " vs ".join(r.name for r in runs)
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
        f"<h1>{esc(title)}</h1>"
        + runs_section(runs)
        + alarms_section(runs)
        + plots_section(plots, empty)
        + eval_section(runs)
        + samples_section(runs, max_steps)
        + "</body></html>\n"
    )
