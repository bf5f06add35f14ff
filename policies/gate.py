"""The gate: the one pipeline every tool call passes.

identity → trading state and permissions → risk checks → approval → audit intent → broker → audit outcome.

The checks themselves are pure (policies/checks.py); this module gathers their inputs (database, broker,
clock), makes the decision atomic with its reservation, and records everything in the audit log.
Nothing reaches the broker except through `Gate.execute` (orders) and `Gate.cancel` (cancels).
"""

from __future__ import annotations

import asyncio
import hashlib
import operator
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, NoReturn, Protocol, TypeVar, cast
from zoneinfo import ZoneInfo

from pydantic import BaseModel
from sqlalchemy import Row, Table, and_, bindparam, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker
from sqlalchemy.sql.elements import ColumnElement

from broker.base import (
    OPEN_STATUSES,
    Account,
    Asset,
    Broker,
    BrokerError,
    BrokerOrder,
    MarketClock,
    Quote,
    SubmitOrder,
)
from ledger import shared_unit, traded
from ledger.accounting import (
    Book,
    Held,
    account_row,
    apply_order_update,
    book_fill,
    fill_delta,
    held_of,
    order_changes,
    position_after_fill,
    trade_with_holdings,
)
from ledger.db import execute, insert_if_absent, read, transaction
from ledger.fast_execute import prebuilt_statements, share_rows
from ledger.ids import new_random_id
from ledger.legs import LIVE_LEG_STATUSES, PARENTS_OF_LIVE_LEGS, apply_leg_updates, legs_of
from ledger.models import (
    GLOBAL_SCOPE,
    AgentAccount,
    AgentOrderLeg,
    AgentPermissions,
    AgentPosition,
    AgentTrade,
    Approval,
    AuditEvent,
    KeyValue,
    TradeProposal,
    TradingState,
)
from ledger.rows import loaded_values, transient
from ledger.usage import count_denials, load_usage, persist_marks
from policies import alerts, audit, bindings, event_kinds, secrets
from policies.approval import ApprovalPolicy, ClientDecision, approval_for, default_policy
from policies.breakers import breaker_decision
from policies.checks import CheckInput, Pricing, TradingStatus, Usage, price_order, run_checks
from policies.failures import bounded, broker_unavailable, ledger_failure
from policies.limits import EffectiveLimits, effective_limits
from policies.market_hours import calendar_clock, market_open_or_none, next_open_or_none
from policies.orders import OrderRequest, exits_from_json
from policies.sent import wire_dump
from policies.sizing import with_size_hint
from policies.violations import Code, GateDenied, Violation, deny
from tradewarden.log import get_logger

log = get_logger("tradewarden.gate")
NEW_YORK = ZoneInfo("America/New_York")
R = TypeVar("R")
T = TypeVar("T")  # what a read call found in the ledger (Gate.handle_read)

# Our trade statuses in which the order may still fill: they hold their reservation.
LIVE_TRADE_STATUSES = frozenset(OPEN_STATUSES | {"pending_submit", "unknown"})
ACCOUNT_MAX_AGE = 1.0  # seconds


# Statements on the path of every call, built once (building a statement costs more than running it on SQLite),
# on the tables rather than the mapped classes: the same SQL (tests/policies/test_gate_statements.py), compiled
# without the ORM's per-entity step and the mapper configuration it asks for first (a server's first call).
_PERMISSIONS = cast(Table, AgentPermissions.__table__)
_POSITIONS = cast(Table, AgentPosition.__table__)
_STATES = cast(Table, TradingState.__table__)
# The agent's permissions, once per symbol it holds (or once with symbol NULL): one trip for both. Its rows are
# shared between calls that read the same values (fast_execute.share_rows): nothing here changes a row's values
# (_identify keeps them as they are, agent_from_row copies what it keeps).
_AGENT_AND_HOLDINGS = share_rows(
    select(_PERMISSIONS, _POSITIONS.c.symbol.label("held_symbol"))
    .select_from(_PERMISSIONS)
    .outerjoin(_POSITIONS, and_(_POSITIONS.c.agent_id == _PERMISSIONS.c.agent_id, _POSITIONS.c.qty != 0))
    .where(_PERMISSIONS.c.agent_id == bindparam("agent_id"))
)
_STATE_ROWS = select(TradingState.__table__).where(or_(TradingState.__table__.c.scope == GLOBAL_SCOPE,
                                                       TradingState.__table__.c.scope == bindparam("agent_id")))
_PERMISSION_NAMES = tuple(column.name for column in _PERMISSIONS.c)
_ENABLED = _PERMISSION_NAMES.index("enabled")
_stored_permissions = operator.attrgetter(*_PERMISSION_NAMES)  # one C call per identification, not a generator


def _stored_of(row: Any) -> tuple[Any, ...]:
    """The stored permissions of an agent's row, in _PERMISSION_NAMES order. A result row here is one of the
    identity statements' (their columns begin with the permissions, checked below): a slice, in C, rather than
    a dozen lookups by name (~4 µs on a result row); anything else (a model object) by name."""
    return row[:_PERMISSION_COUNT] if isinstance(row, Row) else _stored_permissions(row)


_PERMISSION_COUNT = len(_PERMISSION_NAMES)


def _state_of(column: Any, scope: Any) -> Any:
    return select(column).where(TradingState.__table__.c.scope == scope).scalar_subquery()


# A proposal's unit of work identifies the agent (permissions, holdings) and reads the trading state, global and
# its own, in one statement (NULL state: no row, i.e. active).
_AGENT_HOLDINGS_AND_STATE = share_rows(_AGENT_AND_HOLDINGS.add_columns(
    _state_of(_STATES.c.state, GLOBAL_SCOPE).label("global_state"),
    _state_of(_STATES.c.reason, GLOBAL_SCOPE).label("global_reason"),
    _state_of(_STATES.c.state, bindparam("agent_id")).label("agent_state"),
    _state_of(_STATES.c.reason, bindparam("agent_id")).label("agent_reason")))
for _identity_statement in (_AGENT_AND_HOLDINGS, _AGENT_HOLDINGS_AND_STATE):  # what _stored_of relies on
    # Checked at import, not asserted: `python -O` drops asserts, and a wrong slice would misread every agent.
    if tuple(_identity_statement.selected_columns.keys()[:_PERMISSION_COUNT]) != _PERMISSION_NAMES:
        raise RuntimeError("the identity statements' first columns must be the agent's permissions, in order")
_INSERT_PROPOSAL = insert(cast(Table, TradeProposal.__table__))
_INSERT_APPROVAL = insert(cast(Table, Approval.__table__))
# PostgreSQL: the decision's first locks, global trading state then the agent's permissions (ledger/db.py).
_LOCK_GLOBAL_STATE = (select(TradingState.__table__.c.scope).where(TradingState.__table__.c.scope == GLOBAL_SCOPE)
                      .with_for_update())
_LOCK_PERMISSIONS = (select(_PERMISSIONS.c.agent_id).where(_PERMISSIONS.c.agent_id == bindparam("agent_id"))
                     .with_for_update())
# An execution's statements (Gate.execute): a proposal with its trade (same id) in one read, and with the
# payload of the audit record that binds the proposal (policies/bindings.py) in the unit that reserves.
_PROPOSALS = cast(Table, TradeProposal.__table__)
_TRADES = cast(Table, AgentTrade.__table__)
_RECORDS = cast(Table, AuditEvent.__table__)
_PROPOSAL_NAMES = tuple(column.name for column in _PROPOSALS.c)
_TRADE_NAMES = tuple(column.name for column in _TRADES.c)
_PROPOSAL_AND_TRADE = (
    select(_PROPOSALS, *(column.label(f"trade_{column.name}") for column in _TRADES.c))
    .select_from(_PROPOSALS.outerjoin(_TRADES, _TRADES.c.id == _PROPOSALS.c.id))
    .where(_PROPOSALS.c.id == bindparam("proposal_id"))
)
_PROPOSAL_TRADE_AND_RECORD = (
    _PROPOSAL_AND_TRADE.add_columns(_RECORDS.c.payload.label("record_payload"))
    .outerjoin(_RECORDS, _RECORDS.c.event_id == _PROPOSALS.c.audit_event_id)
)
# ... and, in the same trip, its latest approval with the payload of the record that binds that approval:
# everything unit (a) checks before deciding (bindings.bound_problem).
_APPROVALS = cast(Table, Approval.__table__)
_APPROVAL_NAMES = tuple(column.name for column in _APPROVALS.c)
_APPROVAL_RECORDS = cast(Table, AuditEvent.__table__).alias("approval_records")
_EARLIER_APPROVALS = _APPROVALS.alias("earlier_approvals")
_LATEST_APPROVAL_ID = (select(func.max(_EARLIER_APPROVALS.c.id))
                       .where(_EARLIER_APPROVALS.c.proposal_id == _PROPOSALS.c.id,
                              _EARLIER_APPROVALS.c.decision == "approved")
                       .correlate(_PROPOSALS).scalar_subquery())
_PROPOSAL_TO_EXECUTE = (
    _PROPOSAL_TRADE_AND_RECORD
    .add_columns(*(column.label(f"approval_{column.name}") for column in _APPROVALS.c),
                 _APPROVAL_RECORDS.c.payload.label("approval_record_payload"))
    .outerjoin(_APPROVALS, _APPROVALS.c.id == _LATEST_APPROVAL_ID)
    .outerjoin(_APPROVAL_RECORDS, _APPROVAL_RECORDS.c.event_id == _APPROVALS.c.audit_event_id)
)
_EXPIRE = (update(_PROPOSALS)
           .where(_PROPOSALS.c.id == bindparam("pid"), _PROPOSALS.c.status.in_(["approved", "pending_approval"]))
           .values(status="expired", updated_at=bindparam("now")))
_REJECT = (update(_PROPOSALS).where(_PROPOSALS.c.id == bindparam("pid"), _PROPOSALS.c.status == "approved")
           .values(status="rejected", violations=bindparam("new_violations", type_=_PROPOSALS.c.violations.type),
                   updated_at=bindparam("now")))
_MARK_EXECUTING = (update(_PROPOSALS).where(_PROPOSALS.c.id == bindparam("pid"), _PROPOSALS.c.status == "approved")
                   .values(status="executing", updated_at=bindparam("now")))
_MARK_EXECUTED = (update(_PROPOSALS).where(_PROPOSALS.c.id == bindparam("pid"))
                  .values(status="executed", updated_at=bindparam("now")))
_INSERT_TRADE = insert(_TRADES)
# What a broker's answer changes on a trade row, read under lock before it is applied.
_TRADE_MUTABLE = ("order_id", "price", "filled_qty", "status", "reject_reason", "submitted_at", "executed_at",
                  "updated_at", "window_micros")
_TRADE_STATE_LOCKED = (select(*(_TRADES.c[name] for name in _TRADE_MUTABLE))
                       .where(_TRADES.c.id == bindparam("trade_id")).with_for_update())
# SQLite (its writers are serialized: nothing to lock): with the agent's position and cash, in the same read.
_TRADE_STATE_AND_HOLDINGS = trade_with_holdings(_TRADE_MUTABLE)
_UPDATE_TRADE = (update(_TRADES).where(_TRADES.c.id == bindparam("trade_id"))
                 .values(**{name: bindparam(f"new_{name}") for name in _TRADE_MUTABLE}))
_ACCOUNTS = cast(Table, AgentAccount.__table__)
_ACCOUNT_CASH = select(_ACCOUNTS.c.cash).where(_ACCOUNTS.c.agent_id == bindparam("agent_id"))


def _live_rows_of(agent_id: Any, statuses: frozenset[str], trades: Any = AgentTrade) -> ColumnElement[bool]:
    """An agent's live orders and its entries whose exits still work, found from the live rows alone: by
    (agent_id, status) and, for the parents of live legs, by primary key. The agent's condition is wrapped in
    coalesce() in the second branch: left bare in both, SQLite factors it out of the OR and walks every row
    the agent ever had by (agent_id, created_at) (migration 0010; tests/ledger/test_history_indexes.py).
    trades: the mapped class (ORM reads) or the table's columns (Core statements); agent_id a value or a
    bindparam."""
    return or_(and_(trades.agent_id == agent_id, trades.status.in_(sorted(statuses))),
               and_(trades.id.in_(PARENTS_OF_LIVE_LEGS),
                    func.coalesce(trades.agent_id, trades.agent_id) == agent_id))


