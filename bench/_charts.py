"""The benches' curves as PNGs for ``docs/performance.md`` (``docs/img/``): matplotlib, from the ``bench`` extra."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on the bench machine

import matplotlib.pyplot as plt  # after choosing the backend
from matplotlib.figure import Figure

SIZE = (7.0, 4.2)  # inches: about 700 × 420 pixels at DPI, readable beside a table
DPI = 100


def ack_cdf(path: Path, acks: Mapping[str, Sequence[float]], *, title: str) -> Path:
    """The distribution of ack times (seconds), one curve per contender, with each one's p50 and p99 marked."""
    figure, axes = plt.subplots(figsize=SIZE)
    for name, values in acks.items():
        ordered = sorted(v * 1000 for v in values)
        share = [(i + 1) / len(ordered) for i in range(len(ordered))]
        (line,) = axes.step(ordered, share, where="post", label=f"{name} (n={len(ordered)})")
        for p in (0.5, 0.99):
            x = ordered[min(len(ordered) - 1, round(p * (len(ordered) - 1)))]
            axes.plot([x], [p], "o", color=line.get_color())
            axes.annotate(f"p{p * 100:g} {x:.0f} ms", (x, p), textcoords="offset points", xytext=(6, -12), fontsize=8)
    axes.set(xlabel="ack time (ms)", ylabel="share of requests acked", ylim=(0, 1.02), title=title)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right")
    return _save(figure, path)


def ack_cdfs(path: Path, panels: Mapping[str, Mapping[str, Sequence[float]]], *, title: str) -> Path:
    """``ack_cdf`` side by side, one panel per way of reaching the app (HTTP, Socket Mode): each panel's curves are
    its contenders' ack times (seconds), with p50 and p99 marked; the panels share the time axis."""
    figure, grid = plt.subplots(1, len(panels), figsize=(SIZE[0] * 0.75 * len(panels), SIZE[1]), squeeze=False)
    longest = max((max(v) for acks in panels.values() for v in acks.values() if v), default=0.0) * 1000
    for axes, (panel, acks) in zip(grid[0], panels.items(), strict=True):
        for k, (name, values) in enumerate(acks.items()):
            ordered = sorted(v * 1000 for v in values)
            if not ordered:
                continue
            share = [(i + 1) / len(ordered) for i in range(len(ordered))]
            (line,) = axes.step(ordered, share, where="post", label=f"{name} (n={len(ordered)})")
            for p in (0.5, 0.99):
                x = ordered[min(len(ordered) - 1, round(p * (len(ordered) - 1)))]
                axes.plot([x], [p], "o", color=line.get_color())
                at = (6, -12 - 11 * k)  # each contender's labels a line lower: close percentiles stay readable
                label = f"p{p * 100:g} {x:.0f}"
                axes.annotate(label, (x, p), textcoords="offset points", xytext=at, fontsize=8, color=line.get_color())
        axes.set(xlabel="ack time (ms)", ylim=(0, 1.02), xlim=(0, longest * 1.08 or 1), title=panel)
        axes.grid(alpha=0.3)
        axes.legend(loc="lower right", fontsize=8)
    grid[0][0].set_ylabel("share of requests acked")
    figure.suptitle(title, fontsize=10)
    return _save(figure, path)


