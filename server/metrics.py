"""Prometheus metrics of the HTTP server, served at GET /metrics (no token needed: nothing secret in it).

Per process (each replica is scraped on its own):
- tradewarden_tool_calls_total{tool, outcome}       outcome: ok | denied | error | input_required
- tradewarden_tool_denials_total{code}              one per violation code in a refused or rejected call
- tradewarden_tool_call_duration_seconds{tool}      latency histogram of tool calls (in the server)
- tradewarden_http_unauthorized_total               requests refused with 401 (no or bad bearer token)
From the shared database at scrape time (the same on every replica: aggregate with max, not sum):
- tradewarden_open_orders{agent}                    orders that may still fill
- tradewarden_trading_halted                        1 while trading is halted for everyone
- tradewarden_agents_halted                         agents halted or reducing on their own

Labels are bounded: tool names are the registered tools (else "other"), codes the stable violation codes
(else "OTHER"), agents the registered agents. No arguments, tokens or messages are ever exported.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from pydantic import BaseModel
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ledger.models import GLOBAL_SCOPE, AgentTrade, TradingState
from policies.events import Event
from policies.gate import LIVE_TRADE_STATUSES
from policies.violations import Code

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_CODE = re.compile(r"(?:^|;\s*)([A-Z][A-Z_]{2,}):")
_KNOWN_CODES = frozenset(c.value for c in Code)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    """One registry per server (not the process-global one), so several servers in one process (tests)
    never clash."""

    def __init__(self, tools: Iterable[str] = ()):
        self.registry = CollectorRegistry(auto_describe=True)
        self.tools = set(tools)
        self.tool_calls = Counter("tradewarden_tool_calls", "Tool calls by tool and outcome.",
                                  ["tool", "outcome"], registry=self.registry)
        self.denials = Counter("tradewarden_tool_denials", "Violation codes of refused or rejected tool calls.",
                               ["code"], registry=self.registry)
        self.latency = Histogram("tradewarden_tool_call_duration_seconds", "Tool call latency in the server.",
                                 ["tool"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.unauthorized = Counter("tradewarden_http_unauthorized", "HTTP requests refused with 401.",
                                    registry=self.registry)
        self.open_orders = Gauge("tradewarden_open_orders", "Orders that may still fill, by agent (database).",
                                 ["agent"], registry=self.registry)
        self.halted = Gauge("tradewarden_trading_halted", "1 while trading is halted for everyone (database).",
                            registry=self.registry)
        self.agents_halted = Gauge("tradewarden_agents_halted",
                                   "Agents halted or reducing on their own (database).", registry=self.registry)

        self.event_lag = Gauge("tradewarden_event_lag_seconds",
                               "Seconds from an audit record's time to its event being read for the stream "
                               "(newest event of the last read).", registry=self.registry)
        self.events_streamed = Counter("tradewarden_events_streamed", "Events read for the operators' stream.",
                                       registry=self.registry)

    def observe_events(self, events: Sequence[Event]) -> None:
        if events:
            self.events_streamed.inc(len(events))
            self.event_lag.set(max(0.0, (datetime.now(UTC) - events[-1].timestamp).total_seconds()))

    def tool_label(self, name: Any) -> str:
        return name if isinstance(name, str) and name in self.tools else "other"

    def observe(self, tool: str, seconds: float, outcome: str, codes: Iterable[str]) -> None:
        self.tool_calls.labels(tool, outcome).inc()
        self.latency.labels(tool).observe(seconds)
        for code in codes:
            self.denials.labels(code if code in _KNOWN_CODES else "OTHER").inc()

    async def refresh_from_database(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        async with sessions() as session:
            open_rows = (await session.execute(
                select(AgentTrade.agent_id, func.count()).where(AgentTrade.status.in_(LIVE_TRADE_STATUSES))
                .group_by(AgentTrade.agent_id))).all()
            states = list((await session.execute(select(TradingState))).scalars())
        self.open_orders.clear()
        for agent_id, count in open_rows:
            self.open_orders.labels(agent_id).set(count)
        self.halted.set(int(any(s.scope == GLOBAL_SCOPE and s.state == "halted" for s in states)))
        self.agents_halted.set(sum(1 for s in states if s.scope != GLOBAL_SCOPE and s.state != "active"))

    def render(self) -> bytes:
        return generate_latest(self.registry)


def outcome_of(result: Any) -> tuple[str, list[str]]:
    """(outcome, violation codes) of a tools/call result, whatever shape the SDK hands the middleware."""
    if isinstance(result, BaseModel):
        data: Mapping[str, Any] = result.model_dump(by_alias=True, exclude_none=True)
    elif isinstance(result, Mapping):
        data = result
    else:
        return "ok", []
    if "inputRequests" in data or data.get("resultType") == "input_required":
        return "input_required", []
    if data.get("isError") or data.get("is_error"):
        text = " ".join(str(part.get("text", "")) for part in data.get("content") or [] if isinstance(part, Mapping))
        codes = [c for c in _CODE.findall(text) if c in _KNOWN_CODES]
        return ("denied" if codes else "error"), codes
    structured = data.get("structuredContent") or data.get("structured_content") or {}
    violations = structured.get("violations") if isinstance(structured, Mapping) else None
    codes = [str(v.get("code")) for v in violations or [] if isinstance(v, Mapping) and v.get("code")]
    return ("denied" if codes else "ok"), codes


class MetricsMiddleware:
    """MCP server middleware: times every tool call and counts its outcome and violation codes."""

    def __init__(self, metrics: Metrics, tools: Callable[[], Awaitable[Iterable[str]]] | None = None):
        self.metrics = metrics
        self._tools = tools

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if ctx.method != "tools/call" or ctx.request_id is None:
            return await call_next(ctx)
        if self._tools is not None:  # the registered tool names, once (labels stay bounded)
            self.metrics.tools.update(await self._tools())
            self._tools = None
        tool = self.metrics.tool_label(ctx.params.get("name") if ctx.params else None)
        started = time.perf_counter()
        try:
            result = await call_next(ctx)
        except Exception:
            self.metrics.observe(tool, time.perf_counter() - started, "error", [])
            raise
        outcome, codes = outcome_of(result)
        self.metrics.observe(tool, time.perf_counter() - started, outcome, codes)
        return result
