"""The timeline plot a deployment run carries: one bar per phase of a rollout, in seconds since it began.

Called by `modelloop.deploy.registry.MlflowRegistry.record_rollout`, which writes the plot to a PNG file
(`save_timeline_plot`) that `adapters.mlflow_rollouts` logs as `modelloop/rollout_timeline.png` beside the
timeline's JSON. Drawn with matplotlib's Agg backend on a bare
`Figure` (no pyplot state, so it is safe from the controller's worker threads).

A timeline is a list of `(unix time, event)`; phase i runs from event i to event i+1 and is labelled with
event i; the last event is the outcome (a green mark when the rollout ended serving, red when it failed).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

from matplotlib.figure import Figure

PHASE_COLOURS = ("tab:blue", "tab:orange", "tab:purple", "tab:brown", "tab:gray")


def timeline_figure(timeline: list[tuple[float, str]], *, title: str, succeeded: bool) -> Figure:
    """A horizontal bar per phase of `timeline` (which must hold at least one event)."""
    if not timeline:
        raise ValueError("a rollout timeline needs at least one event")
    start = timeline[0][0]
    offsets = [t - start for t, _ in timeline]
    phases = list(zip(offsets, offsets[1:], (e for _, e in timeline), strict=False))
    fig = Figure(figsize=(8, 1.2 + 0.5 * max(1, len(phases))))
    ax = fig.add_subplot()
    for row, (begin, end, event) in enumerate(phases):
        ax.barh(row, max(end - begin, 1e-3), left=begin, color=PHASE_COLOURS[row % len(PHASE_COLOURS)])
        label = textwrap.shorten(event, width=60, placeholder="...")
        ax.annotate(
            f"{label} ({end - begin:.2f} s)",
            (begin, row),
            xytext=(2, 0),
            textcoords="offset points",
            va="center",
            fontsize=8,
        )
    outcome_row = len(phases)
    ax.plot(
        [offsets[-1]],
        [outcome_row],
        marker="o",
        markersize=9,
        color="tab:green" if succeeded else "tab:red",
    )
    ax.annotate(
        textwrap.shorten(timeline[-1][1], width=70, placeholder="..."),
        (offsets[-1], outcome_row),
        xytext=(-6, 0),
        textcoords="offset points",
        va="center",
        ha="right",
        fontsize=8,
    )
    ax.set_yticks([])
    ax.set_ylim(-0.6, outcome_row + 0.6)
    ax.invert_yaxis()
    ax.set_xlim(left=0, right=max(offsets[-1] * 1.05, 0.1))
    ax.set_xlabel("seconds since the rollout began")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def save_timeline_plot(timeline: list[tuple[float, str]], path: Path, *, title: str, succeeded: bool) -> Path:
    """Draw `timeline_figure` into the PNG file `path` (its folder must exist); returns `path`."""
    timeline_figure(timeline, title=title, succeeded=succeeded).savefig(path, format="png")
    return path


__all__ = ["save_timeline_plot", "timeline_figure"]
