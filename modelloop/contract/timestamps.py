"""Times as modelloop writes them into tags and parses them from flags: ISO-8601 UTC to the second
(`2026-11-30T04:12:07Z`), the one form people read in the MLflow UI, and unix seconds or ISO-8601 back.

Tags written before timestamps were ISO (raw unix seconds) still parse, so a registry written by an older
modelloop keeps working.
"""

from __future__ import annotations

from datetime import UTC, datetime


def iso_utc(when: float) -> str:
    """Unix seconds as ISO-8601 UTC to the second, e.g. 2026-11-30T04:12:07Z."""
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def unix_seconds(text: str) -> float:
    """Unix seconds from an ISO-8601 time (UTC unless it says otherwise) or a number of unix seconds;
    `ValueError` otherwise (the caller names the flag or tag)."""
    try:
        return float(text)
    except ValueError:
        pass
    parsed = datetime.fromisoformat(text)
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


__all__ = ["iso_utc", "unix_seconds"]
