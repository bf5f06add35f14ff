"""Ids of ledger rows: time-ordered UUIDs (version 7, RFC 9562).

Every id here is a key of a B-tree index (the audit record's event_id, a proposal's primary key and the approval
that names it, a simulated order's primary key). A random (version 4) id lands on a random leaf of its index, so
each record of a unit of work dirtied a leaf page of its own: 3.6 pages of the audit event_id index per proposal
(bench/commit_cost.py, `paused`), every one written to the WAL and synced at COMMIT, and on a large ledger the
leaves of a random index stop fitting the cache. An id that starts with the time in milliseconds goes to the
right-hand end of its index, next to the last one, so a unit's records share one leaf. The 74 bits after the time
are random (os.urandom): an id is as hard to guess as ever; its first 48 bits tell when it was drawn, which every
row carries in its own timestamp anyway. Ids drawn in the same millisecond are not ordered among themselves: the
index only needs them near each other.
"""

from __future__ import annotations

import os
import time

# The version (7) and RFC 4122 variant bits of a UUID, over 128 bits of time and randomness.
_KEEP = ~((0xF000 << 64) | (0xC000 << 48)) & ((1 << 128) - 1)
_SET = (0x7000 << 64) | (0x8000 << 48)
_MILLISECONDS = (1 << 48) - 1


def uuid7_text(unix_ms: int, random10: bytes) -> str:
    """The version 7 UUID, as text, of a Unix time in milliseconds (48 bits) and 80 random bits (of which the
    version and variant take 6)."""
    value = (unix_ms & _MILLISECONDS) << 80 | int.from_bytes(random10)
    digits = f"{value & _KEEP | _SET:032x}"
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"


def new_row_id() -> str:
    """A fresh time-ordered id (see the module's text)."""
    return uuid7_text(time.time_ns() // 1_000_000, os.urandom(10))
