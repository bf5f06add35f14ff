"""Reading the event stream out of the audit log (policies/events.py maps each record; this reads them).

Records are read by sequence number. Appends serialize on the audit head row and commit in sequence order
(a record's successor cannot be appended before it commits), so "every record after N" read at any moment has
no holes that a later read could fill: a reader's cursor only moves forward, and never skips an event.
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import Table, bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from ledger.db import execute
from ledger.models import AuditEvent
from policies.events import Event, EventFilter, as_record, to_event

PAGE = 500
_EVENTS = cast(Table, AuditEvent.__table__)
_AFTER = (select(_EVENTS.c.seq, _EVENTS.c.ts, _EVENTS.c.actor, _EVENTS.c.kind, _EVENTS.c.agent_id, _EVENTS.c.tool,
                 _EVENTS.c.payload)
          .where(_EVENTS.c.seq > bindparam("after")).order_by(_EVENTS.c.seq).limit(bindparam("limit")))
_HEAD = select(func.coalesce(func.max(_EVENTS.c.seq), 0))


async def head_seq(connection: AsyncSession | AsyncConnection) -> int:
    """The last committed record's sequence number (0 on an empty log)."""
    return int((await execute(connection, _HEAD)).scalar_one())


async def events_after(connection: AsyncSession | AsyncConnection, after: int, *, limit: int = PAGE,
                       only: EventFilter | None = None) -> tuple[list[Event], int]:
    """The events of the next `limit` records after `after`, and the sequence number read up to (the cursor to
    continue from; it moves past records that are not events, or not wanted, too)."""
    rows: list[Any] = list((await execute(connection, _AFTER, {"after": after, "limit": limit})).all())
    events = [event for event in (to_event(as_record(row)) for row in rows)
              if event is not None and (only is None or only.matches(event))]
    return events, (rows[-1].seq if rows else after)
