"""Who is calling the operator API or the console: an operator's bearer token, or a console session cookie.

Both end in `policies` (operator_registry.authenticate, operator_sessions.resolve); an agent's token is never an
operator's. A bearer token is sent deliberately by a program, so it needs no CSRF token; a session cookie is
sent by the browser on its own, so every state change made with one must carry the session's CSRF token (a
header `X-CSRF-Token` or a form field `csrf`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import HTTPConnection

from policies import operator_sessions
from policies.operator_registry import authenticate
from policies.operators import OperatorIdentity
from tradewarden.log import get_logger

log = get_logger("tradewarden.operator_auth")

SESSION_COOKIE = "tw_console"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf"
RuntimeSource = Callable[[], Any]  # the open Runtime, or None while the server starts or stops


@dataclass(frozen=True)
class Caller:
    identity: OperatorIdentity
    session_id: str | None  # None: a bearer token

    @property
    def csrf_token(self) -> str | None:
        return operator_sessions.csrf_token(self.session_id) if self.session_id else None

    def csrf_ok(self, given: str | None) -> bool:
        if self.session_id is None:
            return True
        return operator_sessions.csrf_matches(self.session_id, given)


def bearer_token(connection: HTTPConnection) -> str | None:
    header = connection.headers.get("authorization")
    if header is None:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


async def identify(connection: HTTPConnection, runtime: Any) -> Caller | None:
    """The operator calling, or None. A request that presents an Authorization header is judged by it alone
    (a bad token is not rescued by a cookie)."""
    token = bearer_token(connection)
    try:
        async with runtime.sessions() as session:
            if token is not None:
                identity = await authenticate(session, token) if token else None
                return Caller(identity, None) if identity is not None else None
            session_id = connection.cookies.get(SESSION_COOKIE)
            if not session_id:
                return None
            identity = await operator_sessions.resolve(session, session_id, now=runtime.clock())
            return Caller(identity, session_id) if identity is not None else None
    except Exception as error:  # never let an authentication failure become a 500 that leaks details
        log.warning("operator_identify_failed", error=type(error).__name__)
        return None


def is_https(connection: HTTPConnection, public_url: str | None) -> bool:
    return connection.url.scheme in ("https", "wss") or bool(public_url and public_url.startswith("https://"))
