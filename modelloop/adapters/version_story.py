"""The story of one model version as the markdown description the MLflow UI shows on its page: why it exists,
how it compared at the gate, and where it was rolled out. Pure: plain facts in, markdown out, no I/O.

`adapters.mlflow_version_story` gathers the facts from MLflow (the version's tags, its training run, the
monitoring run that asked for it, the deployment runs) and writes the result; training calls it once the
version is registered, the controller after every rollout that involves the version. Links are relative MLflow
UI routes (`#/experiments/...`, see `adapters.mlflow_ui`), so they work whatever address the UI is opened at.

    ### Why version 2 exists
    Retraining after drift: monitoring run [monitor demo 04:10-04:12](#/...) of version 1 found
    `mean radius`, `mean area` drifted. Training run: [train v2 — retraining after drift](#/...).

    ### Gate: passed
    | test metric | version 2 | baseline (...) | production (version 1) |
    ...

    ### Rollouts
    | binding | target | address | outcome | serving from | serving until | record |
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .mlflow_ui import run_url, version_url

#: MLflow caps a version's description; the story is cut (with a note) well before.
MAX_DESCRIPTION = 20_000
NONE = "—"


@dataclass(frozen=True)
class RunLink:
    """A run the story links to."""

    experiment_id: str
    run_id: str
    name: str  # the run's name as the UI shows it

    def markdown(self) -> str:
        return f"[{_escape(self.name or self.run_id)}]({run_url(None, self.experiment_id, self.run_id)})"


@dataclass(frozen=True)
class Trigger:
    """The monitoring run whose drift (or quality breach) launched the training of this version."""

    run: RunLink
    monitored_version: str | None  # the version the monitoring run watched (the one this replaces)
    window: str | None  # the window it measured, as it names it
    drifted_features: Sequence[str] = ()
    cause: str | None = None  # the retraining cause it recorded (`modelloop.retrain.cause`)


@dataclass(frozen=True)
class Gate:
    """The gate's verdict on the test set of the version's training."""

    verdict: str  # "passed" | "failed" | "" (not recorded)
    reasons: Sequence[str]
    metric: str  # the optimised metric, listed first
    model: Mapping[str, float]
    baseline: Mapping[str, float]
    baseline_name: str
    production: Mapping[str, float] | None = None  # production's metrics on the same rows
    production_version: str | None = None


@dataclass(frozen=True)
class Rollout:
    """One rollout that involved the version: it was rolled out, or replaced by another."""

    binding: str
    target: str
    address: str
    outcome: str  # "serving" | "failed" | "retired"
    serving_from: str | None  # ISO-8601 UTC, when it answered (None for a failed rollout)
    serving_until: str | None = None  # ISO-8601 UTC, when another version replaced it
    replaced_by: str | None = None
    record: RunLink | None = None  # the deployment run of the rollout
    reason: str = ""  # why it failed


@dataclass(frozen=True)
class VersionStory:
    model: str
    version: str
    training: RunLink | None
    gate: Gate | None
    trigger: Trigger | None = None
    rollouts: Sequence[Rollout] = field(default_factory=tuple)


def compose(story: VersionStory) -> str:
    """The version's description (markdown)."""
    parts = [summary(story), _why(story), _gate(story), _rollouts(story)]
    text = "\n\n".join(p for p in parts if p) + "\n"
    if len(text) > MAX_DESCRIPTION:
        text = (
            text[: MAX_DESCRIPTION - 80].rsplit("\n", 1)[0] + "\n\n*(cut: the full record is on the runs)*\n"
        )
    return text


def summary(story: VersionStory) -> str:
    """The first line, what the versions list shows: why, the gate's verdict, where it serves now."""
    if story.trigger is not None:
        why = retraining_title(story.trigger.cause)
    else:
        why = "Initial training" if story.version == "1" else "Trained on request"
    parts = [why]
    if story.gate is not None and story.gate.verdict:
        parts.append(f"gate {_escape(story.gate.verdict)}")
    serving = [r for r in story.rollouts if r.outcome == "serving"]
    if serving:
        parts.append(
            "serving on " + ", ".join(f"{_escape(r.binding)} ({_escape(r.target)})" for r in serving)
        )
    elif any(r.outcome == "retired" for r in story.rollouts):
        parts.append("retired")
    elif not story.rollouts:
        parts.append("not rolled out yet")
    return " · ".join(parts)


