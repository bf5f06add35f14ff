"""Per-agent request rate limiting over HTTP: at most `server.requests_per_minute` tool calls per agent in
any 60 seconds, per server process.

The limit is enforced in MCP middleware, before the tool runs: a call over the limit gets a tool error whose
text starts with RATE_LIMITED (like every other denial) and says when to retry, and leaves an audit record
(`tool.rate_limited`). Calls that were refused do not use up the allowance. Only `tools/call` is limited;
listing tools or reading resources is not.

Several replicas behind a load balancer each keep their own window: with N replicas an agent can make up to
N × requests_per_minute calls a minute in total (docs/PRODUCTION.md). Trading limits are not affected: they
are held by the database, across replicas.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.types import CallToolResult, TextContent

from policies.violations import Code
from tradewarden.log import get_logger

log = get_logger("tradewarden.ratelimit")
WINDOW_SECONDS = 60.0


class RateLimiter:
    """A sliding window per key: exactly `per_minute` hits in any WINDOW_SECONDS, never more."""

    def __init__(self, per_minute: int, *, clock: Callable[[], float] = time.monotonic):
        if per_minute < 1:
            raise ValueError("per_minute must be at least 1")
        self.per_minute = per_minute
        self.clock = clock
        self._hits: dict[str, deque[float]] = {}

    def hit(self, key: str) -> float | None:
        """Count one request for `key`. None: allowed. A number: refused, retry after that many seconds."""
        now = self.clock()
        hits = self._hits.setdefault(key, deque())
        while hits and now - hits[0] >= WINDOW_SECONDS:
            hits.popleft()
        if len(hits) >= self.per_minute:
            return max(WINDOW_SECONDS - (now - hits[0]), 0.001)
        hits.append(now)
        return None

    def forget_idle(self) -> None:
        """Drop keys with no hit in the window (memory stays proportional to active agents)."""
        now = self.clock()
        for key in [k for k, v in self._hits.items() if not v or now - v[-1] >= WINDOW_SECONDS]:
            del self._hits[key]


class RateLimitMiddleware:
    """MCP server middleware: refuses an agent's tool calls over its per-minute allowance, audited.
    The agent is the one its bearer token names (no token: nothing to limit here; the gate refuses it)."""

    def __init__(self, limiter: RateLimiter):
        self.limiter = limiter
        self._calls = 0

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if ctx.method != "tools/call" or ctx.request_id is None:
            return await call_next(ctx)
        token = get_access_token()
        if token is None:
            return await call_next(ctx)
        agent_id = token.client_id
        self._calls += 1
        if self._calls % 1000 == 0:
            self.limiter.forget_idle()
        retry_after = self.limiter.hit(agent_id)
        if retry_after is None:
            return await call_next(ctx)
        tool = ctx.params.get("name") if ctx.params else None
        tool_name = tool[:48] if isinstance(tool, str) else None
        seconds = math.ceil(retry_after)
        message = (f"{Code.RATE_LIMITED.value}: more than {self.limiter.per_minute} tool calls in the last minute "
                   f"for agent {agent_id}; retry in {seconds}s")
        state = ctx.lifespan_context
        try:
            await state.gate.record(actor=f"agent:{agent_id}", kind="tool.rate_limited", tool=tool_name,
                                    agent_id=agent_id,
                                    payload={"code": Code.RATE_LIMITED.value, "tool": tool_name,
                                             "requests_per_minute": self.limiter.per_minute,
                                             "retry_after_seconds": seconds})
        except Exception as error:  # the refusal stands even if the record cannot be written
            log.error("rate_limit_audit_failed", agent=agent_id, error=type(error).__name__)
        log.info("rate_limited", agent=agent_id, tool=tool_name, retry_after=seconds)
        return CallToolResult(content=[TextContent(type="text", text=message)], is_error=True)