# get_positions' reads: the agent's positions (snapshots, nothing is written through them), and whether it has an
# order the broker may still move (the rows Gate.live_trades reads, on the table's columns), of which the usual
# answer is none, so the ORM's read of those orders runs only when there are some.
_POSITIONS_OF_AGENT = select(_POSITIONS).where(_POSITIONS.c.agent_id == bindparam("agent_id")).order_by(
    _POSITIONS.c.symbol)
_ANY_LIVE_TRADE_OF_AGENT = (select(_TRADES.c.id)
                            .where(_live_rows_of(bindparam("agent_id"), LIVE_TRADE_STATUSES - {"pending_submit"},
                                                 _TRADES.c))
                            .limit(1))


@dataclass
class CallRecord:
    """The tool call in progress, for its audit records."""

    tool: str
    agent_id: str | None
    args: Mapping[str, Any]
    ts: datetime
    intent_recorded: bool = False
    outcome_recorded: bool = False
    staged_outcome: audit.Entry | None = None  # to be committed by the unit of work in progress
    # The identity the call began with when it came from the gate's last identification of the agent rather
    # than a read of its own: checked against the ledger by the call's first unit of work (Gate.handle).
    unverified: Agent | None = None

    @property
    def actor(self) -> str:
        return f"agent:{self.agent_id}" if self.agent_id else "agent:?"

    def intent(self) -> audit.Entry:
        return self.entry("tool.intent", {"args": bounded(self.args)}, self.ts)

    def entry(self, kind: str, payload: Mapping[str, Any], ts: datetime, event_id: str | None = None) -> audit.Entry:
        return audit.Entry(ts=ts, actor=self.actor, kind=kind, payload=payload, agent_id=self.agent_id,
                           tool=self.tool, event_id=event_id)


class _StaleIdentity(Exception):
    """A call begun on the gate's last identity of its agent found it changed (Gate.handle)."""


class _HoldingsMoved(Exception):
    """The agent holds a symbol its proposal's snapshot did not quote (Gate.propose)."""

    def __init__(self, held: frozenset[str]) -> None:
        super().__init__("holdings changed")
        self.held = held


# The call in progress in this task (and the tasks it starts): the gate's units of work record its intent.
_current_call: ContextVar[CallRecord | None] = ContextVar("tradewarden_current_call", default=None)
# The records of the unit of work in progress, appended when its work is done.
_unit_records: ContextVar[list[audit.Entry] | None] = ContextVar("tradewarden_unit_records", default=None)


# The last agent and proposal this task read (an approval resolver reads both just before execute_trade's
# body runs, in the same task), with when: the gate's execution reuses them instead of reading them again. Only
# where the unit of work that decides reads both again under its locks (Gate.execute), and only while fresh.
RECENT_READ_SECONDS = 0.5
_recent_agent: ContextVar[tuple[float, str, Any, frozenset[str]] | None] = ContextVar(
    "tradewarden_recent_agent", default=None)
_recent_proposal: ContextVar[tuple[float, str, str, TradeProposal, AgentTrade | None] | None] = ContextVar(
    "tradewarden_recent_proposal", default=None)
# A proposal this gate stored approved by policy is executed without a read before its units of work (Gate.
# approved_unread): nobody is asked about an approved proposal, and the unit that decides reads the agent and the
# proposal again under its locks. The gate's notes of such proposals are bounded in number and age, and taken once.
APPROVED_NOTE_SECONDS = 30.0
_APPROVED_NOTES_MAX = 1024
# The agent (id) whose execution this task begins on its last identity, unread (set with the proposal's note).
_unread_agent: ContextVar[tuple[float, str] | None] = ContextVar("tradewarden_unread_agent", default=None)


def _staged_records() -> list[audit.Entry]:
    records = _unit_records.get()
    assert records is not None, "only inside a unit of work"
    return records


class AgentRecord(Protocol):
    """An agent's stored permissions: an AgentPermissions object or a row of its table."""

    agent_id: str
    enabled: bool
    max_trade_size: Decimal
    max_position_size: Decimal
    max_daily_trades: int
    allowed_symbols: list[Any]
    allowed_strategies: list[Any]
    risk_level: str
    approval: str
    auto_approve_max_notional: Decimal
    limits: dict[str, Any]
    capital: Decimal


_summarised: dict[type, bool] = {}  # result class -> whether it has audit_summary (asked once per class)


def _outcome_payload(result: Any) -> Mapping[str, Any]:
    # Bulky reads (market data) are summarised. Asked of the class, once: a model instance answers a missing name
    # through pydantic's __getattr__ and an exception, and so does its class (its metaclass's __getattr__).
    kind = type(result)
    summarised = _summarised.get(kind)
    if summarised is None:
        summarised = _summarised[kind] = hasattr(kind, "audit_summary")
    if summarised:
        return cast(Mapping[str, Any], result.audit_summary())
    # A model is recorded as it is sent (the same dump: policies/sent.py; none of the results has an alias).
    payload = wire_dump(result) if isinstance(result, BaseModel) else {"result": str(result)}
    return cast(Mapping[str, Any], bounded(payload))


@asynccontextmanager
async def _rows_on(connection: AsyncConnection) -> AsyncIterator[AsyncSession]:
    """An ORM session on a read call's connection, inside its one transaction (for the reads that load mapped
    rows); closing it leaves the connection and its transaction to their owner."""
    async with AsyncSession(bind=connection, expire_on_commit=False) as session:
        yield session


def trading_day(now: datetime) -> str:
    return now.astimezone(NEW_YORK).date().isoformat()


@dataclass(frozen=True)
class Agent:
    """Who a call acts for, with its effective limits. Read from the database on every call (a proposal's in
    its unit of work: Gate.handle), so a disable, a limit change or a token rotation applies at once."""

    id: str
    limits: EffectiveLimits
    approval: ApprovalPolicy
    risk_level: str
    # Symbols it held when the call began: their quotes are fetched with the order's, to mark its book.
    held_symbols: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Snapshot:
    """The market and account state a decision was made on."""

    quote: Quote | None
    asset: Asset | None
    account: Account | None
    market_open: bool | None
    marks: Mapping[str, Quote] = field(default_factory=dict)  # quotes of the agent's other holdings
    next_open: datetime | None = None  # while the US equity market is closed: when it opens


@dataclass(frozen=True)
class ProposalDraft:
    """A propose_trade request after parsing: the order plus what the agent says about it."""

    order: OrderRequest
    strategy: str | None
    reasoning: str
    confidence: float | None


@dataclass(frozen=True)
class LiveTrades:
    """An agent's orders the broker may still move, with their exits (by order id), as read in one transaction."""

    trades: list[AgentTrade]
    legs: dict[str, list[AgentOrderLeg]]


@dataclass(frozen=True)
class OrdersRead:
    """What get_orders read from the ledger, before the broker is asked about the live ones."""

    live: LiveTrades
    trades: list[AgentTrade]
    legs: dict[str, list[AgentOrderLeg]]
    status: str
    limit: int


@dataclass(frozen=True)
class BookRead:
    """What get_positions read from the ledger, before the broker is asked about the live orders."""

    live: LiveTrades
    positions: list[AgentPosition]
    cash: Decimal


@dataclass(frozen=True)
class GateSettings:
    trading_mode: str
    enable_agent_trading: bool
    risk_multiplier: Decimal
    proposal_ttl: timedelta
    limit_proposal_ttl: timedelta
    broker_timeout: float
    enforce_market_hours: bool
    is_postgres: bool


ProposalListener = Callable[[str], Awaitable[None]]
# An execution's answer: the proposal, its trade (if an order exists) and the violations that stopped it.
Executed = tuple[TradeProposal, AgentTrade | None, list[Violation]]
# Turns an execution's answer into the tool's result (recorded as the call's outcome).
ExecutePresenter = Callable[[TradeProposal, AgentTrade | None, list[Violation]], Any]


def _check_proposal_id(proposal_id: str) -> None:
    try:
        uuid.UUID(proposal_id)
    except ValueError:
        raise deny(Code.PROPOSAL_NOT_FOUND, f"no proposal {proposal_id!r}: ids are UUIDs returned by "
                                            "propose_trade") from None


def _proposal_and_trade(agent: Agent, proposal_id: str, row: Any) -> tuple[TradeProposal, AgentTrade | None]:
    """The objects of a _PROPOSAL_AND_TRADE row. Another agent's proposal is reported as absent: ids are not a
    way to learn about others."""
    if row is None or row.agent_id != agent.id:
        raise deny(Code.PROPOSAL_NOT_FOUND, f"no proposal {proposal_id} for this agent")
    values = row._mapping
    proposal = transient(TradeProposal, {name: values[name] for name in _PROPOSAL_NAMES})
    if values["trade_id"] is None:
        return proposal, None
    return proposal, transient(AgentTrade, {name: values[f"trade_{name}"] for name in _TRADE_NAMES})


# The order's fields an agent.trade.signal record names after the proposal id, in this order (Gate._record_signal).
_SIGNAL_ORDER_FIELDS = ("symbol", "side", "qty", "notional", "order_type", "limit_price", "stop_price",
                        "time_in_force", "estimated_notional")


def _approval_required(proposal_id: str) -> Violation:
    return Violation(code=Code.APPROVAL_REQUIRED,
                     message=f"a person must approve this trade: in the MCP client, or out of band with "
                             f"`tradewarden approvals approve {proposal_id}`; then call execute_trade again")


_DECLINED = Violation(code=Code.APPROVAL_DECLINED, message="a person declined this trade; it will not be sent")


def _with(proposal: TradeProposal, **changes: Any) -> TradeProposal:
    """The proposal as a change just written leaves it (built, not read back)."""
    return transient(TradeProposal, {**loaded_values(proposal, _PROPOSAL_NAMES), **changes})