def _why(story: VersionStory) -> str:
    lines = [f"### Why version {_escape(story.version)} exists"]
    trig = story.trigger
    if trig is None:
        first = story.version == "1"
        lines.append("Initial training." if first else "Trained on request (no monitoring run asked for it).")
    else:
        watched = (
            f" of version {_version_link(story.model, trig.monitored_version)}"
            if trig.monitored_version
            else ""
        )
        window = f" (window {_escape(trig.window)})" if trig.window else ""
        found = (
            "found " + ", ".join(f"`{_code(f)}`" for f in trig.drifted_features) + " drifted"
            if trig.drifted_features
            else "fired the retraining"
        )
        lines.append(
            f"{retraining_title(trig.cause)}: monitoring run {trig.run.markdown()}{watched}{window} {found}."
        )
        if trig.cause:
            lines.append(f"Cause recorded: `{_code(trig.cause)}`.")
    if story.training is not None:
        lines.append(f"Training run: {story.training.markdown()}.")
    return "\n".join(lines)


def retraining_title(cause: str | None) -> str:
    """ "Retraining after drift" (or after what the cause names first, e.g. a quality breach)."""
    kind = (cause or "drift").split(":", 1)[0].strip() or "drift"
    return "Retraining after " + ("a quality breach" if kind == "quality" else _escape(kind))


def _gate(story: VersionStory) -> str:
    gate = story.gate
    if gate is None:
        return ""
    lines = [f"### Gate: {_escape(gate.verdict or 'not recorded')}"]
    header = ["test metric", f"version {_escape(story.version)}", f"baseline ({_escape(gate.baseline_name)})"]
    if gate.production is not None:
        header.append(f"production (version {_escape(gate.production_version or '?')})")
    lines += [_row(header), _row(["---"] * len(header))]
    for name in sorted(gate.model, key=lambda n: (n != gate.metric, n)):
        label = f"**{_escape(name)}** (optimised)" if name == gate.metric else _escape(name)
        row = [label, _num(gate.model.get(name)), _num(gate.baseline.get(name))]
        if gate.production is not None:
            row.append(_num(gate.production.get(name)))
        lines.append(_row(row))
    if gate.production is None:
        lines.append("\nNo production version to compare with.")
    if gate.reasons:
        lines.append("")
        lines += [f"- {_escape(r)}" for r in gate.reasons]
    return "\n".join(lines)


def _rollouts(story: VersionStory) -> str:
    lines = ["### Rollouts"]
    if not story.rollouts:
        lines.append("Not rolled out yet.")
        return "\n".join(lines)
    header = ["binding", "target", "address", "outcome", "serving from", "serving until", "record"]
    lines += [_row(header), _row(["---"] * len(header))]
    for r in story.rollouts:
        outcome = _escape(r.outcome)
        if r.replaced_by:
            outcome += f" (replaced by version {_version_link(story.model, r.replaced_by)})"
        if r.reason:
            outcome += f": {_escape(r.reason[:200])}"
        lines.append(
            _row(
                [
                    _escape(r.binding),
                    _escape(r.target),
                    f"`{_code(r.address)}`" if r.address else NONE,
                    outcome,
                    r.serving_from or NONE,
                    r.serving_until or NONE,
                    r.record.markdown() if r.record is not None else NONE,
                ]
            )
        )
    return "\n".join(lines)


def _version_link(model: str, version: str) -> str:
    return f"[{_escape(version)}]({version_url(None, model, version)})"


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _num(value: float | None) -> str:
    return NONE if value is None else f"{value:.4f}"


def _escape(text: str) -> str:
    """Text safe inside a markdown table cell or a link's label."""
    out = str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")
    for ch in "[]*_`<>":
        out = out.replace(ch, "\\" + ch)
    return out


def _code(text: str) -> str:
    """Text safe inside inline code in a table cell."""
    return str(text).replace("`", "'").replace("|", "/").replace("\n", " ")


__all__ = [
    "MAX_DESCRIPTION",
    "Gate",
    "Rollout",
    "RunLink",
    "Trigger",
    "VersionStory",
    "compose",
    "retraining_title",
    "summary",
]
