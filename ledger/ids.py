"""Ids of ledger rows: random UUIDs (version 4) for what people read and type, time-ordered ones (version 7,
RFC 9562) for the audit records.

Every id is a key of a B-tree index. A random id lands on a random leaf of its index, so each audit record of a
unit of work dirtied a leaf page of its own: 3.6 pages of the audit event_id index per proposal
(bench/commit_cost.py, `paused`), every one written to the WAL and synced at COMMIT, and on a large ledger the
leaves of a random index stop fitting the cache. An audit record's id (`new_row_id`) starts with the time in
milliseconds instead, so it goes to the right-hand end of its index and a unit's records share one leaf. The 74
bits after the time are random (os.urandom): as hard to guess as ever; the first 48 bits tell when it was drawn,
which the record carries in its own timestamp anyway. Ids drawn in the same millisecond are not ordered among
themselves: the index only needs them near each other.

Proposals' and orders' ids stay random (`new_random_id`): the command line shows them shortened to their first 13
characters and accepts any unique prefix of 8 (policies/operator_books.py), and time-ordered ids share their first
8 characters for about a minute (one proposal is one row of its index: ~0.1 page a COMMIT was all they saved).
"""

from __future__ import annotations

import os
import time

# The version (4) and RFC 4122 variant bits of a UUID, as uuid.UUID(bytes=..., version=4) sets them.
_KEEP_4 = ~((0xF000 << 64) | (0xC000 << 48)) & ((1 << 128) - 1)
_SET_4 = (0x4000 << 64) | (0x8000 << 48)


def uuid4_text(random16: bytes) -> str:
    """str(uuid.UUID(bytes=random16, version=4)) without building the UUID object (half the cost)."""
    digits = f"{int.from_bytes(random16) & _KEEP_4 | _SET_4:032x}"
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"


def new_random_id() -> str:
    """A fresh random (version 4) UUID as text: the id of a proposal or an order (see the module's text)."""
    return uuid4_text(os.urandom(16))


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
    """A fresh time-ordered id: the id of an audit record (see the module's text)."""
    return uuid7_text(time.time_ns() // 1_000_000, os.urandom(10))
