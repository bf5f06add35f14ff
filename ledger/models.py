"""Tables of the system of record. Schema changes go through Alembic migrations in migrations/ only.

No `from __future__ import annotations` here: the declarative mapping reads every `Mapped[...]` annotation, and
from strings it evaluates each one again (~400 evals with their clean-up, ~3-4 ms of CPU before a stdio server's
first answer); evaluated by Python when the class is defined, they cost next to nothing.
"""

from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy import util as sqlalchemy_util
from sqlalchemy.event import listens_for
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import BigInteger

from ledger import traded
from ledger.mapped_attributes import bind_attribute_dispatch
from ledger.types import ExactDecimal, UTCDateTime

# The Alembic revision these models match; the server upgrades to it at start.
SCHEMA_REVISION = "0011"

GLOBAL_SCOPE = "*"  # trading_state row that applies to every agent


class PartialIndex(Index):
    """An index with a WHERE clause on SQLite and PostgreSQL, whose PostgreSQL option is attached when PostgreSQL's
    options are first read (compiling its DDL, comparing or copying the index), not when the model is defined: a
    `postgresql_where=` argument makes SQLAlchemy import its whole PostgreSQL dialect to validate it, ~45 ms of
    CPU before a stdio server on SQLite can answer (tests/server/test_startup.py)."""

    def __init__(self, name: str, *columns: str, where: str) -> None:
        self._postgresql_where = text(where)
        super().__init__(name, *columns, sqlite_where=text(where))

    @sqlalchemy_util.memoized_property
    def dialect_options(self) -> Any:
        def options_of(dialect_name: str) -> Any:
            options = self._kw_reg_for_dialect_cls(dialect_name)
            if dialect_name == "postgresql":
                options["where"] = self._postgresql_where
            return options

        return sqlalchemy_util.PopulateDict(options_of)

    @property
    def dialect_kwargs(self) -> Any:
        self.dialect_options["postgresql"]  # read: listed with the others from now on
        return super().dialect_kwargs


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {Decimal: ExactDecimal, datetime: UTCDateTime, dict[str, Any]: JSON,
                           list[Any]: JSON}


@listens_for(Base.registry, "before_configured")
def _bind_attribute_dispatch(registry: Any) -> None:
    """Each column attribute's event dispatch bound before configuration reads it (ledger/mapped_attributes.py:
    ~3.5 ms less CPU before a fresh server's first proposal answers)."""
    bind_attribute_dispatch(registry)


class AgentPermissions(Base):
    """One agent: its limits (before agent_risk_multiplier), approval mode and credentials."""

    __tablename__ = "agent_trading_permissions"

    agent_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    max_trade_size: Mapped[Decimal]
    max_position_size: Mapped[Decimal]
    max_daily_trades: Mapped[int] = mapped_column(Integer)
    allowed_symbols: Mapped[list[Any]]
    allowed_strategies: Mapped[list[Any]]
    risk_level: Mapped[str] = mapped_column(String(16))
    approval: Mapped[str] = mapped_column(String(16))
    auto_approve_max_notional: Mapped[Decimal]
    # Further limits of the risk engine (overrides of the risk_level defaults), by name.
    limits: Mapped[dict[str, Any]] = mapped_column(default=dict)
    capital: Mapped[Decimal]  # capital allocated to this agent: its own buying power
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    source: Mapped[str] = mapped_column(String(16), default="config")  # config | cli
    token_hash: Mapped[str | None] = mapped_column(String(128), nullable=True, index=True)
    token_rotated_at: Mapped[datetime | None] = mapped_column(nullable=True)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    # Settings an operator set ({field: {"by": actor, "at": ISO time}}): a config sync leaves them alone.
    operator_overrides: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default="{}")


