"""The audit chain's records straight from a SQLite file, for verification of long logs.

A plain sqlite3 cursor steps through the table in sequence order (the primary key's order) one row at a time:
memory stays flat however long the log, and it skips the per-row work of the async ORM stack, which costs more
than hashing the record. Read-only: the file is opened with mode=ro.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing

COLUMNS = "seq, event_id, ts, actor, agent_id, kind, tool, payload, prev_hash, hash"
FETCH = 2000


def sqlite_head(path: str) -> tuple[int, str] | None:
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as connection:
        row = connection.execute("SELECT seq, hash FROM audit_head WHERE id = 1").fetchone()
    return (int(row[0]), str(row[1])) if row is not None else None


def sqlite_records(path: str) -> Iterator[tuple[int, str, str, str, str | None, str, str | None, str, str, str]]:
    """Every record as (seq, event_id, ts text as stored, actor, agent_id, kind, tool, payload, prev_hash, hash)."""
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as connection:
        cursor = connection.execute(f"SELECT {COLUMNS} FROM audit_events ORDER BY seq")
        while rows := cursor.fetchmany(FETCH):
            yield from rows
