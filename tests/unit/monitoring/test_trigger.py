"""The retraining trigger's decision over sequences of windows (pure; no MLflow)."""

from __future__ import annotations

from modelloop.monitoring.config import RetrainPolicy
from modelloop.monitoring.trigger import Decision, LastFiring, WindowRecord, decide

POLICY = RetrainPolicy(consecutive_windows=3, min_rows=100, cooldown_seconds=5000)


def _rec(
    i: int,
    share: float | None,
    *,
    rows: int = 1000,
    status: str = "ok",
    version: str = "1",
    quality: bool = False,
) -> WindowRecord:
    return WindowRecord(f"w{i}", 900.0 * (i + 1), version, status, rows, share, quality)


def _decide(records: list[WindowRecord], last: LastFiring | None = None, policy: RetrainPolicy = POLICY):  # type: ignore[no-untyped-def]
    return decide(policy, records[-1], records[:-1], drift_share=0.5, last=last)


def test_fires_after_k_consecutive_drifted_windows_only() -> None:
    assert _decide([_rec(0, 0.6), _rec(1, 0.7)]).decision is Decision.NOT_PERSISTENT
    fired = _decide([_rec(0, 0.6), _rec(1, 0.7), _rec(2, 0.5)])
    # the cause names the window that fired; the streak, its first window
    assert fired.fire and fired.cause == "drift:1:w2" and fired.streak == "drift:1:w0"


def test_a_clean_window_breaks_the_streak() -> None:
    assert (
        _decide([_rec(0, 0.6), _rec(1, 0.1), _rec(2, 0.9), _rec(3, 0.9)]).decision is Decision.NOT_PERSISTENT
    )


def test_small_windows_neither_count_nor_break() -> None:
    records = [
        _rec(0, 0.6),
        _rec(1, 0.0, rows=10),
        _rec(2, None, status="empty", rows=0),
        _rec(3, 0.8),
        _rec(4, 0.8),
    ]
    decision = _decide(records)
    assert decision.fire and decision.cause == "drift:1:w4" and decision.streak == "drift:1:w0"
    assert _decide([_rec(0, 0.9), _rec(1, 0.9), _rec(2, 0.9, rows=50)]).decision is Decision.INSUFFICIENT


def test_a_new_version_starts_a_new_streak() -> None:
    records = [_rec(0, 0.9), _rec(1, 0.9), _rec(2, 0.9, version="2")]
    assert _decide(records).decision is Decision.NOT_PERSISTENT


def test_same_cause_never_fires_twice_and_cooldown_holds() -> None:
    records = [_rec(0, 0.6), _rec(1, 0.7), _rec(2, 0.8), _rec(3, 0.8)]
    last = LastFiring("drift:1:w0", 900.0 * 3)
    assert _decide(records, last).decision is Decision.ALREADY_FIRED
    later = [*records, _rec(4, 0.1), _rec(5, 0.9), _rec(6, 0.9), _rec(7, 0.9)]
    cooled = _decide(later, last)
    assert (
        cooled.decision is Decision.COOLDOWN
        and cooled.streak == "drift:1:w5"
        and cooled.cause == "drift:1:w7"
    )
    free = RetrainPolicy(consecutive_windows=3, min_rows=100, cooldown_seconds=900 * 5)  # exactly elapsed
    assert _decide(later, last, free).fire


def test_quality_below_floor_fires_with_its_own_cause() -> None:
    records = [_rec(0, 0.0, quality=True), _rec(1, 0.0, quality=True)]
    decision = _decide(records)
    assert decision.fire and decision.cause == "quality:1:w1" and decision.streak == "quality:1:w0"


def test_disabled_and_future_windows_ignored() -> None:
    off = RetrainPolicy(enabled=False)
    assert _decide([_rec(0, 0.9)], policy=off).decision is Decision.DISABLED
    current = _rec(2, 0.9)
    future = [_rec(3, 0.9), _rec(4, 0.9)]
    assert decide(POLICY, current, future, drift_share=0.5, last=None).decision is Decision.NOT_PERSISTENT
