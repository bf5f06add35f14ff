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
- tradewarden_pending_approvals                     proposals waiting for a person
- tradewarden_agent_equity|daily_pnl|gross_exposure{agent}   the agent's book, positions at cost (no quotes
                                                    are fetched to be scraped)
- tradewarden_agent_limit_utilisation{agent, limit} daily_loss, drawdown, gross_exposure: share of the limit used
- tradewarden_webhook_delivery_failures{endpoint}   failed attempts; _failing_attempts: consecutive, now
From the audit log, counted by this process since its first scrape (every replica counts the same records):
- tradewarden_breaker_trips_total{agent}, tradewarden_halts_total{scope}, tradewarden_risk_alerts_total{code,
  severity}, tradewarden_agent_tool_calls_total{agent, tool, outcome}, tradewarden_agent_denials_total{agent, code}
Of the event stream (this process): tradewarden_event_lag_seconds, tradewarden_events_streamed_total.
Of the ledger (this process, ledger.db.UnitCounter): tradewarden_ledger_units_total (units of work begun),
tradewarden_ledger_commits_total (COMMITs: on SQLite one per group of units, ledger/group_commit.py).

Labels are bounded: tool names are the registered tools (else "other"), codes the stable violation codes
(else "OTHER"), agents the registered agents. No arguments, tokens or messages are ever exported.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from pydantic import BaseModel
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ledger.models import (
    GLOBAL_SCOPE,
    AgentAccount,
    AgentPermissions,
    AgentPosition,
    AgentTrade,
    AuditEvent,
    TradeProposal,
    TradingState,
    WebhookDelivery,
)
from policies.events import KIND_ALERT, KIND_PROPOSAL, RISK_ALERT, Event, as_record, to_event
from policies.gate import LIVE_TRADE_STATUSES, Gate, trading_day
from policies.violations import Code

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_CODE = re.compile(r"(?:^|;\s*)([A-Z][A-Z_]{2,}):")
_KNOWN_CODES = frozenset(c.value for c in Code)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class LedgerUnits:
    """Units of work and the COMMITs that ended them, in this process: fewer commits than units is group commit
    at work (ledger/group_commit.py)."""

    def collect(self) -> Iterable[Any]:
        from prometheus_client.core import CounterMetricFamily

        from ledger.db import UnitCounter

        yield CounterMetricFamily("tradewarden_ledger_units", "Units of work begun (write transactions).",
                                  value=UnitCounter.begun)
        yield CounterMetricFamily("tradewarden_ledger_commits", "COMMITs of units of work (SQLite: one per group).",
                                  value=UnitCounter.commits)