class TradeProposal(Base):
    """A checked order waiting to be executed; its id becomes the broker's client_order_id."""

    __tablename__ = "trade_proposals"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    agent_id: Mapped[str] = mapped_column(String(64), index=True)
    symbol: Mapped[str] = mapped_column(String(32))
    side: Mapped[str] = mapped_column(String(4))
    qty: Mapped[Decimal | None] = mapped_column(nullable=True)
    notional: Mapped[Decimal | None] = mapped_column(nullable=True)
    order_type: Mapped[str] = mapped_column(String(16))
    limit_price: Mapped[Decimal | None] = mapped_column(nullable=True)
    stop_price: Mapped[Decimal | None] = mapped_column(nullable=True)
    time_in_force: Mapped[str] = mapped_column(String(8))
    extended_hours: Mapped[bool] = mapped_column(Boolean, default=False)
    strategy: Mapped[str | None] = mapped_column(String(64), nullable=True)
    reasoning: Mapped[str] = mapped_column(Text)
    confidence: Mapped[float | None] = mapped_column(Float, nullable=True)
    # approved | pending_approval | rejected | declined | expired | executing | executed
    status: Mapped[str] = mapped_column(String(20), index=True)
    order_hash: Mapped[str] = mapped_column(String(64))
    reference_price: Mapped[Decimal | None] = mapped_column(nullable=True)
    estimated_notional: Mapped[Decimal | None] = mapped_column(nullable=True)
    violations: Mapped[list[Any]] = mapped_column(default=list)
    approval_mode: Mapped[str] = mapped_column(String(16))
    trading_mode: Mapped[str] = mapped_column(String(8))
    created_at: Mapped[datetime] = mapped_column(index=True)
    expires_at: Mapped[datetime]
    decided_at: Mapped[datetime | None] = mapped_column(nullable=True)
    decided_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    decided_via: Mapped[str | None] = mapped_column(String(16), nullable=True)  # auto | client | operator
    decision_note: Mapped[str | None] = mapped_column(Text, nullable=True)
    updated_at: Mapped[datetime]
    # The audit record that last set the decisive fields (policies/bindings.py); "legacy" before 0003.
    audit_event_id: Mapped[str | None] = mapped_column(String(36), nullable=True, default=None)
    # The order's exits (policies.orders.OrderRequest.exits_json), part of the approved order's hash.
    exits: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True, default=None)


class Approval(Base):
    """Every approval decision: who, how, when, and for which exact order (its hash)."""

    __tablename__ = "approvals"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    proposal_id: Mapped[str] = mapped_column(ForeignKey("trade_proposals.id"), index=True)
    decision: Mapped[str] = mapped_column(String(16))  # approved | declined
    decided_by: Mapped[str] = mapped_column(String(128))
    via: Mapped[str] = mapped_column(String(16))  # auto | client | operator
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    order_hash: Mapped[str] = mapped_column(String(64))  # the order approved (after any shrinking)
    # How far the approver is trusted: auto (the policy), client (whoever runs the agent's MCP client),
    # operator (an authenticated person). The least trusted is the default of rows written without one.
    trust: Mapped[str] = mapped_column(String(16), server_default="client")
    # When the approver shrank the order: the order as proposed (canonical JSON) and its hash.
    original_order_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    original_order: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime]
    audit_event_id: Mapped[str | None] = mapped_column(String(36), nullable=True, default=None)  # bindings.py


class OperatorRecord(Base):
    """A person who operates the deployment: role and a hash of their bearer token (never the token)."""

    __tablename__ = "operators"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))  # viewer | approver | admin
    token_hash: Mapped[str] = mapped_column(String(128), unique=True, index=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    token_rotated_at: Mapped[datetime | None] = mapped_column(nullable=True)


class OperatorSession(Base):
    """A console login: the sha256 of the random id the browser holds (never the id), whose it is, and the
    operator's token rotation it was made under (a rotation or a disable ends it)."""

    __tablename__ = "operator_sessions"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    operator: Mapped[str] = mapped_column(String(64), index=True)
    token_rotated_at: Mapped[datetime | None] = mapped_column(nullable=True)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]