class Gate:
    def __init__(self, *, settings: GateSettings, sessions: async_sessionmaker[AsyncSession], broker: Broker,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)):
        self.settings = settings
        self.sessions = sessions
        self.broker = broker
        self.clock = clock
        self._proposal_listeners: list[ProposalListener] = []
        self._left_open_listeners: list[Callable[[], None]] = []  # see on_order_left_open
        self._account_cache: tuple[float, Account] | None = None
        # Per agent: its stored permissions and holdings as last read, and the Agent they make. Reused only for
        # the same stored values (an operator's change makes a new one on the next read), and handed to a
        # call unread only where its first unit of work reads the agent again (Gate.handle).
        self._identities: dict[str, tuple[tuple[Any, ...], Agent]] = {}
        # Proposals stored approved by policy, not executed since (id -> (when, agent id, proposal)): approved_unread.
        self._approved_notes: OrderedDict[str, tuple[float, str, TradeProposal]] = OrderedDict()

    # --- identity ----------------------------------------------------------------------------------

    async def load_agent(self, agent_id: str | None, *, allow_disabled: bool = False) -> Agent:
        if not agent_id:
            return self._identify(agent_id, None)
        async with read(self.sessions) as connection:
            row, held = await self._agent_row(connection, agent_id)
        _recent_agent.set((time.monotonic(), agent_id, row, held))
        return self._identify(agent_id, row, held, allow_disabled=allow_disabled)

    def _recent_identity(self, agent_id: str | None, *, allow_disabled: bool) -> Agent | None:
        """The agent as this task read it less than RECENT_READ_SECONDS ago (once), else None."""
        recent = _recent_agent.get()
        if recent is None or recent[1] != agent_id or time.monotonic() - recent[0] > RECENT_READ_SECONDS:
            return None
        _recent_agent.set(None)
        return self._identify(agent_id, recent[2], recent[3], allow_disabled=allow_disabled)

    @staticmethod
    async def _agent_row(session: AsyncSession | AsyncConnection, agent_id: str
                         ) -> tuple[AgentRecord | None, frozenset[str]]:
        """The agent's stored permissions and the symbols it holds."""
        rows = (await execute(session, _AGENT_AND_HOLDINGS, {"agent_id": agent_id})).all()
        if not rows:
            return None, frozenset()
        return rows[0], frozenset(row.held_symbol for row in rows if row.held_symbol is not None)  # type: ignore[return-value]

    def _identify(self, agent_id: str | None, row: AgentRecord | None,
                  held_symbols: frozenset[str] = frozenset(), *, allow_disabled: bool = False) -> Agent:
        if not agent_id:
            raise deny(Code.AGENT_UNKNOWN, "no agent identity: start the server with --agent ID or present a "
                                           "valid bearer token")
        if row is None:
            self._identities.pop(agent_id, None)
            raise deny(Code.AGENT_UNKNOWN, f"agent {agent_id!r} is not registered")
        if not row.enabled and not allow_disabled:
            self._identities.pop(agent_id, None)
            raise deny(Code.AGENT_DISABLED, f"agent {agent_id!r} is disabled by an operator")
        # The limits are worked out again only when the stored permissions changed: same values, same Agent.
        stored = _stored_of(row)
        known = self._identities.get(agent_id)
        if known is not None and known[0] == stored:
            agent = known[1]
            if agent.held_symbols != held_symbols:
                agent = replace(agent, held_symbols=held_symbols)
        else:
            agent = self.agent_from_row(row, held_symbols)
        self._identities[agent_id] = (stored, agent)
        return agent

    def _last_identity(self, agent_id: str | None) -> Agent | None:
        """The agent as this gate last identified it (enabled then), unread: only for a call whose first unit of
        work reads it again (Gate.handle)."""
        known = self._identities.get(agent_id) if agent_id else None
        return known[1] if known is not None and known[0][_ENABLED] else None

    async def _identity_and_status(self, session: AsyncSession | AsyncConnection, agent_id: str
                                   ) -> tuple[Agent, TradingStatus]:
        """The agent identified afresh inside a unit of work, with the trading state, in one statement. Denies
        an agent unknown or disabled by now; the call's identity is then checked (CallRecord.unverified)."""
        rows = (await execute(session, _AGENT_HOLDINGS_AND_STATE, {"agent_id": agent_id})).all()
        row = rows[0] if rows else None
        agent = self._identify(agent_id, row, frozenset(r.held_symbol for r in rows if r.held_symbol is not None))
        call = _current_call.get()
        if call is not None:
            call.unverified = None
        assert row is not None
        status = TradingStatus(enabled=self.settings.enable_agent_trading,
                               global_state=row.global_state or "active", global_reason=row.global_reason,
                               agent_state=row.agent_state or "active", agent_reason=row.agent_reason)
        return agent, status

    def agent_from_row(self, row: AgentRecord, held_symbols: frozenset[str] = frozenset()) -> Agent:
        limits = effective_limits(
            max_trade_size=row.max_trade_size, max_position_size=row.max_position_size,
            max_daily_trades=row.max_daily_trades, allowed_symbols=list(row.allowed_symbols),
            allowed_strategies=list(row.allowed_strategies), risk_level=row.risk_level, capital=row.capital,
            overrides=_decode_overrides(row.limits), multiplier=self.settings.risk_multiplier)
        # Unset in the config ("" / negative): the mode's default applies (policies/approval.py).
        auto_max = row.auto_approve_max_notional if row.auto_approve_max_notional >= 0 else None
        policy = default_policy(row.approval or None, auto_max, live=self.settings.trading_mode == "live")
        return Agent(id=row.agent_id, limits=limits, approval=policy, risk_level=row.risk_level,
                     held_symbols=held_symbols)

    # --- the audited call wrapper ------------------------------------------------------------------

    async def handle(self, tool: str, agent_id: str | None, args: Mapping[str, Any],
                     operation: Callable[[Agent], Awaitable[R]], *, acts_at_broker: bool = True,
                     allow_disabled: bool = False) -> R:
        """Run one tool call through the gate: identify, record the intent, act, record the outcome.
        Denials and failures are recorded too, then re-raised for the tool layer to report.

        Every call's intent is committed with its first change to the ledger (a proposal is stored in the same
        transaction as the record of who asked for it; an order's reservation and a cancel's intent, which
        come before anything is sent to the broker, likewise), or with its outcome: nothing it does is
        committed before the log says who asked, and it saves a transaction per call. acts_at_broker=True
        (submit or cancel an order): the identity may be the one this task read an instant before (the
        approval resolver's), since an execution identifies the agent again under its locks.
        acts_at_broker=False (a proposal): the call may begin with the agent as this gate last identified it,
        unread: its first unit of work reads the agent again and decides on that (`propose` does it in the
        statement that reads the trading state; any other unit checks it before committing, and a call whose
        agent changed since runs again, identified afresh), and a call that fails before is answered as a fresh
        identification would answer it (unknown or disabled first). So an operator's change applies to the next
        call as before, without a read of its own.
        allow_disabled: the call also runs for a disabled agent (cancels: they only reduce risk)."""
        call = CallRecord(tool=tool, agent_id=agent_id, args=args, ts=self.clock())
        token = _current_call.set(call)
        try:
            # A call at the broker may reuse the identity its approval resolver has just read: the execution's
            # unit of work identifies the agent again under its locks (a cancel only reduces risk).
            agent = (self._recent_identity(agent_id, allow_disabled=allow_disabled) if acts_at_broker
                     else self._last_identity(agent_id) if not allow_disabled else None)
            call.unverified = agent if not acts_at_broker else None
            if agent is None and acts_at_broker and not allow_disabled and self._unread_execution(agent_id):
                # An execution of a proposal this gate stored approved (approved_unread): its unit of work
                # identifies the agent afresh under its locks, so it may begin on the last identity, unread.
                agent = call.unverified = self._last_identity(agent_id)
            agent = agent or await self.load_agent(agent_id, allow_disabled=allow_disabled)
            try:
                result = await operation(agent)
                if call.unverified is not None:  # no unit of work read the agent: before it is answered, check it
                    await self._check_unverified(call, agent_id)
            except _StaleIdentity:  # the agent changed since this gate last read it: once more, read afresh
                call.unverified = None
                result = await operation(await self.load_agent(agent_id, allow_disabled=allow_disabled))
        except Exception as error:
            await self._fail(call, await self._identity_failure(call, agent_id, error))
        finally:
            _current_call.reset(token)
        if not call.outcome_recorded:
            await self._finish_or_deny(call, "tool.outcome", _outcome_payload(result))
        return result

    async def _identity_failure(self, call: CallRecord, agent_id: str | None, error: Exception) -> Exception:
        """What a call that failed on an identity no unit of work has read yet answers: the denial a fresh
        identification gives (unknown, disabled), else its own failure."""
        if call.unverified is None or isinstance(error, _StaleIdentity):
            return error
        call.unverified = None
        try:
            await self.load_agent(agent_id)
        except GateDenied as denied:
            return denied
        except Exception:  # the ledger itself fails: the call's own failure says so
            return error
        return error

    async def _check_unverified(self, call: CallRecord, agent_id: str | None) -> None:
        """A call begun on the gate's last identity that no unit of work checked: read the agent now; a changed
        agent raises _StaleIdentity (the call, which changed nothing, runs again identified afresh)."""
        assert call.unverified is not None
        known = call.unverified
        call.unverified = None
        if await self.load_agent(agent_id) != known:
            raise _StaleIdentity

    async def _fail(self, call: CallRecord, error: Exception) -> NoReturn:
        """Record why a call did not answer (a denial, a broker failure, any other failure) with its intent,
        then raise what the tool layer reports: a denial as it is, broker failures as their codes. A ledger
        that cannot take the record is logged instead (recording it would wait on the same database)."""
        if isinstance(error, GateDenied):
            await self._finish_or_deny(call, "tool.denied", {"codes": [v.code for v in error.violations],
                                                             "violations": error.violations})
            raise error
        if isinstance(error, (BrokerError, TimeoutError)):
            if broker_unavailable(error):
                message = (error.message if isinstance(error, BrokerError) else "no answer in time")
                await self._finish_or_deny(call, "tool.failed", {"code": Code.BROKER_UNAVAILABLE.value,
                                                                 "error": message})
                raise deny(Code.BROKER_UNAVAILABLE, f"the broker cannot be reached ({message}); nothing was "
                                                    "sent, try again shortly") from None
            assert isinstance(error, BrokerError)
            await self._finish_or_deny(call, "tool.failed", {"code": error.code, "error": error.message})
            raise deny(Code(error.code) if error.code in Code.__members__ else Code.BROKER_ERROR,
                       f"broker error: {error.message}") from None
        reason = ledger_failure(error)
        if reason is not None:
            log.error("ledger_unavailable", tool=call.tool, agent=call.agent_id, reason=reason,
                      error=type(error).__name__)
            raise deny(Code.LEDGER_UNAVAILABLE, f"{reason}; nothing was changed, try again shortly") from None
        # Scrubbed before it is cut: a cut through a key leaves a piece no masking recognises.
        await self._finish_or_deny(call, "tool.failed", {"error": type(error).__name__,
                                                         "detail": secrets.scrub(str(error))[:500]})
        raise error

    async def _finish_or_deny(self, call: CallRecord, kind: str, payload: Mapping[str, Any]) -> None:
        """_finish; a ledger that cannot take the record turns the answer into LEDGER_UNAVAILABLE."""
        try:
            await self._finish(call, kind, payload)
        except Exception as error:
            reason = ledger_failure(error)
            if reason is None:
                raise
            log.error("ledger_unavailable", tool=call.tool, agent=call.agent_id, reason=reason, record=kind)
            raise deny(Code.LEDGER_UNAVAILABLE, f"{reason}; the call could not be recorded, try again "
                                                "shortly") from None

    @asynccontextmanager
    async def _unit(self) -> AsyncIterator[AsyncSession]:
        """A unit of work of the gate. Its audit records are appended when its work is done, just before it
        commits: audit_head is the last row a transaction locks (ledger/db.py). Within a tool call the call's
        intent goes first if it is not in the log yet, so it commits with (never after) the first change the
        call makes; an outcome staged by the work (_stage_outcome) goes last."""
        call = _current_call.get()
        records: list[audit.Entry] = []
        token = _unit_records.set(records)
        try:
            async with transaction(self.sessions) as session:
                yield session
                if call is not None and call.unverified is not None:  # the call began on an identity unread
                    known, call.unverified = call.unverified, None
                    if self._identify(known.id, *await self._agent_row(session, known.id)) != known:
                        raise _StaleIdentity  # rolled back: handle runs the call again, identified afresh
                if call is not None and not call.intent_recorded:
                    records.insert(0, call.intent())
                if call is not None and call.staged_outcome is not None:
                    records.append(call.staged_outcome)
                if records:
                    await audit.append_records(session, records)
        except BaseException:
            if call is not None:
                call.staged_outcome = None
            raise
        finally:
            _unit_records.reset(token)
        if call is not None:
            call.intent_recorded = True
            if call.staged_outcome is not None:
                call.outcome_recorded, call.staged_outcome = True, None

    def _stage_outcome(self, result: Any, *, event_id: str | None = None,
                       bound: Mapping[str, Any] | None = None) -> None:
        """Make `result` the call's outcome record, committed by the unit of work in progress with the change
        it reports. `bound`: rows this record binds (policies/bindings.py), under the record id `event_id`."""
        call = _current_call.get()
        if call is not None and not call.outcome_recorded:
            payload = {**_outcome_payload(result), **(bindings.binds(**bound) if bound else {})}
            call.staged_outcome = call.entry("tool.outcome", payload, self.clock(), event_id)

    async def _finish(self, call: CallRecord, kind: str, payload: Mapping[str, Any]) -> None:
        """The call's last record (outcome, denial or failure), with its intent if that is not in yet."""
        records = [call.entry(kind, payload, self.clock())]
        if not call.intent_recorded:
            records.insert(0, call.intent())
        async with transaction(self.sessions) as session:
            await audit.append_records(session, records)
        call.intent_recorded = True

    async def record(self, *, actor: str, kind: str, payload: Mapping[str, Any], tool: str | None = None,
                     agent_id: str | None = None, session: AsyncSession | None = None,
                     event_id: str | None = None) -> None:
        """Append a record: with `session` (a unit of work in progress), at the end of that unit; else in a
        unit of its own. `event_id`: the id a row bound to this record names (policies/bindings.py)."""
        entry = audit.Entry(ts=self.clock(), actor=actor, kind=kind, payload=payload, agent_id=agent_id, tool=tool,
                            event_id=event_id)
        if session is not None:
            _staged_records().append(entry)
            return
        async with self._unit():
            _staged_records().append(entry)

    # --- inputs of a decision ----------------------------------------------------------------------

    async def snapshot(self, order: OrderRequest, held_symbols: frozenset[str] = frozenset()) -> Snapshot:
        """Quote, asset, account and market hours, fetched concurrently, plus quotes for every symbol the
        agent holds (its equity, daily P&L and drawdown are marked to market, not to entry prices).
        Any failure leaves that part None, and the checks fail closed on None."""
        symbols = [order.symbol, *sorted(held_symbols - {order.symbol})]

        unreachable: list[str] = []

        async def guarded(coro: Awaitable[Any]) -> Any:
            try:
                return await coro
            except (BrokerError, TimeoutError) as error:
                log.warning("snapshot_part_unavailable", symbol=order.symbol, error=str(error))
                if broker_unavailable(error):
                    unreachable.append(error.message if isinstance(error, BrokerError) else "no answer in time")
                return None

        # One deadline for the parts, which run together (a part that times out makes the broker unreachable,
        # whatever the others answered): one timer instead of a task and a timer per part.
        # An account still fresh in the cache is taken as it is, without a task of its own in the gather.
        account = self._cached_account()
        # Quotes and assets computed in this process never wait: with the account kept too, nothing here can wait,
        # so no deadline is set (a deadline only interrupts an await that waits: it could never expire).
        in_process = getattr(self.broker, "market_data_in_process", False)
        try:
            async with nullcontext() if in_process and account is not None else asyncio.timeout(
                    self.settings.broker_timeout):
                if in_process:
                    # Quotes and assets computed in this process never wait: asked in turn, without a task
                    # each and the gather's wake-ups (only the account, when not cached, may wait on I/O).
                    quotes = await guarded(self.broker.get_quotes(symbols))
                    asset = await guarded(self.broker.get_asset(order.symbol))
                    if account is None:
                        account = await guarded(self._recent_account())
                else:
                    parts = [guarded(self.broker.get_quotes(symbols)), guarded(self.broker.get_asset(order.symbol))]
                    if account is None:
                        parts.append(guarded(self._recent_account()))
                    quotes, asset, *fetched = await asyncio.gather(*parts)
                    if fetched:
                        account = fetched[0]
        except TimeoutError:
            log.warning("snapshot_part_unavailable", symbol=order.symbol, error="no answer in time")
            unreachable.append("no answer in time")
        if unreachable:  # one reason, not the unknown symbol, missing quote and unknown account it causes
            raise deny(Code.BROKER_UNAVAILABLE, f"the broker cannot be reached ({unreachable[0]}); the order "
                                                "was not checked or stored, try again shortly")
        quote = (quotes or {}).get(order.symbol)
        # The exchange calendar is consulted only when market hours are enforced (its only use).
        now = self.clock()
        market_open = (True if order.is_crypto or not self.settings.enforce_market_hours
                       else market_open_or_none(now))
        opens = next_open_or_none(now) if market_open is False else None
        return Snapshot(quote=quote, asset=asset, account=account, market_open=market_open, marks=quotes or {},
                        next_open=opens)

    async def _recent_account(self) -> Account:
        """The broker account, at most ACCOUNT_MAX_AGE old. Orders reserved in our own ledger are counted on
        top of it by the checks, so a slightly old balance cannot be double-spent by our agents; the broker
        still refuses what the account cannot pay."""
        cached = self._cached_account()
        if cached is not None:
            return cached
        now = time.monotonic()
        account = await self.broker.get_account()
        self._account_cache = (now, account)
        return account

    def _cached_account(self) -> Account | None:
        """The broker account if fetched less than ACCOUNT_MAX_AGE ago, else None."""
        if self._account_cache is not None and time.monotonic() - self._account_cache[0] < ACCOUNT_MAX_AGE:
            return self._account_cache[1]
        return None

    async def trading_status(self, session: AsyncSession | AsyncConnection, agent_id: str, *, lock: bool = False
                             ) -> TradingStatus:
        """Global and agent trading state. With lock=True (check-and-reserve on PostgreSQL) the global row
        is locked first, then the agent's permissions: one lock order everywhere, so no deadlocks."""
        if lock and self.settings.is_postgres:
            await execute(session, _LOCK_GLOBAL_STATE)
            await execute(session, _LOCK_PERMISSIONS, {"agent_id": agent_id})
        rows = {row.scope: row for row in await execute(session, _STATE_ROWS, {"agent_id": agent_id})}
        global_row, agent_row = rows.get(GLOBAL_SCOPE), rows.get(agent_id)
        return TradingStatus(
            enabled=self.settings.enable_agent_trading,
            global_state=global_row.state if global_row else "active",
            global_reason=global_row.reason if global_row else None,
            agent_state=agent_row.state if agent_row else "active",
            agent_reason=agent_row.reason if agent_row else None)

    async def _decide(self, session: AsyncSession, agent: Agent, order: OrderRequest, strategy: str | None,
                      snap: Snapshot, *, lock: bool, locked: bool = False,
                      status: TradingStatus | None = None, order_hash: str | None = None
                      ) -> tuple[list[Violation], Usage]:
        """Every check on `order` as of now. lock=True: the decision that reserves (its rows locked first on
        PostgreSQL, unless `locked`: the caller took those locks already). `status`: the trading state as the
        caller has just read it in this unit of work (else it is read here). `order_hash`: the order's hash if
        the caller has it (else it is worked out again where needed)."""
        now = self.clock()
        if status is None:
            status = await self.trading_status(session, agent.id, lock=lock and not locked)
        quotes = dict(snap.marks)
        if snap.quote is not None:
            quotes[order.symbol] = snap.quote
        usage = await load_usage(session, agent_id=agent.id, order=order, limits=agent.limits, quotes=quotes,
                                 now=now, with_denials=False, exit_holds=True, order_hash=order_hash)
        if lock:  # the decision that reserves also keeps the agent's equity peak and trading day current
            # load_usage read the account row in this unit (its stored peak and day come with the usage): it is
            # read again only to create it, the first time.
            account = (None if usage.stored_day is not None
                       else await account_row(session, agent.id, agent.limits.capital, trading_day(now), now))
            await persist_marks(session, agent_id=agent.id, usage=usage, now=now, account=account, stored=True)
        check_input = CheckInput(order=order, strategy=strategy, limits=agent.limits, quote=snap.quote,
                                 asset=snap.asset, usage=usage, account=snap.account, status=status, now=now,
                                 market_open=snap.market_open,
                                 enforce_market_hours=self.settings.enforce_market_hours,
                                 next_open=snap.next_open, broker=self.broker.name)
        # Denied only for its size: the message says the largest order that passes (policies/sizing.py).
        return with_size_hint(check_input, run_checks(check_input)), usage

    async def judge(self, agent: Agent, order: OrderRequest, strategy: str | None
                    ) -> tuple[list[Violation], Pricing]:
        """Every check of a decision on `order` as of now, reserving nothing: an approver's edited order is
        judged on the same path as the agent's own (the reservation still happens, checked again, at execution)."""
        snap = await self.snapshot(order, agent.held_symbols)
        async with self.sessions() as session:
            violations, _ = await self._decide(session, agent, order, strategy, snap, lock=False)
        return violations, price_order(order, snap.quote)

    async def _alert_thresholds(self, session: AsyncSession, agent: Agent, usage: Usage, now: datetime) -> None:
        """Daily loss and drawdown at 80 % and 100 % of the limit: a risk alert once per crossing per trading day,
        recorded by the decisions that store something (a proposal, an order), in their unit of work. Nothing is
        read unless a threshold is crossed (the normal case costs one comparison)."""
        crossed = alerts.risk_thresholds(agent.limits, usage)
        if not crossed:
            return
        key = "risk-alerts:" + hashlib.sha256(agent.id.encode()).hexdigest()[:40]
        day = trading_day(now)
        await insert_if_absent(session, KeyValue, {"key": key, "value": {}, "updated_at": now})
        row = (await session.execute(select(KeyValue).where(KeyValue.key == key).with_for_update()
                                     .execution_options(populate_existing=True))).scalar_one()
        fresh = alerts.newly_crossed(crossed, row.value, day)
        if not fresh:
            return
        row.value, row.updated_at = alerts.threshold_state(row.value, day, fresh), now
        for alert in fresh:
            await self.record(session=session, actor="system:risk", kind=event_kinds.KIND_ALERT, agent_id=agent.id,
                              payload=alert.payload())

    async def _with_denials(self, session: AsyncSession, agent: Agent, usage: Usage) -> Usage:
        """Usage with the agent's recent denials counted. Only the breaker needs them, and only for a denied
        order, so a decision counts them then, before it stores this denial."""
        denials = await count_denials(session, agent_id=agent.id, limits=agent.limits, now=self.clock())
        return replace(usage, denials_in_window=denials)

    async def _trip_breaker_if_needed(self, session: AsyncSession, agent: Agent, usage: Usage,
                                      violations: list[Violation]) -> None:
        trip = breaker_decision(agent.limits, usage, violations)
        if trip is None:
            return
        current = await session.get(TradingState, agent.id)
        rank = {"active": 0, "reducing": 1, "halted": 2}
        if current is not None and rank.get(current.state, 0) >= rank[trip.state]:
            return
        now = self.clock()
        if current is None:
            session.add(TradingState(scope=agent.id, state=trip.state, reason=trip.reason,
                                     changed_by="circuit-breaker", changed_at=now))
        else:
            current.state, current.reason, current.changed_by, current.changed_at = (
                trip.state, trip.reason, "circuit-breaker", now)
        await self.record(session=session, actor="system:circuit-breaker", kind="trading_state.changed",
                          agent_id=agent.id, payload={"scope": agent.id, "state": trip.state, "reason": trip.reason,
                                                      "triggers": list(trip.triggers)})
        log.warning("circuit_breaker_tripped", agent=agent.id, state=trip.state, reason=trip.reason)

    # --- propose -----------------------------------------------------------------------------------

    async def propose(self, agent: Agent, draft: ProposalDraft,
                      present: Callable[[TradeProposal, list[Violation]], R]) -> R:
        """Check the order and store it as a proposal (rejected, approved or pending a person's approval).
        `present` turns the decision into the tool's result; it is recorded as the call's outcome in the
        same transaction as the proposal, so the decision and its record commit together."""
        order = draft.order
        held = agent.held_symbols
        for attempt in range(3):
            snap = await self.snapshot(order, held)
            try:
                return await self._propose_unit(agent, draft, snap, held, present, last=attempt == 2)
            except _HoldingsMoved as moved:  # rolled back: quoted again with what the agent holds now
                held = moved.held
        raise AssertionError("unreachable: the last attempt does not raise _HoldingsMoved")

    async def _propose_unit(self, agent: Agent, draft: ProposalDraft, snap: Snapshot, quoted: frozenset[str],
                            present: Callable[[TradeProposal, list[Violation]], R], *, last: bool) -> R:
        """propose's unit of work: the agent identified afresh with the trading state (one statement), the
        decision, the proposal and its records. Raises _HoldingsMoved (unless `last`) when the agent now holds a
        symbol the snapshot did not ask a quote for (`quoted`: the holdings it asked for): its equity is marked
        to market, so it is quoted first."""
        order = draft.order
        pricing = price_order(order, snap.quote)
        now = self.clock()
        ttl = self.settings.proposal_ttl if order.order_type == "market" else self.settings.limit_proposal_ttl
        async with self._unit() as session:
            agent, state = await self._identity_and_status(session, agent.id)
            if not last and not agent.held_symbols <= quoted | {order.symbol}:
                raise _HoldingsMoved(agent.held_symbols)
            order_hash = order.order_hash()  # stored with the proposal; the duplicate check looks it up
            violations, usage = await self._decide(session, agent, order, draft.strategy, snap, lock=False,
                                                   status=state, order_hash=order_hash)
            await self._alert_thresholds(session, agent, usage, now)
            if violations:
                usage = await self._with_denials(session, agent, usage)
            status = "rejected" if violations else approval_for(agent.approval, pricing.estimated_notional)
            values: dict[str, Any] = dict(
                id=new_random_id(), agent_id=agent.id, symbol=order.symbol, side=order.side, qty=order.qty,
                notional=order.notional, order_type=order.order_type, limit_price=order.limit_price,
                stop_price=order.stop_price, time_in_force=order.time_in_force,
                extended_hours=order.extended_hours, strategy=draft.strategy, reasoning=draft.reasoning,
                confidence=draft.confidence, status=status, order_hash=order_hash,
                reference_price=pricing.reference_price, estimated_notional=pricing.estimated_notional,
                violations=[v.model_dump(mode="json") for v in violations], approval_mode=agent.approval.mode,
                trading_mode=self.settings.trading_mode, created_at=now, expires_at=now + ttl, updated_at=now,
                decided_at=None, decided_by=None, decided_via=None, decision_note=None,
                audit_event_id=bindings.new_event_id(),  # the outcome record below binds the rows
                exits=order.exits_json())
            if status == "approved":
                values.update(decided_at=now, decided_by="policy:auto", decided_via="auto")
            await execute(session, _INSERT_PROPOSAL, values)
            bound: dict[str, Any] = {bindings.PROPOSALS: values}
            if status == "approved":
                bound[bindings.APPROVALS] = {
                    "proposal_id": values["id"], "decision": "approved", "decided_by": "policy:auto", "via": "auto",
                    "trust": "auto", "order_hash": values["order_hash"], "created_at": now,
                    "audit_event_id": values["audit_event_id"]}
                await execute(session, _INSERT_APPROVAL, bound[bindings.APPROVALS])
            # The row just written, as a read-only view for the answer: built without the ORM's per-attribute
            # events (60 of them), never added to a session (ledger.rows.transient configures the mappers first
            # if nothing has yet: a server's first call may be this one).
            proposal = transient(TradeProposal, values)
            await self._record_signal(session, agent, values, violations)
            if violations:
                await self._trip_breaker_if_needed(session, agent, usage, violations)
            result = present(proposal, violations)
            self._stage_outcome(result, event_id=values["audit_event_id"], bound=bound)
        if status == "approved":  # committed: its execution may begin without reading it (approved_unread)
            self._note_approved(proposal)
        return result

    async def _record_signal(self, session: AsyncSession, agent: Agent, proposal: Mapping[str, Any],
                             violations: list[Violation]) -> None:
        """The proposal as the event stream shows it (agent.trade.signal; approval.requested when a person must
        decide): named fields only, never the agent's reasoning. `proposal`: the values its row was inserted
        with (read from the mapping: a dozen reads through the ORM object's descriptors cost more)."""
        order = {"proposal_id": proposal["id"], **{name: proposal[name] for name in _SIGNAL_ORDER_FIELDS}}
        await self.record(session=session, actor=f"agent:{agent.id}", kind=event_kinds.KIND_PROPOSAL, agent_id=agent.id,
                          payload={**order, "strategy": proposal["strategy"], "confidence": proposal["confidence"],
                                   "status": proposal["status"], "reference_price": proposal["reference_price"],
                                   "violations": [v.code for v in violations]})
        if proposal["status"] == "pending_approval":
            await self.record(session=session, actor=f"agent:{agent.id}", kind=event_kinds.KIND_APPROVAL_REQUESTED,
                              agent_id=agent.id, payload={**order, "approval_mode": proposal["approval_mode"],
                                                          "expires_at": proposal["expires_at"]})

    # --- execute -----------------------------------------------------------------------------------

    async def execute(self, agent: Agent, proposal_id: str, decision: ClientDecision | None = None,
                      present: ExecutePresenter | None = None) -> Executed:
        """Submit an approved proposal at most once. Returns the proposal, its trade (if an order exists)
        and the violations that stopped it (if any).

        Three units of work for an order: (a) `_reserve_and_submit` records the call's intent, identifies the
        agent, re-reads the proposal under the decision's locks, applies every stop reason and binding check,
        decides, and reserves (the trade row, pending_submit) with the order's intent record; (b) the broker's
        own; (c) `_submit` applies its answer and commits every remaining record of the call. `present` turns
        the answer into the tool's result, recorded as the call's outcome by the last unit of work (so the
        call needs no transaction of its own for it)."""
        self._approved_notes.pop(proposal_id, None)  # executed: no longer begun unread (approved_unread)
        proposal, trade = await self._proposal_to_execute(agent, proposal_id)
        if trade is not None:
            return proposal, await self.refresh_trade(trade), []
        if proposal.status == "pending_approval" and self._stopped(proposal, pending_stops=False) is None:
            proposal, answered, staged = await self._apply_client_decision(agent, proposal, decision, present)
            if staged is not None:  # the decision's unit of work recorded this answer as the call's outcome
                return staged
            if not answered:
                return proposal, None, [_approval_required(proposal.id)]
            if proposal.status == "declined":
                return proposal, None, [_DECLINED]
        # The market and account for the decision are fetched before its unit of work, never while holding
        # the ledger's locks; only an order that may still be sent needs them.
        snap = await self.snapshot(_order_of(proposal), agent.held_symbols) if proposal.status == "approved" else None
        return await self._reserve_and_submit(agent, proposal.id, snap, present)

    def _note_approved(self, proposal: TradeProposal) -> None:
        notes = self._approved_notes
        notes[proposal.id] = (time.monotonic(), proposal.agent_id, proposal)
        if len(notes) > _APPROVED_NOTES_MAX:
            notes.popitem(last=False)

    def approved_unread(self, agent_id: str | None, proposal_id: str) -> bool:
        """Whether this gate stored `proposal_id` for `agent_id` approved by policy less than APPROVED_NOTE_SECONDS
        ago and has not executed it since, with the agent enabled when last identified: then nobody needs to be
        asked, and the execution that follows in this task begins on the proposal as stored and the agent as last
        identified, without a read: its unit of work reads both again under its locks and decides on what it reads
        (expired, declined, executed meanwhile, agent disabled: as after a read). The note is taken once."""
        note = self._approved_notes.pop(proposal_id, None)
        if (note is None or not agent_id or note[1] != agent_id or time.monotonic() - note[0] > APPROVED_NOTE_SECONDS
                or self._last_identity(agent_id) is None):
            return False
        now = time.monotonic()
        _recent_proposal.set((now, agent_id, proposal_id, note[2], None))
        _unread_agent.set((now, agent_id))
        return True

    @staticmethod
    def _unread_execution(agent_id: str | None) -> bool:
        """approved_unread said, an instant ago in this task, that this agent's execution may begin unread."""
        unread = _unread_agent.get()
        if unread is None:
            return False
        _unread_agent.set(None)
        return unread[1] == agent_id and time.monotonic() - unread[0] <= RECENT_READ_SECONDS

    async def read_proposal(self, agent: Agent, proposal_id: str) -> tuple[TradeProposal, AgentTrade | None]:
        """The agent's own proposal and its order, if any (PROPOSAL_NOT_FOUND for anyone else's)."""
        return await self._load_proposal(agent, proposal_id)

    async def awaiting_client_decision(self, agent: Agent, proposal_id: str) -> TradeProposal | None:
        """The proposal, if a person in the MCP client may decide it now: it is the agent's own, pending
        approval, not expired, unchanged since it was proposed, and the agent's approval mode allows the
        client to decide (never in `operator` mode). None otherwise; execute() says why."""
        try:
            proposal, trade = await self._load_proposal(agent, proposal_id)
        except GateDenied:
            return None
        return proposal if self.awaits_client_decision(agent, proposal, trade) else None

    async def agent_and_proposal(self, agent_id: str | None, proposal_id: str
                                 ) -> tuple[Agent, tuple[TradeProposal, AgentTrade | None] | None]:
        """load_agent and read_proposal in one read (the approval resolver's, before every execution): the agent
        (denied as load_agent denies) and its proposal with its order, or None where read_proposal would deny.
        Both are kept for the execution that follows in this task, as load_agent and read_proposal keep them."""
        if not agent_id:
            return self._identify(agent_id, None), None
        try:
            _check_proposal_id(proposal_id)
            wanted: str | None = proposal_id
        except GateDenied:
            wanted = None
        async with read(self.sessions) as connection:
            row, held = await self._agent_row(connection, agent_id)
            found = (None if row is None or wanted is None
                     else (await execute(connection, _PROPOSAL_AND_TRADE, {"proposal_id": wanted})).first())
        _recent_agent.set((time.monotonic(), agent_id, row, held))
        agent = self._identify(agent_id, row, held)
        if wanted is None:
            return agent, None
        try:
            proposal, trade = _proposal_and_trade(agent, wanted, found)
        except GateDenied:
            return agent, None
        _recent_proposal.set((time.monotonic(), agent.id, wanted, proposal, trade))
        return agent, (proposal, trade)

    def awaits_client_decision(self, agent: Agent, proposal: TradeProposal, trade: AgentTrade | None) -> bool:
        """awaiting_client_decision on a proposal already read (agent_and_proposal)."""
        return not (trade is not None or proposal.status != "pending_approval" or self.clock() >= proposal.expires_at
                    or not client_may_decide(agent, proposal)
                    or _order_of(proposal).order_hash() != proposal.order_hash)

    async def _load_proposal(self, agent: Agent, proposal_id: str) -> tuple[TradeProposal, AgentTrade | None]:
        """The agent's proposal and its trade, in one read (no unit of work)."""
        _check_proposal_id(proposal_id)
        async with read(self.sessions) as connection:
            row = (await execute(connection, _PROPOSAL_AND_TRADE, {"proposal_id": proposal_id})).first()
        proposal, trade = _proposal_and_trade(agent, proposal_id, row)
        _recent_proposal.set((time.monotonic(), agent.id, proposal_id, proposal, trade))
        return proposal, trade

    async def _proposal_to_execute(self, agent: Agent, proposal_id: str) -> tuple[TradeProposal, AgentTrade | None]:
        """_load_proposal, or what this task read of it less than RECENT_READ_SECONDS ago (the approval
        resolver's read): the unit of work that decides reads it again under its locks."""
        recent = _recent_proposal.get()
        _recent_proposal.set(None)
        if (recent is not None and recent[1] == agent.id and recent[2] == proposal_id
                and time.monotonic() - recent[0] <= RECENT_READ_SECONDS):
            return recent[3], recent[4]
        return await self._load_proposal(agent, proposal_id)

    def _stopped(self, proposal: TradeProposal, *, pending_stops: bool = True
                 ) -> tuple[list[Violation], bool] | None:
        """Why a proposal read under the decision's locks will not be sent (and whether it expires now), or
        None when it is approved and unchanged (or, unless `pending_stops`, pending a person's approval).
        Pure: the caller writes the expiry."""
        if proposal.status == "rejected":
            return [Violation.model_validate(v) for v in proposal.violations], False
        if proposal.status == "declined":
            return [Violation(code=Code.APPROVAL_DECLINED, message="a person declined this trade")], False
        expired = proposal.status == "expired" or (
            proposal.status in ("approved", "pending_approval") and self.clock() >= proposal.expires_at)
        if expired:
            expiry = Violation(code=Code.PROPOSAL_EXPIRED, message=f"the proposal expired at "
                               f"{proposal.expires_at.isoformat()}; propose the trade again")
            return [expiry], proposal.status != "expired"
        if _order_of(proposal).order_hash() != proposal.order_hash:
            return [Violation(code=Code.PROPOSAL_CHANGED,
                              message="the stored order no longer matches what was approved")], False
        if proposal.status == "pending_approval" and pending_stops:  # nobody approved it (or not yet)
            return [_approval_required(proposal.id)], False
        return None

    async def _apply_client_decision(self, agent: Agent, proposal: TradeProposal, decision: ClientDecision | None,
                                     present: ExecutePresenter | None = None
                                     ) -> tuple[TradeProposal, bool, Executed | None]:
        """The person's answer in the client: (the proposal after it, whether they answered, and the call's
        answer when it is final here — a dismissal or a decline, recorded as the call's outcome by the same
        unit of work as the decision when `present` is given)."""
        if decision is not None and not client_may_decide(agent, proposal):
            decision = None  # operator mode: only a person out of band decides
        if decision is None:
            return proposal, False, None
        # Whoever runs the agent's MCP client answered: recorded as that, with trust `client`, never under a
        # name the client supplied (its name and note are kept as notes only).
        by = f"client:{agent.id}"
        client_notes = {"via": "client", "trust": "client", "note": decision.note,
                        "client_name": decision.client_name}
        if decision.action == "cancel":  # the person closed the form without deciding: still pending
            pending: Executed = (proposal, None, [_approval_required(proposal.id)])
            async with self._unit() as session:
                await self.record(session=session, actor=by, kind="approval.dismissed", agent_id=agent.id,
                                  payload={"proposal_id": proposal.id, **client_notes})
                if present is not None:
                    self._stage_outcome(present(*pending))
            return proposal, False, pending if present is not None else None
        new_state = "approved" if decision.action == "accept" else "declined"
        now = self.clock()
        declined: Executed | None = None
        async with self._unit() as session:
            result = await session.execute(
                update(TradeProposal).where(TradeProposal.id == proposal.id,
                                            TradeProposal.status == "pending_approval",
                                            TradeProposal.order_hash == proposal.order_hash)
                .values(status=new_state, decided_at=now, decided_by=by, decided_via="client",
                        decision_note=decision.note, updated_at=now)
                .execution_options(synchronize_session=False))
            if result.rowcount == 1:  # type: ignore[attr-defined]
                approval = Approval(proposal_id=proposal.id, decision=new_state, decided_by=by, via="client",
                                    trust="client", note=decision.note, order_hash=proposal.order_hash,
                                    created_at=now, audit_event_id=bindings.new_event_id())
                session.add(approval)
                await self.record(session=session, actor=by, kind=f"approval.{new_state}", agent_id=agent.id,
                                  payload={"proposal_id": proposal.id, "order_hash": proposal.order_hash,
                                           **client_notes, **bindings.binds(approvals=approval)},
                                  event_id=approval.audit_event_id)
                if new_state == "declined" and present is not None:
                    declined = (_with(proposal, status="declined", decided_at=now, decided_by=by, decided_via="client",
                                      decision_note=decision.note, updated_at=now), None, [_DECLINED])
                    self._stage_outcome(present(*declined))
        if declined is not None:
            await self._notify(proposal.id)
            return declined[0], True, declined
        fresh, _ = await self._load_proposal(agent, proposal.id)
        await self._notify(proposal.id)
        return fresh, True, None

    async def _reserve_and_submit(self, agent: Agent, proposal_id: str, snap: Snapshot | None,
                                  present: ExecutePresenter | None) -> Executed:
        """Unit of work (a), then the broker and unit (c) (`_submit`) if it reserved the order."""
        now = self.clock()
        changed = False  # the proposal moved (listeners are told after the commit)
        reserved: dict[str, Any] | None = None
        async with self._unit() as session:
            if self.settings.is_postgres:  # the decision's locks first, in the one order (ledger/db.py)
                await execute(session, _LOCK_GLOBAL_STATE)
                await execute(session, _LOCK_PERMISSIONS, {"agent_id": agent.id})
            # The agent and the trading state in one statement (as a proposal reads them), under the locks.
            agent, status = await self._identity_and_status(session, agent.id)
            row = (await execute(session, _PROPOSAL_TO_EXECUTE, {"proposal_id": proposal_id})).first()
            proposal, trade = _proposal_and_trade(agent, proposal_id, row)
            answer: Executed
            if trade is not None or proposal.status in ("executing", "executed"):
                answer = (proposal, trade, [])  # a concurrent execution sent the one order: it is the answer
            elif (stopped := self._stopped(proposal)) is not None:
                violations, expires = stopped
                if expires and (await execute(session, _EXPIRE, {"pid": proposal.id, "now": now})).rowcount == 1:  # type: ignore[attr-defined]
                    proposal, changed = _with(proposal, status="expired", updated_at=now), True
                answer = (proposal, None, violations)
            elif snap is None:  # approved since it was read (a person, concurrently): decided on the next call
                answer = (proposal, None, [])
            else:
                assert row is not None
                answer, reserved, changed = await self._decide_and_reserve(
                    session, agent, proposal, row._mapping, snap, now, status)
            if reserved is None and present is not None:
                self._stage_outcome(present(*answer))
        if changed:
            await self._notify(proposal_id)
        if reserved is None:
            return answer
        return await self._submit(agent, answer[0], reserved, present)

    async def _decide_and_reserve(self, session: AsyncSession, agent: Agent,
                                  proposal: TradeProposal, read: Mapping[Any, Any], snap: Snapshot, now: datetime,
                                  status: TradingStatus) -> tuple[Executed, dict[str, Any] | None, bool]:
        """The part of unit (a) for an approved, unchanged proposal: the approval binding and the audit
        bindings, the decision (locks held), the auto-approval judged again, and the reservation with its
        `order.intent` record. `read`: the proposal's row as _PROPOSAL_TO_EXECUTE read it under the locks, with
        its latest approval and both binding records; `status`: the trading state read with the agent in this
        unit. Returns the answer, the trade row's values if reserved, and whether the proposal moved."""
        order = _order_of(proposal)
        approval = ({name: read[f"approval_{name}"] for name in _APPROVAL_NAMES}
                    if read["approval_id"] is not None else None)
        if approval is None or approval["order_hash"] != order.order_hash():
            # The latest approval was not given for exactly this order: an edit of the stored order (even with
            # its hash column) is refused.
            return (proposal, None, [Violation(code=Code.PROPOSAL_CHANGED,
                                               message="the order no longer matches the one that was approved")]
                    ), None, False
        problem = bindings.bound_problem(proposal, read["record_payload"], approval, read["approval_record_payload"])
        if problem is not None:
            log.warning("audit_binding_mismatch", proposal_id=proposal.id, problem=problem)
            return (proposal, None, [Violation(code=Code.AUDIT_MISMATCH,
                                               message=f"{problem}; it will not be sent (an operator should run "
                                                       "`tradewarden audit verify`)")]), None, False
        pricing = price_order(order, snap.quote)
        violations, usage = await self._decide(session, agent, order, proposal.strategy, snap, lock=True,
                                               locked=True, status=status)
        await self._alert_thresholds(session, agent, usage, now)
        if violations:
            usage = await self._with_denials(session, agent, usage)
            encoded = [v.model_dump(mode="json") for v in violations]
            rejected = await execute(session, _REJECT, {"pid": proposal.id, "now": now, "new_violations": encoded})
            if rejected.rowcount != 1:  # type: ignore[attr-defined]
                # a concurrent call (another replica) executed it meanwhile: its order is the answer, and these
                # checks counted that very order against itself
                return (proposal, None, []), None, False
            await self._trip_breaker_if_needed(session, agent, usage, violations)
            rejected_now = _with(proposal, status="rejected", violations=encoded, updated_at=now)
            return (rejected_now, None, violations), None, True
        if proposal.decided_via == "auto":
            # Back to pending_approval if the price now puts it above the auto-approval limit: nothing
            # reserved, nothing sent.
            needs_person = await self._rejudge_auto_approval(session, agent, proposal, pricing)
            if needs_person is not None:
                return (_with(proposal, status="pending_approval", decided_at=None, decided_by=None,
                              decided_via=None, estimated_notional=pricing.estimated_notional,
                              reference_price=pricing.reference_price, updated_at=now),
                        None, [needs_person]), None, True
        won = await execute(session, _MARK_EXECUTING, {"pid": proposal.id, "now": now})
        if won.rowcount != 1:  # type: ignore[attr-defined]
            return (proposal, None, []), None, False  # cannot happen under the locks; answered like a lost race
        event_id = bindings.new_event_id()
        trade: dict[str, Any] = dict(
            id=proposal.id, agent_id=agent.id, proposal_id=proposal.id, client_order_id=proposal.id,
            order_id=None, symbol=order.symbol, side=order.side, quantity=order.qty, notional=order.notional,
            order_type=order.order_type, limit_price=order.limit_price, stop_price=order.stop_price,
            time_in_force=order.time_in_force, reserved_notional=pricing.estimated_notional or Decimal(0),
            price=None, filled_qty=Decimal(0), strategy=proposal.strategy, reasoning=proposal.reasoning,
            status="pending_submit", reject_reason=None,
            created_at=self.clock(), submitted_at=None, executed_at=None,  # stamped after the locks are held
            updated_at=now, audit_event_id=event_id, window_micros=None)  # open: not final
        await execute(session, _INSERT_TRADE, trade)
        await self.record(session=session, actor=f"agent:{agent.id}", kind="order.intent", agent_id=agent.id,
                          payload={"proposal_id": proposal.id, "order": order.canonical_json(),
                                   "reserved_notional": trade["reserved_notional"],
                                   **bindings.binds(agent_trades=trade)},
                          event_id=event_id)
        return (_with(proposal, status="executing", updated_at=now), None, []), trade, True

    async def _rejudge_auto_approval(self, session: AsyncSession, agent: Agent, proposal: TradeProposal,
                                     pricing: Pricing) -> Violation | None:
        """An auto-approval holds only for the price it was given at: judged again on the price at execution
        (and the agent's approval policy now), a proposal that no longer qualifies goes back to waiting for a
        person. None when it still qualifies (or a concurrent call moved it first)."""
        if approval_for(agent.approval, pricing.estimated_notional) == "approved":
            return None
        now = self.clock()
        moved = await session.execute(
            update(TradeProposal).where(TradeProposal.id == proposal.id, TradeProposal.status == "approved",
                                        TradeProposal.decided_via == "auto")
            .values(status="pending_approval", decided_at=None, decided_by=None, decided_via=None,
                    estimated_notional=pricing.estimated_notional, reference_price=pricing.reference_price,
                    updated_at=now).execution_options(synchronize_session=False))
        if moved.rowcount != 1:  # type: ignore[attr-defined]
            return None
        was, now_at = proposal.estimated_notional, pricing.estimated_notional
        ceiling = agent.approval.auto_approve_max_notional
        await self.record(session=session, actor="policy:auto", kind="approval.withdrawn", agent_id=agent.id,
                          payload={"proposal_id": proposal.id, "via": "auto", "trust": "auto",
                                   "approved_notional": was, "notional_now": now_at,
                                   "auto_approve_max_notional": ceiling, "approval_mode": agent.approval.mode})
        at_now = f"${now_at:,.2f}" if now_at is not None else "an unknown amount (no price)"
        at_then = f"${was:,.2f}" if was is not None else "its proposal price"
        return Violation(code=Code.APPROVAL_REQUIRED, message=(
            f"auto-approved at {at_then}, but at the price now the order is {at_now}, above this agent's "
            f"auto-approval limit of ${ceiling:,.2f}: it was not sent and now waits for a person's approval "
            f"(call execute_trade again, or a person runs `tradewarden approvals approve {proposal.id}`)"))

    async def _submit(self, agent: Agent, proposal: TradeProposal, trade: dict[str, Any],
                      present: ExecutePresenter | None) -> Executed:
        """(b) Send the reserved order once. On a timeout the outcome is unknown: look it up by client_order_id,
        never send it again. (c) One unit of work applies the answer (the trade row, legs, position and cash),
        marks the proposal executed and commits the order's outcome with the call's.

        A broker whose orders are rows of our own database (the simulated broker: `joins_units_of`) is sent the
        order from inside unit (c), its writes in a savepoint of that unit (ledger/shared_unit.py): one COMMIT
        for the order and its outcome. Its intent was committed by unit (a) all the same, before it is sent."""
        request = SubmitOrder(client_order_id=trade["client_order_id"], order=_order_of(proposal), agent_id=agent.id)
        joins = getattr(self.broker, "joins_units_of", None)
        if joins is None or not joins(self.sessions):
            broker_order, error = await self._send(request)
            async with self._unit() as session:
                executed = await self._apply_outcome(session, agent, proposal, trade, broker_order, error, present)
            if executed[1] is not None and executed[1].status in OPEN_STATUSES:
                for left_open in self._left_open_listeners:
                    left_open()
        else:
            async with self._unit() as session:
                with shared_unit.sharing(session, self.sessions) as shared:
                    broker_order, error = await self._send(request)
                executed = await self._apply_outcome(session, agent, proposal, trade, broker_order, error, present)
            shared.committed()
        await self._notify(proposal.id)
        return executed

    async def _send(self, request: SubmitOrder) -> tuple[BrokerOrder | None, BrokerError | None]:
        """The broker's answer to the order, or why there is none (the order's outcome may then be unknown).
        Bounded by asyncio.timeout, not wait_for: no task of its own, so a submission inside a unit of work (a
        broker that joins it) does not hand the event loop to other calls while it holds the ledger's writer."""
        try:
            async with asyncio.timeout(self.settings.broker_timeout):
                return await self.broker.submit_order(request), None
        except BrokerError as failure:
            if failure.code == "DUPLICATE_ORDER" or failure.retryable:
                found = await self._lookup(request.client_order_id)
                if found is not None:
                    return found, None
            return None, failure
        except TimeoutError:
            found = await self._lookup(request.client_order_id)
            if found is not None:
                return found, None
            return None, BrokerError("the broker did not answer in time; the order's outcome is unknown and will "
                                     "be reconciled by its client_order_id", retryable=True)

    async def _apply_outcome(self, session: AsyncSession, agent: Agent, proposal: TradeProposal,
                             trade: dict[str, Any], broker_order: BrokerOrder | None, error: BrokerError | None,
                             present: ExecutePresenter | None) -> Executed:
        """Unit (c)'s work: the broker's answer applied to the trade row (and its legs, the position and cash),
        the proposal marked executed, the order's outcome recorded and the call's staged."""
        now = self.clock()
        capital = agent.limits.capital
        violations = ([Violation(code=Code(error.code) if error.code in Code.__members__ else Code.BROKER_ERROR,
                                 message=f"broker: {error.message}")] if error else [])
        # Locked and read again: a refresh or a reconciliation may have booked part of it meanwhile, and
        # two updates of one order must not both book the same fill.
        held: Held | None = None
        if self.settings.is_postgres:  # its rows locked in the one order: trade, position, account
            current = (await execute(session, _TRADE_STATE_LOCKED, {"trade_id": trade["id"]})).one()
        else:
            current = (await execute(session, _TRADE_STATE_AND_HOLDINGS, {"trade_id": trade["id"]})).one()
            held = held_of(current)
        values = {**trade, **{name: current._mapping[name] for name in _TRADE_MUTABLE}}
        book: Book | None = None
        if broker_order is not None:
            values["submitted_at"] = now
            delta = fill_delta(current, broker_order)  # type: ignore[arg-type]
            changes = order_changes(order_id=values["order_id"], status=values["status"],
                                    executed_at=values["executed_at"], order=broker_order, now=now,
                                    filled=delta is not None)
            if delta is not None:
                book = await book_fill(session, agent_id=agent.id, symbol=values["symbol"], side=values["side"],
                                       qty=delta[0], price=delta[1], capital=capital, day=trading_day(now),
                                       now=now, held=held)
            values.update(changes)
        else:
            assert error is not None
            values.update(status="unknown" if error.retryable else "rejected", reject_reason=error.message,
                          updated_at=now)
        values["window_micros"] = traded.window_micros(values["status"], values["quantity"],
                                                       values["reserved_notional"], values["price"],
                                                       values["filled_qty"])
        await execute(session, _UPDATE_TRADE, {f"new_{k}": values[k] for k in _TRADE_MUTABLE} | {
            "trade_id": values["id"]})
        row = transient(AgentTrade, values)
        if broker_order is not None and broker_order.legs:
            await self._book_legs(session, row, broker_order, now, capital, f"agent:{agent.id}")
            book = None  # an exit may have moved the position too: read it as it stands
        await execute(session, _MARK_EXECUTED, {"pid": proposal.id, "now": now})
        await self.record(session=session, actor=f"agent:{agent.id}", kind="order.outcome", agent_id=agent.id,
                          payload={"proposal_id": proposal.id, "status": row.status,
                                   "broker_order_id": row.order_id, "filled_qty": row.filled_qty,
                                   "filled_avg_price": row.price,
                                   "error": error.message if error else None})
        if row.filled_qty:
            if book is None:
                await self._record_position(session, row)
            else:
                await self.record(session=session, actor="system:ledger", kind=event_kinds.KIND_POSITION,
                                  agent_id=agent.id, payload={
                                      "order_id": row.id, "symbol": row.symbol, "qty": book.qty,
                                      "avg_entry_price": book.avg_entry_price, "realized_pl": book.realized_pl})
        executed = _with(proposal, status="executed", updated_at=now)
        if present is not None:
            self._stage_outcome(present(executed, row, violations))
        return executed, row, violations

    async def _record_position(self, session: AsyncSession, trade: AgentTrade) -> None:
        """The agent's position after a fill of `trade` (agent.position.updated), in the fill's transaction."""
        await self.record(session=session, actor="system:ledger", kind=event_kinds.KIND_POSITION,
                          agent_id=trade.agent_id, payload=await position_after_fill(session, trade))

    async def _lookup(self, client_order_id: str) -> BrokerOrder | None:
        try:
            return await asyncio.wait_for(self.broker.get_order_by_client_id(client_order_id),
                                          self.settings.broker_timeout)
        except (BrokerError, TimeoutError) as error:
            log.warning("order_lookup_failed", client_order_id=client_order_id, error=str(error))
            return None

    # --- order state from the broker ---------------------------------------------------------------

    async def _book_legs(self, session: AsyncSession, row: AgentTrade, broker_order: BrokerOrder, now: datetime,
                         capital: Decimal, actor: str) -> None:
        """The entry's exits as the broker reports them: each new leg, status change or fill is booked and
        audited as an order update like any other."""
        for change in await apply_leg_updates(session, row, broker_order, now, capital, trading_day(now)):
            await self.record(session=session, actor=actor, kind="order.updated", agent_id=row.agent_id,
                              payload=change)
            if change["filled_qty"] != change["filled_qty_before"]:  # an exit filled: the position moved
                await self._record_position(session, row)

    async def _has_live_legs(self, trade_id: str) -> bool:
        async with self.sessions() as session:
            found = (await session.execute(select(AgentOrderLeg.id).where(
                AgentOrderLeg.parent_id == trade_id, AgentOrderLeg.status.in_(LIVE_LEG_STATUSES)).limit(1))).first()
        return found is not None

    async def bracket_unchanged(self, trade: AgentTrade, order: BrokerOrder,
                                legs: list[AgentOrderLeg] | None = None) -> bool:
        """The entry and each of its legs are as we last recorded them (nothing to write). `legs`: ours, when
        already read (a read call's one transaction); else they are read here."""
        if (trade.status, trade.filled_qty, trade.order_id) != (order.status, order.filled_qty, order.broker_order_id):
            return False
        if legs is None:
            async with self.sessions() as session:
                legs = (await legs_of(session, [trade.id])).get(trade.id, [])
        ours = {leg.role: leg for leg in legs}
        return len(ours) == len(order.legs) and all(
            (leg := ours.get(theirs.leg_role or "")) is not None
            and (leg.status, leg.filled_qty, leg.order_id, leg.stop_price, leg.hwm)
            == (theirs.status, theirs.filled_qty, theirs.broker_order_id, theirs.stop_price, theirs.hwm)
            for theirs in order.legs)

    async def refresh_trade(self, trade: AgentTrade, known: BrokerOrder | None = None, *,
                            legs: list[AgentOrderLeg] | None = None) -> AgentTrade:
        """Bring one live order (or a filled entry whose exits still work) up to date with the broker
        (fills, cancels, expiries). `known`: the broker's view of it, when just read in a list. `legs`: its
        exits as read with it (LiveTrades), which also says it is live: nothing more is read to find out.
        Returns `trade` itself when nothing was written, else the row as stored now."""
        if trade.status == "pending_submit":
            return trade
        if (known is None and legs is None and trade.status not in LIVE_TRADE_STATUSES
                and not await self._has_live_legs(trade.id)):
            return trade
        broker_order = known or await self._lookup(trade.client_order_id)
        if broker_order is None:
            return trade
        if broker_order.legs and await self.bracket_unchanged(trade, broker_order, legs):
            return trade  # a working bracket is polled often: no write transaction when nothing moved
        if not broker_order.legs and (trade.status, trade.filled_qty, trade.order_id) == (
                broker_order.status, broker_order.filled_qty, broker_order.broker_order_id):
            return trade  # nor for a resting order that did not move
        now = self.clock()
        async with self._unit() as session:
            row = await session.get(AgentTrade, trade.id)
            assert row is not None
            capital = await self._capital(session, row.agent_id)
            before, before_qty = row.status, row.filled_qty
            if await apply_order_update(session, row, broker_order, now, capital, trading_day(now)):
                await self.record(session=session, actor="system:sync", kind="order.updated", agent_id=row.agent_id,
                                  payload={"order_id": row.id, "from": before, "to": row.status,
                                           "filled_qty_before": before_qty, "filled_qty": row.filled_qty,
                                           "filled_avg_price": row.price})
                if row.filled_qty != before_qty:
                    await self._record_position(session, row)
            await self._book_legs(session, row, broker_order, now, capital, "system:sync")
        return row  # as this unit wrote it (the sessions keep their objects loaded after a commit): not read again

    async def refresh_open_trades(self, agent_id: str | None = None) -> int:
        """Refresh every live order (of one agent, or all). Returns how many changed status."""
        async with self.sessions() as session:
            if agent_id is None:
                query = select(AgentTrade).where(or_(AgentTrade.status.in_(LIVE_TRADE_STATUSES - {"pending_submit"}),
                                                     AgentTrade.id.in_(PARENTS_OF_LIVE_LEGS)))
                trades = list((await session.execute(query)).scalars())
                legs: dict[str, list[AgentOrderLeg]] | None = None
            else:
                live = await self.live_trades(session, agent_id)
                trades, legs = live.trades, live.legs
        changed = 0
        for trade, fresh in await self._refresh_trades(trades, legs):
            changed += fresh.status != trade.status
        return changed

    async def live_trades(self, session: AsyncSession, agent_id: str) -> LiveTrades:
        """The agent's orders the broker may still move (live, or entries whose exits still work), with their
        exits: what a refresh compares with the broker, read inside the caller's transaction."""
        query = select(AgentTrade).where(_live_rows_of(agent_id, LIVE_TRADE_STATUSES - {"pending_submit"}))
        trades = list((await session.execute(query)).scalars())
        return LiveTrades(trades, await legs_of(session, [t.id for t in trades]) if trades else {})

    async def refresh_live(self, live: LiveTrades) -> bool:
        """Bring these orders up to date with the broker; True when anything was written (the reads made
        before are then stale)."""
        refreshed = await self._refresh_trades(live.trades, live.legs)
        return any(fresh is not trade for trade, fresh in refreshed)

    async def _refresh_trades(self, trades: list[AgentTrade], legs: Mapping[str, list[AgentOrderLeg]] | None = None
                              ) -> list[tuple[AgentTrade, AgentTrade]]:
        """Each trade with its row after the refresh (the same object when nothing was written). `legs`: the
        trades' exits, when read with them."""
        # One list call for the orders still open at the broker (brackets with working legs included), not
        # one lookup per order: with many resting orders and exits, per-order lookups grow with their square.
        # An order missing from the list (closed since, or beyond its page) is looked up on its own.
        open_orders: dict[str, BrokerOrder] = {}
        if len(trades) > 1:
            try:
                listed = await asyncio.wait_for(self.broker.list_orders(status="open", limit=500),
                                                self.settings.broker_timeout)
                open_orders = {order.client_order_id: order for order in listed}
            except (BrokerError, TimeoutError) as error:
                log.warning("open_orders_unavailable", error=str(error))
        return [(trade, await self.refresh_trade(trade, open_orders.get(trade.client_order_id),
                                                 legs=None if legs is None else legs.get(trade.id, [])))
                for trade in trades]

    async def _capital(self, session: AsyncSession, agent_id: str) -> Decimal:
        row = await session.get(AgentPermissions, agent_id)
        return row.capital if row is not None else Decimal(0)

    # --- cancel ------------------------------------------------------------------------------------

    async def cancel(self, agent: Agent, order_id: str, *, actor: str | None = None) -> AgentTrade | AgentOrderLeg:
        """Cancels reduce risk: allowed while halted or reducing. Only the agent's own orders; an exit (a
        bracket leg) by its own id, e.g. to close the position by hand (its shares are held for the exits).
        `actor`: who asked, when not the agent itself (an operator)."""
        actor = actor or f"agent:{agent.id}"
        async with self.sessions() as session:
            trade = await session.get(AgentTrade, order_id)
            if trade is None:
                trade = (await session.execute(select(AgentTrade).where(AgentTrade.order_id == order_id))
                         ).scalar_one_or_none()
            leg = None if trade is not None else (await session.execute(
                select(AgentOrderLeg).where(or_(AgentOrderLeg.id == order_id, AgentOrderLeg.order_id == order_id)))
            ).scalars().first()
        if leg is not None and leg.agent_id == agent.id:
            return await self._cancel_leg(agent, leg, actor)
        if trade is None or trade.agent_id != agent.id:
            raise deny(Code.ORDER_NOT_FOUND, f"no order {order_id} for this agent")
        trade = await self.refresh_trade(trade)
        if trade.status not in LIVE_TRADE_STATUSES:
            return trade
        if trade.order_id is None:
            raise deny(Code.BROKER_ERROR, "the order's submission is still in flight; try the cancel again")
        await self.record(actor=actor, kind="order.cancel_intent", agent_id=agent.id,
                          payload={"order_id": trade.id, "broker_order_id": trade.order_id})
        broker_order = await asyncio.wait_for(self.broker.cancel_order(trade.order_id), self.settings.broker_timeout)
        now = self.clock()
        async with self._unit() as session:
            row = await session.get(AgentTrade, trade.id)
            assert row is not None
            await apply_order_update(session, row, broker_order, now, agent.limits.capital, trading_day(now))
            await self._book_legs(session, row, broker_order, now, agent.limits.capital, actor)
            await self.record(session=session, actor=actor, kind="order.cancel_outcome",
                              agent_id=agent.id, payload={"order_id": row.id, "status": row.status})
        async with self.sessions() as session:
            fresh = await session.get(AgentTrade, trade.id)
        assert fresh is not None
        return fresh

    async def _cancel_leg(self, agent: Agent, leg: AgentOrderLeg, actor: str) -> AgentOrderLeg:
        if leg.status not in LIVE_LEG_STATUSES:
            return leg
        if leg.order_id is None:
            raise deny(Code.BROKER_ERROR, "the exit is not at the broker yet; try the cancel again")
        await self.record(actor=actor, kind="order.cancel_intent", agent_id=agent.id,
                          payload={"order_id": leg.id, "parent_order_id": leg.parent_id, "role": leg.role,
                                   "broker_order_id": leg.order_id})
        broker_order = await asyncio.wait_for(self.broker.cancel_order(leg.order_id), self.settings.broker_timeout)
        now = self.clock()
        async with self._unit() as session:
            row = await session.get(AgentOrderLeg, leg.id)
            assert row is not None
            await apply_order_update(session, row, broker_order, now, agent.limits.capital, trading_day(now))
            await self.record(session=session, actor=actor, kind="order.cancel_outcome",
                              agent_id=agent.id, payload={"order_id": row.id, "role": row.role, "status": row.status})
        async with self.sessions() as session:
            fresh = await session.get(AgentOrderLeg, leg.id)
        assert fresh is not None
        return fresh

    # --- reads -------------------------------------------------------------------------------------
    # Each read comes in two steps: what the ledger holds, read inside the caller's one read transaction
    # (`read_*`, on a plain pooled connection: ledger.db.read), then what the broker says, outside any
    # transaction (`*_now`). Nothing is written unless the broker reports a change to one of the agent's
    # orders (a reconciliation, audited as such).

    async def read_orders(self, connection: AsyncConnection, agent: Agent, status: str, limit: int) -> OrdersRead:
        """The agent's orders (newest first, at most `limit`) with their exits, and its live orders to check
        with the broker."""
        async with _rows_on(connection) as session:
            return await self._read_orders(session, agent, status, limit)

    async def _read_orders(self, session: AsyncSession, agent: Agent, status: str, limit: int) -> OrdersRead:
        live = await self.live_trades(session, agent.id)
        query = select(AgentTrade).where(AgentTrade.agent_id == agent.id)
        # An entry whose exits still work is open: the parent and its legs are shown together.
        newest_first = AgentTrade.created_at.desc()
        if status == "open":
            query = select(AgentTrade).where(_live_rows_of(agent.id, LIVE_TRADE_STATUSES))
            # Sort the few live rows found by index. Ordered by the bare column, SQLite walks the agent's
            # whole history backwards by (agent_id, created_at) instead, to spare itself that sort.
            newest_first = func.coalesce(AgentTrade.created_at, AgentTrade.created_at).desc()
        elif status == "closed":
            query = query.where(AgentTrade.status.not_in(LIVE_TRADE_STATUSES),
                                AgentTrade.id.not_in(PARENTS_OF_LIVE_LEGS))
        trades = list((await session.execute(query.order_by(newest_first).limit(limit))).scalars())
        known = {trade.id: live.legs.get(trade.id, []) for trade in live.trades}
        missing = [t.id for t in trades if t.id not in known]
        legs = {**known, **(await legs_of(session, missing) if missing else {})}
        return OrdersRead(live=live, trades=trades, legs={t.id: legs[t.id] for t in trades if legs.get(t.id)},
                          status=status, limit=limit)

    async def orders_now(self, agent: Agent, found: OrdersRead
                         ) -> tuple[list[AgentTrade], dict[str, list[AgentOrderLeg]]]:
        """`found` brought up to date with the broker: read again only when the broker changed something."""
        if not await self.refresh_live(found.live):
            return found.trades, found.legs
        async with read(self.sessions) as connection:
            fresh = await self.read_orders(connection, agent, found.status, found.limit)
        return fresh.trades, fresh.legs

    async def orders(self, agent: Agent, status: str, limit: int) -> list[AgentTrade]:
        async with read(self.sessions) as connection:
            found = await self.read_orders(connection, agent, status, limit)
        trades, _ = await self.orders_now(agent, found)
        return trades

    async def order_legs(self, trades: list[AgentTrade]) -> dict[str, list[AgentOrderLeg]]:
        """The exits of these orders, by order id."""
        async with self.sessions() as session:
            return await legs_of(session, [t.id for t in trades])

    async def read_book(self, connection: AsyncConnection, agent: Agent) -> BookRead:
        """The agent's positions and cash, and its live orders to check with the broker. An agent with no
        account row yet (nothing decided yet) has its capital as cash: the row itself is created by its first
        decision (ensure_agent_account), never by a read."""
        account = (await execute(connection, _ACCOUNT_CASH, {"agent_id": agent.id})).first()
        live = LiveTrades([], {})
        if (await execute(connection, _ANY_LIVE_TRADE_OF_AGENT, {"agent_id": agent.id})).first() is not None:
            async with _rows_on(connection) as session:
                live = await self.live_trades(session, agent.id)
        rows = [transient(AgentPosition, row._mapping)
                for row in await execute(connection, _POSITIONS_OF_AGENT, {"agent_id": agent.id})]
        return BookRead(live=live, positions=rows, cash=account.cash if account else agent.limits.capital)

    async def book_now(self, agent: Agent, book: BookRead) -> tuple[list[AgentPosition], dict[str, Quote], Decimal]:
        """`book` brought up to date with the broker (read again only when the broker changed something),
        with quotes for what it holds."""
        if await self.refresh_live(book.live):
            async with read(self.sessions) as connection:
                book = await self.read_book(connection, agent)
        symbols = [p.symbol for p in book.positions if p.qty != 0]
        quotes: dict[str, Quote] = {}
        if symbols:
            try:
                quotes = await asyncio.wait_for(self.broker.get_quotes(symbols), self.settings.broker_timeout)
            except (BrokerError, TimeoutError) as error:
                log.warning("quotes_unavailable", error=str(error))
        return book.positions, quotes, book.cash

    async def positions(self, agent: Agent) -> tuple[list[AgentPosition], dict[str, Quote], Decimal]:
        """The agent's positions, their quotes, and the agent's cash."""
        async with read(self.sessions) as connection:
            book = await self.read_book(connection, agent)
        return await self.book_now(agent, book)

    async def account(self) -> Account | None:
        try:
            return await asyncio.wait_for(self.broker.get_account(), self.settings.broker_timeout)
        except (BrokerError, TimeoutError):
            return None

    async def market_clock(self) -> dict[str, MarketClock]:
        """Per asset class: open now, next open and close. US equities from the broker's clock when the broker
        is Alpaca (the calendar if it cannot be asked), else from the exchange calendar; crypto never closes."""
        equity: MarketClock | None = None
        if self.broker.name == "alpaca":
            try:
                equity = await asyncio.wait_for(self.broker.get_clock(), self.settings.broker_timeout)
            except (BrokerError, TimeoutError) as error:
                log.warning("broker_clock_unavailable", error=str(error))
        if equity is None:
            # The calendar's first load takes ~0.5 s of CPU (pandas): never on the event loop.
            equity = await asyncio.to_thread(calendar_clock, self.clock())
        return {"us_equity": equity, "crypto": MarketClock(is_open=True)}

    async def read_usage(self, connection: AsyncConnection, agent: Agent) -> tuple[TradingStatus, Usage]:
        """Trading state and today's usage, as the next decision would see them. Without an account row
        load_usage starts the agent from its capital, as the row its first decision creates would."""
        now = self.clock()
        probe = OrderRequest(symbol="*", side="buy", qty=Decimal(0))
        # Core statements only: run on the read's connection, without an ORM session around them.
        status = await self.trading_status(connection, agent.id)
        usage = await load_usage(connection, agent_id=agent.id, order=probe, limits=agent.limits, quotes={},
                                 now=now, with_denials=False)  # the status shows no denial count
        return status, usage

    async def usage_today(self, agent: Agent) -> tuple[TradingStatus, Usage]:
        async with read(self.sessions) as connection:
            return await self.read_usage(connection, agent)

    # --- read-only calls: one read transaction, one write unit for their records ----------------------

    async def handle_read(self, tool: str, agent_id: str | None, args: Mapping[str, Any],
                          read_ledger: Callable[[AsyncConnection, Agent], Awaitable[T]],
                          answer: Callable[[Agent, T], Awaitable[R]]) -> R:
        """Run a call that only reads: identify the agent and `read_ledger` in ONE read transaction (a plain
        pooled connection, ledger.db.read; on SQLite a deferred transaction: it neither takes nor waits for the
        write lock), then `answer` from what was read and the broker, outside any transaction. Its intent and
        outcome (or denial, or failure) are appended together afterwards in one small write unit, which takes
        the writer only for that append.

        The records are those Gate.handle writes (same kinds, actor, payloads). A reconciliation the answer
        causes (the broker reports a fill) commits the call's intent with it, as in Gate.handle, so the log
        never shows the change before who asked."""
        call = CallRecord(tool=tool, agent_id=agent_id, args=args, ts=self.clock())
        token = _current_call.set(call)
        try:
            async with read(self.sessions) as connection:
                row, held = await self._agent_row(connection, agent_id) if agent_id else (None, frozenset[str]())
                agent = self._identify(agent_id, row, held)
                found = await read_ledger(connection, agent)
            result = await answer(agent, found)
        except Exception as error:
            await self._fail(call, error)
        finally:
            _current_call.reset(token)
        await self._finish_or_deny(call, "tool.outcome", _outcome_payload(result))
        return result

    # --- proposal change notifications (resources) -------------------------------------------------

    def on_order_left_open(self, listener: Callable[[], None]) -> Callable[[], None]:
        """`listener()` runs (synchronously, so it must only take note) each time an order sent to a broker
        outside the ledger (Alpaca) was answered still open, once its outcome is committed: its fill will
        come from the broker later (the reconciler's poll brings it). Returns what removes the listener."""
        self._left_open_listeners.append(listener)
        return lambda: self._left_open_listeners.remove(listener)

    def on_proposal_change(self, listener: ProposalListener) -> None:
        self._proposal_listeners.append(listener)

    async def proposal_changed(self, proposal_id: str) -> None:
        """Tell the listeners that a proposal or its order changed outside a tool call (reconciliation)."""
        await self._notify(proposal_id)

    async def _notify(self, proposal_id: str) -> None:
        for listener in self._proposal_listeners:
            try:
                await listener(proposal_id)
            except Exception as error:  # a listener must never break a trade
                log.warning("proposal_listener_failed", error=str(error))


