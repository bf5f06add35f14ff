"""The wall clock, in UTC. Passed in everywhere (never read directly) so tests can move it."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_now() -> datetime:
    return datetime.now(UTC)
