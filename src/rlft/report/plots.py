"""The report's plots: one PNG per panel of related metrics over steps, runs overlaid, alarm
episodes shaded. matplotlib's Agg canvas (no display, no pyplot state)."""

from __future__ import annotations

import fnmatch
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rlft.report.runs import RunData
from rlft.telemetry.alarms import as_number


@dataclass(frozen=True)
class Panel:
    name: str  # file name and HTML id
    title: str
    include: tuple[str, ...]  # fnmatch patterns of metric keys, in legend order
    exclude: tuple[str, ...] = ()


PANELS = (
    Panel(
        "reward",
        "Reward (mean, per function, gold)",
        ("reward/mean", "reward/*"),
        (
            "reward/*_failures",
            "reward/std",
            "reward/max",
            "reward/min",
            "reward/*disagreement",
            "reward/rm_[0-9]*",
        ),
    ),
    Panel("reward_spread", "Reward spread in the batch", ("reward/std", "reward/max", "reward/min")),
    Panel(
        "length",
        "Response length (tokens)",
        ("rollout/response_len", "rollout/response_len_p90", "rollout/response_len_max", "eval/response_len"),
    ),
    Panel("truncation", "Truncated at max_new_tokens", ("rollout/truncated_frac", "eval/truncated_frac")),
    Panel("kl", "KL to the reference", ("policy/kl*",), ("policy/kl_coef",)),
    Panel("entropy", "Policy entropy (nats/token)", ("policy/entropy",)),
    Panel("clip", "Clipped ratio fraction", ("policy/clip_frac*",)),
    Panel("grad_norm", "Gradient norm (before clipping)", ("optim/grad_norm",)),
    Panel("zero_std", "Groups with equal rewards (no signal)", ("rollout/zero_std_groups_frac",)),
    Panel(
        "emergence",
        "Emergence and degeneration signals",
        ("rollout/reflection_frac", "rollout/repeat_ngram_frac", "rollout/empty_answer_frac"),
    ),
    Panel(
        "thinking", "Reasoning length and reflection count", ("rollout/think_*", "rollout/reflection_count")
    ),
    Panel("eval", "Held-out evaluation", ("eval/*",), ("eval/response_len", "eval/truncated_frac")),
    Panel("loss", "Losses", ("loss/*",)),
    Panel("step_time", "Seconds per step", ("perf/step_s",)),
)
LINESTYLES = ("-", "--", ":", "-.")


@dataclass(frozen=True)
class Plot:
    panel: Panel
    keys: tuple[str, ...]  # metric keys drawn
    labels: tuple[str, ...]  # legend entries: "key" (one run) or "key (run)" (several)
    png: bytes
    alarms: tuple[str, ...]  # "run: alarm (steps a-b)" shaded on it


def panel_keys(panel: Panel, keys: Sequence[str]) -> list[str]:
    """Keys matching the panel's patterns (pattern order, then sorted), minus exclusions."""
    out: list[str] = []
    for pattern in panel.include:
        for k in sorted(k for k in keys if fnmatch.fnmatchcase(k, pattern)):
            if k not in out and not any(fnmatch.fnmatchcase(k, x) for x in panel.exclude):
                out.append(k)
    return out


def series(run: RunData, key: str) -> tuple[list[int], list[float]]:
    points = [(r["step"], v) for r in run.records if (v := as_number(r.get(key))) is not None]
    return [s for s, _ in points], [v for _, v in points]


def render_panel(panel: Panel, runs: Sequence[RunData]) -> Plot | None:
    """The panel's PNG, or None when no run logged any of its keys."""
    from matplotlib.figure import Figure

    keys = panel_keys(panel, [k for run in runs for k in run.keys])
    if not keys:
        return None
    fig = Figure(figsize=(7.5, 3.4), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    colors = [f"C{i % 10}" for i in range(len(keys))]
    labels: list[str] = []
    for r_index, run in enumerate(runs):
        for key, color in zip(keys, colors, strict=True):
            steps, values = series(run, key)
            if not steps:
                continue
            label = f"{key} ({run.name})" if len(runs) > 1 else key
            sparse = len(steps) < 0.5 * len(run.records)  # eval/*: only on eval steps
            style = LINESTYLES[r_index % len(LINESTYLES)]
            ax.plot(steps, values, style, color=color, label=label, marker="o" if sparse else None, ms=4)
            labels.append(label)
    shaded = _shade_alarms(ax, keys, runs)
    ax.set_title(panel.title)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return Plot(panel, tuple(keys), tuple(labels), buffer.getvalue(), tuple(shaded))


def _shade_alarms(ax, keys: Sequence[str], runs: Sequence[RunData]) -> list[str]:
    shaded: list[str] = []
    for run in runs:
        for alarm in run.alarms:
            if set(alarm.keys) & set(keys):
                label = "alarm" if not shaded else None
                ax.axvspan(
                    alarm.first_step - 0.5, alarm.last_step + 0.5, color="tab:red", alpha=0.15, label=label
                )
                shaded.append(f"{run.name}: {alarm.name} (steps {alarm.first_step}-{alarm.last_step})")
    return shaded


def render_plots(runs: Sequence[RunData], png_dir: Path) -> tuple[list[Plot], list[Panel]]:
    """Every panel with data (also written to png_dir/<panel>.png), and the panels without."""
    png_dir.mkdir(parents=True, exist_ok=True)
    plots, empty = [], []
    for panel in PANELS:
        plot = render_panel(panel, runs)
        if plot is None:
            empty.append(panel)
            continue
        (png_dir / f"{panel.name}.png").write_bytes(plot.png)
        plots.append(plot)
    return plots, empty