def client_may_decide(agent: Agent, proposal: TradeProposal) -> bool:
    """Whether a person in the MCP client may approve: not when the agent (now, or when it proposed) is in
    `operator` mode, where approvals come only out of band."""
    return agent.approval.mode != "operator" and proposal.approval_mode != "operator"


# Orders of proposals without exits, by their exact fields (Decimals as their text, so 1 and 1.0 stay apart): an
# execution needs its proposal's order several times (the snapshot, the stop reasons, the decision, the broker)
# and validating one costs more than a statement. OrderRequest is frozen, so sharing one is safe.
_ORDERS_SEEN: dict[tuple[Any, ...], OrderRequest] = {}
_ORDERS_SEEN_MAX = 256


_ORDER_COLUMNS = ("exits", "symbol", "side", "qty", "notional", "order_type", "limit_price", "stop_price",
                  "time_in_force", "extended_hours")


def _order_of(proposal: TradeProposal) -> OrderRequest:
    stored = loaded_values(proposal, _ORDER_COLUMNS)  # read 3-4 times an execution: not attribute by attribute
    if stored["exits"]:
        return _new_order_of(proposal)
    key = (stored["symbol"], stored["side"], str(stored["qty"]), str(stored["notional"]), stored["order_type"],
           str(stored["limit_price"]), str(stored["stop_price"]), stored["time_in_force"], stored["extended_hours"])
    order = _ORDERS_SEEN.get(key)
    if order is None:
        order = _new_order_of(proposal)
        if len(_ORDERS_SEEN) >= _ORDERS_SEEN_MAX:
            _ORDERS_SEEN.clear()
        _ORDERS_SEEN[key] = order
    return order


def _new_order_of(proposal: TradeProposal) -> OrderRequest:
    return OrderRequest(symbol=proposal.symbol, side=proposal.side,  # type: ignore[arg-type]
                        qty=proposal.qty, notional=proposal.notional,
                        order_type=proposal.order_type,  # type: ignore[arg-type]
                        limit_price=proposal.limit_price, stop_price=proposal.stop_price,
                        time_in_force=proposal.time_in_force,  # type: ignore[arg-type]
                        extended_hours=proposal.extended_hours, **exits_from_json(proposal.exits))


def _decode_overrides(raw: Mapping[str, Any] | None) -> dict[str, Any]:
    """Limits are stored as JSON: money comes back as strings, and is read back as Decimal."""
    decoded: dict[str, Any] = {}
    for key, value in (raw or {}).items():
        textual = key in ("breaker_action", "max_risk_per_trade")  # "1%" is a limit, not a number
        decoded[key] = Decimal(value) if isinstance(value, str) and not textual else value
    return decoded

# Every statement above is a constant of this module: prepared for the driver on its first run (fast_execute.prebuilt).
prebuilt_statements(globals())