class AgentTrade(Base):
    """One order sent (or being sent) to the broker. The row is also the reservation of usage:
    inserted in the same transaction as the decision that allowed it, so limits hold under concurrency."""

    __tablename__ = "agent_trades"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    agent_id: Mapped[str] = mapped_column(String(64))
    proposal_id: Mapped[str] = mapped_column(ForeignKey("trade_proposals.id"), unique=True)
    client_order_id: Mapped[str] = mapped_column(String(64), unique=True)
    order_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)  # broker's id
    symbol: Mapped[str] = mapped_column(String(32))
    side: Mapped[str] = mapped_column(String(4))
    quantity: Mapped[Decimal | None] = mapped_column(nullable=True)
    notional: Mapped[Decimal | None] = mapped_column(nullable=True)
    order_type: Mapped[str] = mapped_column(String(16))
    limit_price: Mapped[Decimal | None] = mapped_column(nullable=True)
    stop_price: Mapped[Decimal | None] = mapped_column(nullable=True)
    time_in_force: Mapped[str] = mapped_column(String(8))
    reserved_notional: Mapped[Decimal]  # priced at the larger of limit/stop price and the reference quote
    price: Mapped[Decimal | None] = mapped_column(nullable=True)  # filled average price
    filled_qty: Mapped[Decimal] = mapped_column(default=Decimal(0))
    strategy: Mapped[str | None] = mapped_column(String(64), nullable=True)
    reasoning: Mapped[str] = mapped_column(Text)
    # pending_submit | new | accepted | partially_filled | filled | canceled | expired | rejected | unknown
    status: Mapped[str] = mapped_column(String(20))
    reject_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime]
    submitted_at: Mapped[datetime | None] = mapped_column(nullable=True)
    executed_at: Mapped[datetime | None] = mapped_column(nullable=True)
    updated_at: Mapped[datetime]
    audit_event_id: Mapped[str | None] = mapped_column(String(36), nullable=True, default=None)  # bindings.py
    # A final row's rolling-window notional in whole micro-dollars, summed exactly by SQL (ledger/traded.py).
    window_micros: Mapped[int | None] = mapped_column(BigInteger, nullable=True, default=None)

    __table_args__ = (
        Index("ix_agent_trades_agent_created", "agent_id", "created_at"),
        Index("ix_agent_trades_status", "status"),
        # An agent's live orders without walking its whole history (migration 0010).
        Index("ix_agent_trades_agent_status_created", "agent_id", "status", "created_at"),
        # The usage read's rolling sum and counts read this index alone; the rows whose window notional is not
        # stored (open ones, and rows written without the ORM) are found by the partial one (migration 0011).
        Index("ix_agent_trades_agent_created_status_micros", "agent_id", "created_at", "status", "window_micros"),
        PartialIndex("ix_agent_trades_unstored_micros", "agent_id", "created_at", where="window_micros IS NULL"),
    )


@listens_for(AgentTrade, "before_insert")
@listens_for(AgentTrade, "before_update")
def _set_window_micros(_mapper: Any, _connection: Any, trade: AgentTrade) -> None:
    """Keep window_micros in step with the row's status and fill on every ORM write (ledger/traded.py)."""
    trade.window_micros = traded.window_micros(trade.status, trade.quantity, trade.reserved_notional,
                                               trade.price, trade.filled_qty)


class AgentOrderLeg(Base):
    """One exit of a bracket (stop_loss, take_profit or trailing_stop), child of the entry's agent_trades
    row. A leg is reduce-only: it is no reservation and not in the usage the checks read, but its fills
    are booked to the agent's position and cash like any other (ledger.accounting.apply_order_update)."""

    __tablename__ = "agent_order_legs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    parent_id: Mapped[str] = mapped_column(ForeignKey("agent_trades.id"))
    agent_id: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(16))  # stop_loss | take_profit | trailing_stop
    order_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)  # broker's id
    symbol: Mapped[str] = mapped_column(String(32))
    side: Mapped[str] = mapped_column(String(4))
    quantity: Mapped[Decimal | None] = mapped_column(nullable=True)
    order_type: Mapped[str] = mapped_column(String(16))
    limit_price: Mapped[Decimal | None] = mapped_column(nullable=True)
    stop_price: Mapped[Decimal | None] = mapped_column(nullable=True)
    trail_percent: Mapped[Decimal | None] = mapped_column(nullable=True)
    trail_price: Mapped[Decimal | None] = mapped_column(nullable=True)
    hwm: Mapped[Decimal | None] = mapped_column(nullable=True)
    time_in_force: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(20), index=True)  # held until the entry fills, then new, ...
    filled_qty: Mapped[Decimal] = mapped_column(default=Decimal(0))
    price: Mapped[Decimal | None] = mapped_column(nullable=True)  # filled average price
    reject_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime]
    executed_at: Mapped[datetime | None] = mapped_column(nullable=True)
    updated_at: Mapped[datetime]

    __table_args__ = (UniqueConstraint("parent_id", "role"),)


class AgentPosition(Base):
    """The agent's own position per symbol, built from its fills (the broker account is shared)."""

    __tablename__ = "agent_positions"

    agent_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    symbol: Mapped[str] = mapped_column(String(32), primary_key=True)
    qty: Mapped[Decimal]
    avg_entry_price: Mapped[Decimal]
    realized_pl: Mapped[Decimal]
    updated_at: Mapped[datetime]


class AgentAccount(Base):
    """The agent's cash out of its allocated capital, its equity peak and its start-of-day equity."""

    __tablename__ = "agent_accounts"

    agent_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    cash: Mapped[Decimal]
    equity_peak: Mapped[Decimal]
    day: Mapped[str] = mapped_column(String(10))  # trading day (YYYY-MM-DD, New York) of day_start_equity
    day_start_equity: Mapped[Decimal]
    updated_at: Mapped[datetime]


