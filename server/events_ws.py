"""The operators' event stream: WebSocket at /api/events/ws (SPEC "Events").

`EventHub` (one per process) reads new audit records every POLL_SECONDS and hands each event to every
subscriber's bounded queue. Why a short poll of the audit table rather than LISTEN/NOTIFY: it is the same on
SQLite and PostgreSQL, costs one indexed range query per replica per tick whoever is connected (measured in
bench/events_bench.py: p99 lag well under a second across two replicas), and adds nothing to the commit of a
trade (NOTIFY takes a database-wide lock at commit). The audit table is the source either way.

A connection: the operator's bearer token is checked first (an agent's token is refused: close 4401; a role
without READ: 4403); then the events after `since` (from the database), then {"message_type":
"replay.complete"}, then live events. A client that cannot keep up fills its queue; the hub never waits for it:
the client is told ({"message_type": "stream.overflow", "event_id": N}) and disconnected (4429), and may
reconnect with since=N. Trading never waits for the stream: the hub only reads committed records.

`EventStreamApp` wraps any ASGI app, so the HTTP server and (later) `tradewarden console` mount the same stream.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from ledger.db import read
from policies.event_log import events_after, head_seq
from policies.events import REPLAY_COMPLETE, Event, EventFilter
from policies.operators import Action, OperatorIdentity
from tradewarden.log import get_logger

log = get_logger("tradewarden.events")

PATH = "/api/events/ws"
POLL_SECONDS = 0.1
QUEUE_SIZE = 1000  # events a connection may be behind before it is disconnected
SEND_TIMEOUT = 10.0  # a client that does not take a message in this long is dropped
CLOSE_UNAUTHORIZED, CLOSE_FORBIDDEN, CLOSE_BAD_REQUEST, CLOSE_BEHIND, CLOSE_UNAVAILABLE = 4401, 4403, 4400, 4429, 1013

OperatorAuthenticator = Callable[[str], Awaitable[OperatorIdentity | None]]
SessionsProvider = Callable[[], async_sessionmaker[AsyncSession] | None]


class Subscriber:
    def __init__(self, only: EventFilter, size: int = QUEUE_SIZE):
        self.only = only
        # (event, its envelope as JSON text: serialized once per event by the hub, not once per connection)
        self.queue: asyncio.Queue[tuple[Event, str]] = asyncio.Queue(maxsize=size)
        self.behind = asyncio.Event()  # set when an event could not be queued: the client fell behind

    def offer(self, event: Event, text: str) -> None:
        if self.behind.is_set() or not self.only.matches(event):
            return
        try:
            self.queue.put_nowait((event, text))
        except asyncio.QueueFull:
            self.behind.set()


class EventHub:
    """Polls the audit log for new records while anyone listens, and fans the events out."""

    def __init__(self, sessions: SessionsProvider, *, poll_seconds: float = POLL_SECONDS,
                 on_events: Callable[[list[Event]], None] | None = None):
        self._sessions = sessions
        self.poll_seconds = poll_seconds
        self.subscribers: set[Subscriber] = set()
        self.cursor: int | None = None
        self._task: asyncio.Task[None] | None = None
        self._on_events = on_events

    @property
    def sessions(self) -> async_sessionmaker[AsyncSession]:
        sessions = self._sessions()
        if sessions is None:
            raise RuntimeError("the server is not running yet")
        return sessions

    def subscribe(self, only: EventFilter, size: int = QUEUE_SIZE) -> Subscriber:
        subscriber = Subscriber(only, size)
        self.subscribers.add(subscriber)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="tradewarden-event-hub")
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self.subscribers.discard(subscriber)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def _run(self) -> None:
        while self.subscribers and self._sessions() is not None:
            try:
                await self.poll()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # the database is away for a moment: try again at the next tick
                log.warning("event_poll_failed", error=type(error).__name__)
            await asyncio.sleep(self.poll_seconds)
        self.cursor = None  # nobody listens: the next subscriber starts from the head again

    async def poll(self) -> int:
        """Read the records committed since the last poll and offer their events. Returns how many."""
        async with read(self.sessions) as connection:
            if self.cursor is None:
                self.cursor = await head_seq(connection)
                return 0
            found: list[Event] = []
            while True:
                events, self.cursor = await events_after(connection, self.cursor)
                found.extend(events)
                if not events:
                    break
        for event in found:
            text = _dumps(event.envelope())
            for subscriber in list(self.subscribers):
                subscriber.offer(event, text)
        if found and self._on_events is not None:
            self._on_events(found)
        return len(found)


def registry_authenticator(sessions: SessionsProvider) -> OperatorAuthenticator:
    """Operators' bearer tokens checked against the operators' registry (an agent's token is never one)."""
    from policies.operator_registry import authenticate as registry_authenticate

    async def authenticate(token: str) -> OperatorIdentity | None:
        factory = sessions()
        if factory is None:
            return None
        async with factory() as session:
            return await registry_authenticate(session, token)

    return authenticate


def _bearer(scope: Scope) -> str | None:
    for name, value in scope.get("headers") or []:
        if name == b"authorization":
            text = value.decode("latin-1")
            if text[:7].lower() == "bearer ":
                return text[7:].strip() or None
    return None


class BadQuery(ValueError):
    pass


def parse_query(raw: str) -> tuple[int | None, EventFilter]:
    """since=EVENT_ID, types=a,b, agent=ID; a bad value is a BadQuery with a one-line reason."""
    query = parse_qs(raw, keep_blank_values=False)
    since: int | None = None
    if "since" in query:
        try:
            since = int(query["since"][-1])
        except ValueError:
            raise BadQuery("INVALID_ARGUMENT: since must be an event id (an integer)") from None
        if since < 0:
            raise BadQuery("INVALID_ARGUMENT: since must not be negative")
    types = [t for value in query.get("types", []) for t in value.split(",")]
    agent = query.get("agent", [None])[-1]
    only = EventFilter.of(types, agent)
    if only.unknown_types():
        raise BadQuery(f"INVALID_ARGUMENT: unknown event type {only.unknown_types()[0]!r}")
    return since, only


def _dumps(message: dict[str, Any]) -> str:
    from policies.audit import canonical_json

    return canonical_json(message)


class EventStream:
    """One WebSocket connection's stream; independent of the app that mounts it."""

    def __init__(self, hub: EventHub, authenticate: OperatorAuthenticator):
        self.hub = hub
        self.authenticate = authenticate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        websocket = WebSocket(scope, receive, send)
        await websocket.accept()
        token = _bearer(scope)
        identity = await self._identity(token) if token else None
        if identity is None:
            await websocket.close(CLOSE_UNAUTHORIZED, "an operator's bearer token is required")
            return
        if not identity.may(Action.READ):
            await websocket.close(CLOSE_FORBIDDEN, f"operator {identity.name!r} may not read events")
            return
        try:
            since, only = parse_query(scope.get("query_string", b"").decode("latin-1"))
        except BadQuery as error:
            await websocket.close(CLOSE_BAD_REQUEST, str(error)[:120])
            return
        try:
            subscriber = self.hub.subscribe(only)
        except RuntimeError:
            await websocket.close(CLOSE_UNAVAILABLE, "the server is starting; try again")
            return
        log.info("event_stream_opened", operator=identity.name, since=since)
        listener = asyncio.create_task(self._until_closed(websocket))
        try:
            await self._stream(websocket, subscriber, since, only, listener)
        except (WebSocketDisconnect, TimeoutError, RuntimeError, OSError):
            pass
        finally:
            self.hub.unsubscribe(subscriber)
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await listener

    async def _identity(self, token: str) -> OperatorIdentity | None:
        try:
            return await self.authenticate(token)
        except Exception as error:
            log.warning("operator_authentication_failed", error=type(error).__name__)
            return None

    @staticmethod
    async def _until_closed(websocket: WebSocket) -> None:
        while True:  # the client sends nothing we need; this only notices it leaving
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return

    async def _send(self, websocket: WebSocket, message: dict[str, Any] | str) -> None:
        text = message if isinstance(message, str) else _dumps(message)
        await asyncio.wait_for(websocket.send_text(text), SEND_TIMEOUT)

    async def _stream(self, websocket: WebSocket, subscriber: Subscriber, since: int | None, only: EventFilter,
                      listener: asyncio.Task[None]) -> None:
        async with read(self.hub.sessions) as connection:
            cursor = await head_seq(connection) if since is None else since
            while since is not None:
                events, cursor = await events_after(connection, cursor, only=only)
                for event in events:
                    await self._send(websocket, event.envelope())
                if cursor >= await head_seq(connection):
                    break
        await self._send(websocket, {"message_type": REPLAY_COMPLETE, "event_id": cursor})
        while not listener.done():
            getter = asyncio.ensure_future(subscriber.queue.get())
            behind = asyncio.ensure_future(subscriber.behind.wait())
            done, _ = await asyncio.wait({getter, listener, behind}, return_when=asyncio.FIRST_COMPLETED)
            if getter not in done:
                getter.cancel()
            behind.cancel()
            if getter in done:
                event, text = getter.result()
                if event.event_id > cursor:
                    await self._send(websocket, text)
                    cursor = event.event_id
                continue
            if subscriber.behind.is_set():
                while not subscriber.queue.empty():  # send what was queued, then say where to resume
                    event, text = subscriber.queue.get_nowait()
                    if event.event_id > cursor:
                        await self._send(websocket, text)
                        cursor = event.event_id
                await self._send(websocket, {"message_type": "stream.overflow", "event_id": cursor,
                                             "message": f"the client fell behind; reconnect with since={cursor}"})
                await websocket.close(CLOSE_BEHIND, f"fell behind; reconnect with since={cursor}")
                return


class EventStreamApp:
    """ASGI wrapper: WebSocket requests to PATH go to the event stream, everything else to `app`."""

    def __init__(self, app: ASGIApp, stream: EventStream, path: str = PATH):
        self.app, self.stream, self.path = app, stream, path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and scope.get("path") == self.path:
            await self.stream(scope, receive, send)
            return
        await self.app(scope, receive, send)
