"""The live feed's transport for browsers: the operators' event stream (server/events_ws.py) at
/console/events/ws, authenticated by the console session.

A browser cannot put an Authorization header on a WebSocket, so here the session cookie is the credential
(resolved by policies/operator_sessions.py, as on every console request: a logout, a disable or a token
rotation ends it), and the Origin must be this server's (a page on another site cannot open the stream with the
person's cookie: cross-site WebSocket hijacking). Past that, it is the same EventStream on the same hub as
/api/events/ws: replay from `since`, `replay.complete`, then live events.
"""

from __future__ import annotations

from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import urlsplit

from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket

from policies import operator_sessions
from policies.operators import OperatorIdentity
from server.events_ws import CLOSE_FORBIDDEN, CLOSE_UNAUTHORIZED, EventHub, EventStream, OperatorAuthenticator
from server.operator_auth import SESSION_COOKIE, RuntimeSource

PATH = "/console/events/ws"


def session_authenticator(runtime: RuntimeSource) -> OperatorAuthenticator:
    """The operator behind a console session id (None: unknown, ended, or the server is not running)."""

    async def authenticate(session_id: str) -> OperatorIdentity | None:
        running: Any = runtime()
        if running is None:
            return None
        async with running.sessions() as session:
            return await operator_sessions.resolve(session, session_id, now=running.clock())

    return authenticate


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers") or []:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _session_id(scope: Scope) -> str | None:
    raw = _header(scope, b"cookie")
    if not raw:
        return None
    try:
        morsel = SimpleCookie(raw).get(SESSION_COOKIE)
    except CookieError:
        return None
    return morsel.value if morsel is not None and morsel.value else None


class ConsoleEventStream:
    """ASGI (WebSocket): the event stream for a logged-in browser of this origin."""

    def __init__(self, hub: EventHub, runtime: RuntimeSource):
        self.stream = EventStream(hub, session_authenticator(runtime))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        origin = _header(scope, b"origin")
        if origin is None or urlsplit(origin).netloc != _header(scope, b"host"):
            await self._refuse(scope, receive, send, CLOSE_FORBIDDEN, "the stream is for this site's pages only")
            return
        session_id = _session_id(scope)
        if session_id is None:
            await self._refuse(scope, receive, send, CLOSE_UNAUTHORIZED, "log in to the console first")
            return
        # The stream reads its credential from the Authorization header: here it is the session id, checked by
        # session_authenticator (never by the operator-token registry), and nothing the client sent.
        headers = [(key, value) for key, value in scope.get("headers") or []
                   if key not in (b"authorization", b"cookie")]
        headers.append((b"authorization", b"Bearer " + session_id.encode("latin-1")))
        await self.stream({**scope, "headers": headers}, receive, send)

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send, code: int, reason: str) -> None:
        websocket = WebSocket(scope, receive, send)
        await websocket.accept()
        await websocket.close(code, reason)
