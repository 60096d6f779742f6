"""The retraining trigger's decision: pure, over the window just measured and the recent ones.

Called by `monitoring.job` after a window's statistics are known. A window counts when its status is `ok`
and it has at least `min_rows` rows; windows that do not count neither extend nor break a streak, and a
change of serving version breaks it. The trigger fires when the last `consecutive_windows` counting
windows all drifted (share of drifted features at least the policy's share), or when the current window's
quality breaches its floor (or ceiling). The cause names the kind, the version and the window that decided
(the one whose run fires); the streak names the kind, the version and the first window of the streak, so a
streak that goes on never fires twice; a new streak waits out the cool-down, measured between window ends so
re-running old windows decides the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from modelloop.monitoring.config import RetrainPolicy


class Decision(StrEnum):
    FIRED = "fired"
    DISABLED = "disabled"
    INSUFFICIENT = "insufficient"
    NOT_PERSISTENT = "not_persistent"
    ALREADY_FIRED = "already_fired"
    COOLDOWN = "cooldown"
    SUPPRESSED = "suppressed"  # the policy fired but this run may not launch (e.g. --no-retrain)
    LAUNCH_FAILED = "launch_failed"  # the policy fired but the retraining could not be started


@dataclass(frozen=True)
class WindowRecord:
    """What the trigger needs to know about one measured window."""

    window_id: str
    end: float
    version: str | None
    status: str  # "ok" | "insufficient" | "empty"
    rows: int
    share_drifted: float | None
    quality_breached: bool


@dataclass(frozen=True)
class LastFiring:
    """The model's last retraining launched by monitoring (from the registered model's tags): its streak
    (what "the same cause" means) and the end of the window that fired."""

    streak: str
    window_end: float


@dataclass(frozen=True)
class TriggerDecision:
    decision: Decision
    cause: str | None  # kind, version and the window deciding: "drift:3:<window id>"
    detail: str
    streak: str | None = None  # kind, version and the first window of the streak: "drift:3:<window id>"

    @property
    def fire(self) -> bool:
        return self.decision is Decision.FIRED


def _counts(record: WindowRecord, policy: RetrainPolicy) -> bool:
    return record.status == "ok" and record.rows >= policy.min_rows


def _streak_start(
    current: WindowRecord, earlier: Sequence[WindowRecord], policy: RetrainPolicy, drifted_share: float
) -> tuple[int, str]:
    """Length of the drift streak ending at `current` and the id of its first window."""
    length, first = 1, current.window_id
    for record in earlier:
        if record.version != current.version:
            break
        if not _counts(record, policy):
            continue
        if record.share_drifted is None or record.share_drifted < drifted_share:
            break
        length, first = length + 1, record.window_id
    return length, first


def _quality_start(current: WindowRecord, earlier: Sequence[WindowRecord]) -> str:
    first = current.window_id
    for record in earlier:
        if record.version != current.version or not record.quality_breached:
            break
        first = record.window_id
    return first


def decide(
    policy: RetrainPolicy,
    current: WindowRecord,
    history: Sequence[WindowRecord],
    *,
    drift_share: float,
    last: LastFiring | None,
) -> TriggerDecision:
    """Whether the window `current` launches a retraining. `history` holds other windows of the model (any
    order; those ending after `current` are ignored); `drift_share` is the drift rule's default share."""
    if not policy.enabled:
        return TriggerDecision(Decision.DISABLED, None, "retraining is disabled for this model")
    earlier = sorted(
        (r for r in history if r.end <= current.end and r.window_id != current.window_id),
        key=lambda r: r.end,
        reverse=True,
    )
    share = policy.drift_share if policy.drift_share is not None else drift_share
    cause: str | None = None
    streak: str | None = None
    detail = ""
    if current.quality_breached and current.status != "empty":
        cause = f"quality:{current.version}:{current.window_id}"
        streak = f"quality:{current.version}:{_quality_start(current, earlier)}"
        detail = "quality below its floor"
    elif not _counts(current, policy):
        why = f"window is {current.status}" if current.status != "ok" else f"{current.rows} rows"
        return TriggerDecision(Decision.INSUFFICIENT, None, f"{why} (policy needs {policy.min_rows} rows)")
    elif current.share_drifted is not None and current.share_drifted >= share:
        length, first = _streak_start(current, earlier, policy, share)
        if length < policy.consecutive_windows:
            return TriggerDecision(
                Decision.NOT_PERSISTENT,
                None,
                f"{length} of {policy.consecutive_windows} drifted windows in a row",
            )
        cause = f"drift:{current.version}:{current.window_id}"
        streak = f"drift:{current.version}:{first}"
        detail = f"{length} drifted windows in a row since {first} (share >= {share:g})"
    else:
        return TriggerDecision(Decision.NOT_PERSISTENT, None, "window not drifted")
    if last is not None and last.streak == streak:
        return TriggerDecision(
            Decision.ALREADY_FIRED, cause, "a retraining was already launched for this streak", streak
        )
    if last is not None and current.end - last.window_end < policy.cooldown_seconds:
        wait = policy.cooldown_seconds - (current.end - last.window_end)
        return TriggerDecision(Decision.COOLDOWN, cause, f"cool-down: {wait:.0f} s left", streak)
    return TriggerDecision(Decision.FIRED, cause, detail, streak)


__all__ = ["Decision", "LastFiring", "TriggerDecision", "WindowRecord", "decide"]