def replicas_chart(
    path: Path,
    *,
    measured: Mapping[int, float],
    predicted_here: Mapping[int, float],
    predicted_apart: Mapping[int, float],
    title: str,
    limits: Mapping[str, float] | None = None,
) -> Path:
    """Sends/s against the number of replicas: measured, the model on this machine, the model with a core each;
    ``limits`` are ceilings that do not grow with replicas (the database's CPU), drawn across."""
    figure, axes = plt.subplots(figsize=SIZE)
    apart = sorted(predicted_apart.items())
    axes.plot([n for n, _ in apart], [v for _, v in apart], "--", color="grey", label="model: a core per replica")
    n, v = apart[-1]
    axes.annotate(f"{v:.0f}", (n, v), textcoords="offset points", xytext=(-10, 6), fontsize=8)
    for (name, value), style in zip((limits or {}).items(), (":", "-."), strict=False):
        axes.axhline(value, color="tab:red", linestyle=style, linewidth=1, label=name)
    here = sorted(predicted_here.items())
    axes.plot([n for n, _ in here], [v for _, v in here], "s--", color="tab:orange", label="model: this machine")
    points = sorted(measured.items())
    axes.plot([n for n, _ in points], [v for _, v in points], "o-", color="tab:blue", label="measured")
    for n, v in points:
        axes.annotate(f"{v:.0f}", (n, v), textcoords="offset points", xytext=(6, 4), fontsize=8)
    axes.set(xlabel="replicas", ylabel="sends/s", title=title)
    axes.set_xticks(sorted({n for n, _ in apart} | {n for n, _ in points}))
    axes.set_ylim(bottom=0)
    axes.grid(alpha=0.3)
    axes.legend(loc="upper left")
    return _save(figure, path)


def backlog_chart(
    path: Path,
    series: Mapping[str, Sequence[tuple[float, float]]],
    *,
    title: str,
    last_event_s: float | None = None,
    ylabel: str = "alerts waiting (acked, not yet told)",
) -> Path:
    """A storm's backlog over time: (seconds since the first event, how many wait) per series; the last event is
    marked, and a minute after it, so "drained within a minute of the last" can be read off."""
    figure, axes = plt.subplots(figsize=SIZE)
    for name, points in series.items():
        axes.plot([t for t, _ in points], [v for _, v in points], label=name)
    if last_event_s is not None:
        axes.axvline(last_event_s, color="grey", linestyle=":", label="last event")
        axes.axvline(last_event_s + 60, color="tab:red", linestyle=":", label="last event + 60 s")
    axes.set(xlabel="seconds since the first event", ylabel=ylabel, title=title)
    axes.set_ylim(bottom=0)
    axes.grid(alpha=0.3)
    axes.legend(loc="best")
    return _save(figure, path)


def storm_chart(
    path: Path,
    backlog: Mapping[str, Sequence[tuple[float, float]]],
    acks: Sequence[tuple[float, float, float]],
    *,
    title: str,
    last_event_s: float,
    budget_ms: float = 3000.0,
) -> Path:
    """A storm over time, two panels on one time axis: above, how many alerts wait (one curve per series of
    (seconds since the first alert, count)), with the last alert and a minute after it marked; below, the ack p99
    and max of each window of arrivals ((window middle, p99 ms, max ms)), on a log scale under Slack's budget."""
    figure, (top, bottom) = plt.subplots(
        2, 1, figsize=(SIZE[0], SIZE[1] * 1.4), sharex=True, gridspec_kw={"height_ratios": [3, 2]}
    )
    for name, points in backlog.items():
        top.plot([t for t, _ in points], [v for _, v in points], label=name)
    for axes in (top, bottom):
        axes.axvline(last_event_s, color="grey", linestyle=":", label="last alert" if axes is top else None)
        axes.axvline(
            last_event_s + 60, color="tab:red", linestyle=":", label="last alert + 60 s" if axes is top else None
        )
        axes.grid(alpha=0.3)
    top.set(ylabel="alerts waiting", title=title)
    top.set_ylim(bottom=0)
    top.legend(loc="upper left", fontsize=8)
    if acks:
        bottom.plot([t for t, _, _ in acks], [p for _, p, _ in acks], "o-", markersize=3, label="ack p99 (10-s window)")
        bottom.plot([t for t, _, _ in acks], [m for _, _, m in acks], ".", color="tab:orange", label="ack max")
    bottom.axhline(budget_ms, color="tab:red", linewidth=1, label=f"Slack's budget ({budget_ms / 1000:g} s)")
    bottom.set_yscale("log")
    bottom.set_ylim(top=budget_ms * 20)  # room above the budget line for the legend, clear of the points
    bottom.set(xlabel="seconds since the first alert", ylabel="ack time (ms)")
    bottom.legend(loc="upper center", fontsize=8, ncol=3)
    return _save(figure, path)


def _save(figure: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    plt.close(figure)
    return path