class TradingState(Base):
    """active | reducing | halted, for everyone (scope '*') or one agent. Only people change it."""

    __tablename__ = "trading_state"

    scope: Mapped[str] = mapped_column(String(64), primary_key=True)
    state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    changed_by: Mapped[str] = mapped_column(String(128))
    changed_at: Mapped[datetime]


class AuditEvent(Base):
    """One hash-chained audit record: hash = sha256(prev_hash || canonical record)."""

    __tablename__ = "audit_events"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    event_id: Mapped[str] = mapped_column(String(36), unique=True)
    ts: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(128))  # agent:ID | operator:NAME | system
    agent_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    kind: Mapped[str] = mapped_column(String(48))
    tool: Mapped[str | None] = mapped_column(String(48), nullable=True)
    payload: Mapped[str] = mapped_column(Text)  # canonical JSON, secrets redacted
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditHead(Base):
    """The chain's last (seq, hash): the lock appends serialize on, and what catches truncation."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(Integer)
    hash: Mapped[str] = mapped_column(String(64))


class SimOrder(Base):
    """An order at the simulated broker (the embedded default), kept in the database to survive restarts."""

    __tablename__ = "sim_orders"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    client_order_id: Mapped[str] = mapped_column(String(64), unique=True)
    symbol: Mapped[str] = mapped_column(String(32))
    side: Mapped[str] = mapped_column(String(4))
    qty: Mapped[Decimal | None] = mapped_column(nullable=True)
    notional: Mapped[Decimal | None] = mapped_column(nullable=True)
    order_type: Mapped[str] = mapped_column(String(16))
    limit_price: Mapped[Decimal | None] = mapped_column(nullable=True)
    stop_price: Mapped[Decimal | None] = mapped_column(nullable=True)
    time_in_force: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(20), index=True)
    filled_qty: Mapped[Decimal]
    filled_avg_price: Mapped[Decimal | None] = mapped_column(nullable=True)
    submitted_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    filled_at: Mapped[datetime | None] = mapped_column(nullable=True)
    # Bracket legs: the entry's id, the leg's role, and a trailing stop's trail and high-water mark.
    parent_id: Mapped[str | None] = mapped_column(String(36), nullable=True, index=True, default=None)
    leg_role: Mapped[str | None] = mapped_column(String(16), nullable=True, default=None)
    trail_percent: Mapped[Decimal | None] = mapped_column(nullable=True, default=None)
    trail_price: Mapped[Decimal | None] = mapped_column(nullable=True, default=None)
    hwm: Mapped[Decimal | None] = mapped_column(nullable=True, default=None)

    # The fills since the last one applied, as a range (migration 0010).
    __table_args__ = (Index("ix_sim_orders_status_filled_at", "status", "filled_at"),)


class SimAccount(Base):
    """The simulated broker's account: its starting cash (positions and cash follow from its fills)."""

    __tablename__ = "sim_account"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    starting_cash: Mapped[Decimal]
    created_at: Mapped[datetime]


class KeyValue(Base):
    """Small pieces of server state (e.g. last reconciliation, reconciliation drift)."""

    __tablename__ = "server_state"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[dict[str, Any]]
    updated_at: Mapped[datetime]


class WebhookDelivery(Base):
    """Where delivery to one webhook endpoint stands: the last audit record delivered (or passed over), and
    the lease of the replica delivering now (one sender per endpoint; another takes over when it lapses)."""

    __tablename__ = "webhook_deliveries"

    endpoint: Mapped[str] = mapped_column(String(64), primary_key=True)  # [[webhooks]] name, or url digest
    cursor: Mapped[int] = mapped_column(Integer)  # audit seq up to which every event was sent or passed over
    lease_owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # failed attempts at the next event
    next_attempt_at: Mapped[datetime | None] = mapped_column(nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    delivered: Mapped[int] = mapped_column(Integer, default=0)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    dropped: Mapped[int] = mapped_column(Integer, default=0)  # given up after 24 h
    updated_at: Mapped[datetime]


__all__ = [
    "GLOBAL_SCOPE", "SCHEMA_REVISION", "AgentAccount", "AgentOrderLeg", "AgentPermissions", "AgentPosition",
    "AgentTrade", "Approval", "AuditEvent", "AuditHead", "Base", "KeyValue", "OperatorRecord", "OperatorSession",
    "SimAccount", "SimOrder", "TradeProposal", "TradingState", "UniqueConstraint", "WebhookDelivery",
]