class Metrics:
    """One registry per server (not the process-global one), so several servers in one process (tests)
    never clash."""

    def __init__(self, tools: Iterable[str] = ()):
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(LedgerUnits())
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

        # From the shared database at scrape time (the same on every replica: aggregate with max, not sum).
        self.pending_approvals = Gauge("tradewarden_pending_approvals", "Proposals waiting for a person (database).",
                                       registry=self.registry)
        self.equity = Gauge("tradewarden_agent_equity", "Agent's equity: cash plus positions at cost (database).",
                            ["agent"], registry=self.registry)
        self.daily_pnl = Gauge("tradewarden_agent_daily_pnl", "Agent's P&L today, positions at cost (database).",
                               ["agent"], registry=self.registry)
        self.gross_exposure = Gauge("tradewarden_agent_gross_exposure", "Agent's gross exposure at cost (database).",
                                    ["agent"], registry=self.registry)
        self.limit_utilisation = Gauge("tradewarden_agent_limit_utilisation",
                                       "Share of a limit in use, 0..1+ (daily_loss, drawdown, gross_exposure).",
                                       ["agent", "limit"], registry=self.registry)
        self.webhook_failures = Gauge("tradewarden_webhook_delivery_failures",
                                      "Failed webhook delivery attempts, all replicas (database).", ["endpoint"],
                                      registry=self.registry)
        self.webhook_failing = Gauge("tradewarden_webhook_failing_attempts",
                                     "Consecutive failed attempts at an endpoint's next event (0: healthy).",
                                     ["endpoint"], registry=self.registry)
        # Counted by this process from the audit log since its first scrape (every replica counts the same
        # records: aggregate with max, not sum).
        self.breaker_trips = Counter("tradewarden_breaker_trips", "Circuit breaker trips, by agent.", ["agent"],
                                     registry=self.registry)
        self.halts = Counter("tradewarden_halts", "Halts (trading_state to halted), by scope.", ["scope"],
                             registry=self.registry)
        self.risk_alerts = Counter("tradewarden_risk_alerts", "agent.risk.alert events, by code and severity.",
                                   ["code", "severity"], registry=self.registry)
        self.agent_calls = Counter("tradewarden_agent_tool_calls", "Tool calls by agent, tool and outcome "
                                   "(audit log).", ["agent", "tool", "outcome"], registry=self.registry)
        self.agent_denials = Counter("tradewarden_agent_denials", "Violation codes of refused or rejected calls, "
                                     "by agent (audit log).", ["agent", "code"], registry=self.registry)
        self._audit_cursor: int | None = None
        self._agents: set[str] = set()

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

    def _agent(self, agent_id: str | None) -> str:
        return agent_id if agent_id in self._agents else "other"

    async def refresh_agents(self, gate: Gate) -> None:
        """Per-agent book and limit gauges, pending approvals and webhook delivery (all from the database)."""
        now = gate.clock()
        today = trading_day(now)
        async with gate.sessions() as session:
            agents = list((await session.execute(select(AgentPermissions))).scalars())
            accounts = {a.agent_id: a for a in (await session.execute(select(AgentAccount))).scalars()}
            positions = list((await session.execute(select(AgentPosition).where(AgentPosition.qty != 0))).scalars())
            pending = (await session.execute(select(func.count()).select_from(TradeProposal)
                                             .where(TradeProposal.status == "pending_approval"))).scalar_one()
            deliveries = list((await session.execute(select(WebhookDelivery))).scalars())
        self._agents = {a.agent_id for a in agents}
        self.pending_approvals.set(pending)
        for gauge in (self.equity, self.daily_pnl, self.gross_exposure, self.limit_utilisation):
            gauge.clear()
        for row in agents:
            limits = gate.agent_from_row(row).limits
            held = [p for p in positions if p.agent_id == row.agent_id]
            at_cost = sum((p.qty * p.avg_entry_price for p in held), Decimal(0))
            gross = sum((abs(p.qty * p.avg_entry_price) for p in held), Decimal(0))
            account = accounts.get(row.agent_id)
            cash = account.cash if account else limits.capital
            equity = cash + at_cost
            start = account.day_start_equity if account and account.day == today else equity
            peak = max(account.equity_peak if account else equity, equity)
            pnl = equity - start
            self.equity.labels(row.agent_id).set(float(equity))
            self.daily_pnl.labels(row.agent_id).set(float(pnl))
            self.gross_exposure.labels(row.agent_id).set(float(gross))
            use = self.limit_utilisation
            use.labels(row.agent_id, "daily_loss").set(_share(max(Decimal(0), -pnl), limits.daily_loss_limit))
            drawdown = (peak - equity) / peak * 100 if peak > 0 else Decimal(0)
            use.labels(row.agent_id, "drawdown").set(_share(drawdown, limits.max_drawdown_pct))
            use.labels(row.agent_id, "gross_exposure").set(_share(gross, limits.max_gross_exposure))
        for delivery in deliveries:
            self.webhook_failures.labels(delivery.endpoint).set(delivery.failures)
            self.webhook_failing.labels(delivery.endpoint).set(delivery.attempts)

    async def refresh_from_audit(self, sessions: async_sessionmaker[AsyncSession], max_records: int = 20000) -> None:
        """Count what the audit log recorded since the last scrape (from the head at the first one)."""
        from ledger.db import read
        from policies.event_log import head_seq

        async with read(sessions) as connection:
            if self._audit_cursor is None:
                self._audit_cursor = await head_seq(connection)
                return
            rows = list((await connection.execute(
                select(AuditEvent.seq, AuditEvent.ts, AuditEvent.actor, AuditEvent.kind, AuditEvent.agent_id,
                       AuditEvent.tool, AuditEvent.payload)
                .where(AuditEvent.seq > self._audit_cursor).order_by(AuditEvent.seq).limit(max_records))).all())
        for row in rows:
            self._count(row)
        if rows:
            self._audit_cursor = rows[-1].seq

    def _count(self, row: Any) -> None:
        agent = self._agent(row.agent_id)
        if row.kind in _CALL_OUTCOMES and row.tool:
            self.agent_calls.labels(agent, self.tool_label(row.tool), _CALL_OUTCOMES[row.kind]).inc()
        if row.kind == "tool.denied" or row.kind == KIND_PROPOSAL or row.kind == "trading_state.changed" or \
                row.kind in _ALERT_KINDS:
            try:
                data = json.loads(row.payload)
            except ValueError:
                return
            if row.kind == "tool.denied":
                codes = data.get("codes") or []
            elif row.kind == KIND_PROPOSAL:
                codes = data.get("violations") or []
            else:
                codes = []
            for code in codes:
                self.agent_denials.labels(agent, code if code in _KNOWN_CODES else "OTHER").inc()
            if row.kind == "trading_state.changed":
                if row.actor == "system:circuit-breaker":
                    self.breaker_trips.labels(agent).inc()
                if data.get("state") == "halted":
                    self.halts.labels("*" if data.get("scope") == "*" else agent).inc()
            event = to_event(as_record(row))
            if event is not None and event.message_type == RISK_ALERT:
                code = str(event.payload.get("code"))
                self.risk_alerts.labels(code if code in _ALERT_CODES else "OTHER",
                                        str(event.payload.get("severity"))).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _share(used: Decimal, limit: Decimal) -> float:
    return float(used / limit) if limit > 0 else 0.0


_CALL_OUTCOMES = {"tool.outcome": "ok", "tool.denied": "denied", "tool.failed": "error",
                  "tool.rate_limited": "denied"}
_ALERT_KINDS = frozenset({"reconcile.drift", KIND_ALERT})
# Every code an agent.risk.alert can carry (a bounded label set).
_ALERT_CODES = frozenset({
    "CIRCUIT_BREAKER_TRIPPED", "DENIAL_STORM", "TRADING_HALTED", "TRADING_RESUMED", "REDUCE_ONLY",
    "DEAD_MAN_REDUCE_ONLY", "DEAD_MAN_LIFTED", "RECONCILIATION_DRIFT", "RECONCILIATION_DRIFT_CLEARED",
    "DAILY_LOSS_LIMIT", "DRAWDOWN_LIMIT", "BROKER_UNAVAILABLE", "BROKER_AVAILABLE", "RECONCILIATION_STALE",
    "RECONCILIATION_HEALTHY", "APPROVAL_EXPIRING"})


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
