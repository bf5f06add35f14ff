"""Tables of the system of record. Schema changes go through Alembic migrations in migrations/ only.

Each table is written as SQLAlchemy Core (`__table__`, the schema) and its class mapped onto it imperatively
(`registry.map_imperatively`, through @_mapped): the same tables and the same classes as a declarative mapping,
with ~6 ms less CPU at import, which every server pays before its first answer. Declarative mapping scans every
class and every `mapped_column()` with its `Mapped[...]` annotation (types and nullability read from the
annotations) at class creation: ~20.5 ms of CPU for these 16 tables, against ~14 ms for the Core tables and
their mappers (SQLAlchemy 2.1, this repository's machine). The `Mapped[...]` annotations below each table are for
type checkers and readers: nothing reads them at run time.
"""

from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar, TypeVar

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy import util as sqlalchemy_util
from sqlalchemy.event import listens_for
from sqlalchemy.orm import Mapped, registry
from sqlalchemy.types import BigInteger

from ledger import traded
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


_registry = registry()


class Base:
    """What every mapped class has: the metadata of all the tables (migrations compare it with the database) and
    the constructor a declarative base gives, keyword arguments for mapped attributes (any other name is a
    TypeError)."""

    metadata: ClassVar[MetaData] = _registry.metadata
    __tablename__: ClassVar[str]
    __table__: ClassVar[Table]

    def __init__(self, **values: Any) -> None:
        model = type(self)
        for name, value in values.items():
            if not hasattr(model, name):
                raise TypeError(f"{name!r} is an invalid keyword argument for {model.__name__}")
            setattr(self, name, value)


_Model = TypeVar("_Model", bound=type[Base])


def _mapped(model: _Model) -> _Model:
    """Map the class onto its `__table__` (its attributes become the table's columns)."""
    _registry.map_imperatively(model, model.__table__)
    return model


@_mapped
class AgentPermissions(Base):
    """One agent: its limits (before agent_risk_multiplier), approval mode and credentials."""

    __tablename__ = "agent_trading_permissions"
    __table__ = Table(
        __tablename__, Base.metadata,
        Column("agent_id", String(64), primary_key=True),
        Column("max_trade_size", ExactDecimal, nullable=False),
        Column("max_position_size", ExactDecimal, nullable=False),
        Column("max_daily_trades", Integer, nullable=False),
        Column("allowed_symbols", JSON, nullable=False),
        Column("allowed_strategies", JSON, nullable=False),
        Column("risk_level", String(16), nullable=False),
        Column("approval", String(16), nullable=False),
        Column("auto_approve_max_notional", ExactDecimal, nullable=False),
        # Further limits of the risk engine (overrides of the risk_level defaults), by name.
        Column("limits", JSON, nullable=False, default=dict),
        Column("capital", ExactDecimal, nullable=False),  # capital allocated to this agent: its own buying power
        Column("enabled", Boolean, nullable=False, default=True),
        Column("source", String(16), nullable=False, default="config"),  # config | cli
        Column("token_hash", String(128), index=True),
        Column("token_rotated_at", UTCDateTime),
        Column("created_at", UTCDateTime, nullable=False),
        Column("updated_at", UTCDateTime, nullable=False),
        # Settings an operator set ({field: {"by": actor, "at": ISO time}}): a config sync leaves them alone.
        Column("operator_overrides", JSON, nullable=False, default=dict, server_default="{}"),
    )

    agent_id: Mapped[str]
    max_trade_size: Mapped[Decimal]
    max_position_size: Mapped[Decimal]
    max_daily_trades: Mapped[int]
    allowed_symbols: Mapped[list[Any]]
    allowed_strategies: Mapped[list[Any]]
    risk_level: Mapped[str]
    approval: Mapped[str]
    auto_approve_max_notional: Mapped[Decimal]
    limits: Mapped[dict[str, Any]]
    capital: Mapped[Decimal]
    enabled: Mapped[bool]
    source: Mapped[str]
    token_hash: Mapped[str | None]
    token_rotated_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    operator_overrides: Mapped[dict[str, Any]]


@_mapped
class TradeProposal(Base):
    """A checked order waiting to be executed; its id becomes the broker's client_order_id."""

    __tablename__ = "trade_proposals"
    __table__ = Table(
        __tablename__, Base.metadata,
        Column("id", String(36), primary_key=True),
        Column("agent_id", String(64), nullable=False, index=True),
        Column("symbol", String(32), nullable=False),
        Column("side", String(4), nullable=False),
        Column("qty", ExactDecimal),
        Column("notional", ExactDecimal),
        Column("order_type", String(16), nullable=False),
        Column("limit_price", ExactDecimal),
        Column("stop_price", ExactDecimal),
        Column("time_in_force", String(8), nullable=False),
        Column("extended_hours", Boolean, nullable=False, default=False),
        Column("strategy", String(64)),
        Column("reasoning", Text, nullable=False),
        Column("confidence", Float),
        # approved | pending_approval | rejected | declined | expired | executing | executed
        Column("status", String(20), nullable=False, index=True),
        Column("order_hash", String(64), nullable=False),
        Column("reference_price", ExactDecimal),
        Column("estimated_notional", ExactDecimal),
        Column("violations", JSON, nullable=False, default=list),
        Column("approval_mode", String(16), nullable=False),
        Column("trading_mode", String(8), nullable=False),
        Column("created_at", UTCDateTime, nullable=False, index=True),
        Column("expires_at", UTCDateTime, nullable=False),
        Column("decided_at", UTCDateTime),
        Column("decided_by", String(128)),
        Column("decided_via", String(16)),  # auto | client | operator
        Column("decision_note", Text),
        Column("updated_at", UTCDateTime, nullable=False),
        # The audit record that last set the decisive fields (policies/bindings.py); "legacy" before 0003.
        Column("audit_event_id", String(36)),
        # The order's exits (policies.orders.OrderRequest.exits_json), part of the approved order's hash.
        Column("exits", JSON),
    )

    id: Mapped[str]
    agent_id: Mapped[str]
    symbol: Mapped[str]
    side: Mapped[str]
    qty: Mapped[Decimal | None]
    notional: Mapped[Decimal | None]
    order_type: Mapped[str]
    limit_price: Mapped[Decimal | None]
    stop_price: Mapped[Decimal | None]
    time_in_force: Mapped[str]
    extended_hours: Mapped[bool]
    strategy: Mapped[str | None]
    reasoning: Mapped[str]
    confidence: Mapped[float | None]
    status: Mapped[str]
    order_hash: Mapped[str]
    reference_price: Mapped[Decimal | None]
    estimated_notional: Mapped[Decimal | None]
    violations: Mapped[list[Any]]
    approval_mode: Mapped[str]
    trading_mode: Mapped[str]
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    decided_at: Mapped[datetime | None]
    decided_by: Mapped[str | None]
    decided_via: Mapped[str | None]
    decision_note: Mapped[str | None]
    updated_at: Mapped[datetime]
    audit_event_id: Mapped[str | None]
    exits: Mapped[dict[str, Any] | None]


@_mapped
class Approval(Base):
    """Every approval decision: who, how, when, and for which exact order (its hash)."""

    __tablename__ = "approvals"
    __table__ = Table(
        __tablename__, Base.metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("proposal_id", String(36), ForeignKey("trade_proposals.id"), nullable=False, index=True),
        Column("decision", String(16), nullable=False),  # approved | declined
        Column("decided_by", String(128), nullable=False),
        Column("via", String(16), nullable=False),  # auto | client | operator
        Column("note", Text),
        Column("order_hash", String(64), nullable=False),
        # How far the approver is trusted: auto (the policy), client (whoever runs the agent's MCP client),
        # operator (an authenticated person). The least trusted is the default of rows written without one.
        Column("trust", String(16), nullable=False, server_default="client"),
        # When the approver shrank the order: the order as proposed (canonical JSON) and its hash.
        Column("original_order_hash", String(64)),
        Column("original_order", Text),
        Column("created_at", UTCDateTime, nullable=False),
        Column("audit_event_id", String(36)),  # bindings.py
    )

    id: Mapped[int]
    proposal_id: Mapped[str]
    decision: Mapped[str]
    decided_by: Mapped[str]
    via: Mapped[str]
    note: Mapped[str | None]
    order_hash: Mapped[str]
    trust: Mapped[str]
    original_order_hash: Mapped[str | None]
    original_order: Mapped[str | None]
    created_at: Mapped[datetime]
    audit_event_id: Mapped[str | None]


@_mapped
class OperatorRecord(Base):
    """A person who operates the deployment: role and a hash of their bearer token (never the token)."""

    __tablename__ = "operators"
    __table__ = Table(
        __tablename__, Base.metadata,
        Column("name", String(64), primary_key=True),
        Column("role", String(16), nullable=False),  # viewer | approver | admin
        Column("token_hash", String(128), nullable=False, index=True, unique=True),
        Column("enabled", Boolean, nullable=False, default=True),
        Column("created_at", UTCDateTime, nullable=False),
        Column("updated_at", UTCDateTime, nullable=False),
        Column("token_rotated_at", UTCDateTime),
    )

    name: Mapped[str]
    role: Mapped[str]
    token_hash: Mapped[str]
    enabled: Mapped[bool]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    token_rotated_at: Mapped[datetime | None]


@_mapped
class OperatorSession(Base):
    """A console login: the sha256 of the random id the browser holds (never the id), whose it is, and the
    operator's token rotation it was made under (a rotation or a disable ends it)."""

    __tablename__ = "operator_sessions"
    __table__ = Table(
        __tablename__, Base.metadata,
        Column("id_hash", String(64), primary_key=True),
        Column("operator", String(64), nullable=False, index=True),
        Column("token_rotated_at", UTCDateTime),
        Column("created_at", UTCDateTime, nullable=False),
        Column("expires_at", UTCDateTime, nullable=False),
    )

    id_hash: Mapped[str]
    operator: Mapped[str]
    token_rotated_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]


@_mapped
class AgentTrade(Base):
    """One order sent (or being sent) to the broker. The row is also the reservation of usage:
    inserted in the same transaction as the decision that allowed it, so limits hold under concurrency."""

    __tablename__ = "agent_trades"
    __table__ = Table(
        __tablename__, Base.metadata,
        Column("id", String(36), primary_key=True),
        Column("agent_id", String(64), nullable=False),
        Column("proposal_id", String(36), ForeignKey("trade_proposals.id"), nullable=False, unique=True),
        Column("client_order_id", String(64), nullable=False, unique=True),
        Column("order_id", String(64), index=True),  # broker's id
        Column("symbol", String(32), nullable=False),
        Column("side", String(4), nullable=False),
        Column("quantity", ExactDecimal),
        Column("notional", ExactDecimal),
        Column("order_type", String(16), nullable=False),
        Column("limit_price", ExactDecimal),
        Column("stop_price", ExactDecimal),
        Column("time_in_force", String(8), nullable=False),
        # priced at the larger of limit/stop price and the reference quote
        Column("reserved_notional", ExactDecimal, nullable=False),
        Column("price", ExactDecimal),  # filled average price
        Column("filled_qty", ExactDecimal, nullable=False, default=Decimal(0)),
        Column("strategy", String(64)),
        Column("reasoning", Text, nullable=False),
        # pending_submit | new | accepted | partially_filled | filled | canceled | expired | rejected | unknown
        Column("status", String(20), nullable=False),
        Column("reject_reason", Text),
        Column("created_at", UTCDateTime, nullable=False),
        Column("submitted_at", UTCDateTime),
        Column("executed_at", UTCDateTime),
        Column("updated_at", UTCDateTime, nullable=False),
        Column("audit_event_id", String(36)),  # bindings.py
        # A final row's rolling-window notional in whole micro-dollars, summed exactly by SQL (ledger/traded.py).
        Column("window_micros", BigInteger),
        Index("ix_agent_trades_agent_created", "agent_id", "created_at"),
        Index("ix_agent_trades_status", "status"),
        # An agent's live orders without walking its whole history (migration 0010).
        Index("ix_agent_trades_agent_status_created", "agent_id", "status", "created_at"),
        # The usage read's rolling sum and counts read this index alone; the rows whose window notional is not
        # stored (open ones, and rows written without the ORM) are found by the partial one (migration 0011).
        Index("ix_agent_trades_agent_created_status_micros", "agent_id", "created_at", "status", "window_micros"),
        PartialIndex("ix_agent_trades_unstored_micros", "agent_id", "created_at", where="window_micros IS NULL"),
    )

    id: Mapped[str]
    agent_id: Mapped[str]
    proposal_id: Mapped[str]
    client_order_id: Mapped[str]
    order_id: Mapped[str | None]
    symbol: Mapped[str]
    side: Mapped[str]
    quantity: Mapped[Decimal | None]
    notional: Mapped[Decimal | None]
    order_type: Mapped[str]
    limit_price: Mapped[Decimal | None]
    stop_price: Mapped[Decimal | None]
    time_in_force: Mapped[str]
    reserved_notional: Mapped[Decimal]
    price: Mapped[Decimal | None]
    filled_qty: Mapped[Decimal]
    strategy: Mapped[str | None]
    reasoning: Mapped[str]
    status: Mapped[str]
    reject_reason: Mapped[str | None]
    created_at: Mapped[datetime]
    submitted_at: Mapped[datetime | None]
    executed_at: Mapped[datetime | None]
    updated_at: Mapped[datetime]
    audit_event_id: Mapped[str | None]
    window_micros: Mapped[int | None]


@listens_for(AgentTrade, "before_insert")
@listens_for(AgentTrade, "before_update")
def _set_window_micros(_mapper: Any, _connection: Any, trade: AgentTrade) -> None:
    """Keep window_micros in step with the row's status and fill on every ORM write (ledger/traded.py)."""
    trade.window_micros = traded.window_micros(trade.status, trade.quantity, trade.reserved_notional,
                                               trade.price, trade.filled_qty)


@_mapped
class AgentOrderLeg(Base):
    """One exit of a bracket (stop_loss, take_profit or trailing_stop), child of the entry's agent_trades
    row. A leg is reduce-only: it is no reservation and not in the usage the checks read, but its fills
    are booked to the agent's position and cash like any other (ledger.accounting.apply_order_update)."""

    __tablename__ = "agent_order_legs"
    __table__ = Table(
        __tablename__, Base.metadata,
        Column("id", String(36), primary_key=True),
        Column("parent_id", String(36), ForeignKey("agent_trades.id"), nullable=False),
        Column("agent_id", String(64), nullable=False),
        Column("role", String(16), nullable=False),  # stop_loss | take_profit | trailing_stop
        Column("order_id", String(64), index=True),  # broker's id
        Column("symbol", String(32), nullable=False),
        Column("side", String(4), nullable=False),
        Column("quantity", ExactDecimal),
        Column("order_type", String(16), nullable=False),
        Column("limit_price", ExactDecimal),
        Column("stop_price", ExactDecimal),
        Column("trail_percent", ExactDecimal),
        Column("trail_price", ExactDecimal),
        Column("hwm", ExactDecimal),
        Column("time_in_force", String(8), nullable=False),
        Column("status", String(20), nullable=False, index=True),  # held until the entry fills, then new, ...
        Column("filled_qty", ExactDecimal, nullable=False, default=Decimal(0)),
        Column("price", ExactDecimal),  # filled average price
        Column("reject_reason", Text),
        Column("created_at", UTCDateTime, nullable=False),
        Column("executed_at", UTCDateTime),
        Column("updated_at", UTCDateTime, nullable=False),
        UniqueConstraint("parent_id", "role"),
    )

    id: Mapped[str]
    parent_id: Mapped[str]
    agent_id: Mapped[str]
    role: Mapped[str]
    order_id: Mapped[str | None]
    symbol: Mapped[str]
    side: Mapped[str]
    quantity: Mapped[Decimal | None]
    order_type: Mapped[str]
    limit_price: Mapped[Decimal | None]
    stop_price: Mapped[Decimal | None]
    trail_percent: Mapped[Decimal | None]
    trail_price: Mapped[Decimal | None]
    hwm: Mapped[Decimal | None]
    time_in_force: Mapped[str]
    status: Mapped[str]
    filled_qty: Mapped[Decimal]
    price: Mapped[Decimal | None]
    reject_reason: Mapped[str | None]
    created_at: Mapped[datetime]
    executed_at: Mapped[datetime | None]
    updated_at: Mapped[datetime]


@_mapped
class AgentPosition(Base):
    """The agent's own position per symbol, built from its fills (the broker account is shared)."""

    __tablename__ = "agent_positions"
    __table__ = Table(
        __tablename__, Base.metadata,
        Column("agent_id", String(64), primary_key=True),
        Column("symbol", String(32), primary_key=True),
        Column("qty", ExactDecimal, nullable=False),
        Column("avg_entry_price", ExactDecimal, nullable=False),
        Column("realized_pl", ExactDecimal, nullable=False),
        Column("updated_at", UTCDateTime, nullable=False),
    )

    agent_id: Mapped[str]
    symbol: Mapped[str]
    qty: Mapped[Decimal]
    avg_entry_price: Mapped[Decimal]
    realized_pl: Mapped[Decimal]
    updated_at: Mapped[datetime]


@_mapped
class AgentAccount(Base):
    """The agent's cash out of its allocated capital, its equity peak and its start-of-day equity."""

    __tablename__ = "agent_accounts"
    __table__ = Table(
        __tablename__, Base.metadata,
        Column("agent_id", String(64), primary_key=True),
        Column("cash", ExactDecimal, nullable=False),
        Column("equity_peak", ExactDecimal, nullable=False),
        Column("day", String(10), nullable=False),  # trading day (YYYY-MM-DD, New York) of day_start_equity
        Column("day_start_equity", ExactDecimal, nullable=False),
        Column("updated_at", UTCDateTime, nullable=False),
    )

    agent_id: Mapped[str]
    cash: Mapped[Decimal]
    equity_peak: Mapped[Decimal]
    day: Mapped[str]
    day_start_equity: Mapped[Decimal]
    updated_at: Mapped[datetime]


@_mapped
class TradingState(Base):
    """active | reducing | halted, for everyone (scope '*') or one agent. Only people change it."""

    __tablename__ = "trading_state"
    __table__ = Table(
        __tablename__, Base.metadata,
        Column("scope", String(64), primary_key=True),
        Column("state", String(16), nullable=False),
        Column("reason", Text),
        Column("changed_by", String(128), nullable=False),
        Column("changed_at", UTCDateTime, nullable=False),
    )

    scope: Mapped[str]
    state: Mapped[str]
    reason: Mapped[str | None]
    changed_by: Mapped[str]
    changed_at: Mapped[datetime]


@_mapped
class AuditEvent(Base):
    """One hash-chained audit record: hash = sha256(prev_hash || canonical record)."""

    __tablename__ = "audit_events"
    __table__ = Table(
        __tablename__, Base.metadata,
        Column("seq", Integer, primary_key=True, autoincrement=False),
        Column("event_id", String(36), nullable=False, unique=True),
        Column("ts", UTCDateTime, nullable=False),
        Column("actor", String(128), nullable=False),  # agent:ID | operator:NAME | system
        Column("agent_id", String(64), index=True),
        Column("kind", String(48), nullable=False),
        Column("tool", String(48)),
        Column("payload", Text, nullable=False),  # canonical JSON, secrets redacted
        Column("prev_hash", String(64), nullable=False),
        Column("hash", String(64), nullable=False),
    )

    seq: Mapped[int]
    event_id: Mapped[str]
    ts: Mapped[datetime]
    actor: Mapped[str]
    agent_id: Mapped[str | None]
    kind: Mapped[str]
    tool: Mapped[str | None]
    payload: Mapped[str]
    prev_hash: Mapped[str]
    hash: Mapped[str]


@_mapped
class AuditHead(Base):
    """The chain's last (seq, hash): the lock appends serialize on, and what catches truncation."""

    __tablename__ = "audit_head"
    __table__ = Table(
        __tablename__, Base.metadata,
        Column("id", Integer, primary_key=True),
        Column("seq", Integer, nullable=False),
        Column("hash", String(64), nullable=False),
    )

    id: Mapped[int]
    seq: Mapped[int]
    hash: Mapped[str]


@_mapped
class SimOrder(Base):
    """An order at the simulated broker (the embedded default), kept in the database to survive restarts."""

    __tablename__ = "sim_orders"
    __table__ = Table(
        __tablename__, Base.metadata,
        Column("id", String(36), primary_key=True),
        Column("client_order_id", String(64), nullable=False, unique=True),
        Column("symbol", String(32), nullable=False),
        Column("side", String(4), nullable=False),
        Column("qty", ExactDecimal),
        Column("notional", ExactDecimal),
        Column("order_type", String(16), nullable=False),
        Column("limit_price", ExactDecimal),
        Column("stop_price", ExactDecimal),
        Column("time_in_force", String(8), nullable=False),
        Column("status", String(20), nullable=False, index=True),
        Column("filled_qty", ExactDecimal, nullable=False),
        Column("filled_avg_price", ExactDecimal),
        Column("submitted_at", UTCDateTime, nullable=False),
        Column("updated_at", UTCDateTime, nullable=False),
        Column("filled_at", UTCDateTime),
        # Bracket legs: the entry's id, the leg's role, and a trailing stop's trail and high-water mark.
        Column("parent_id", String(36), index=True),
        Column("leg_role", String(16)),
        Column("trail_percent", ExactDecimal),
        Column("trail_price", ExactDecimal),
        Column("hwm", ExactDecimal),
        # The fills since the last one applied, as a range (migration 0010).
        Index("ix_sim_orders_status_filled_at", "status", "filled_at"),
    )

    id: Mapped[str]
    client_order_id: Mapped[str]
    symbol: Mapped[str]
    side: Mapped[str]
    qty: Mapped[Decimal | None]
    notional: Mapped[Decimal | None]
    order_type: Mapped[str]
    limit_price: Mapped[Decimal | None]
    stop_price: Mapped[Decimal | None]
    time_in_force: Mapped[str]
    status: Mapped[str]
    filled_qty: Mapped[Decimal]
    filled_avg_price: Mapped[Decimal | None]
    submitted_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    filled_at: Mapped[datetime | None]
    parent_id: Mapped[str | None]
    leg_role: Mapped[str | None]
    trail_percent: Mapped[Decimal | None]
    trail_price: Mapped[Decimal | None]
    hwm: Mapped[Decimal | None]


@_mapped
class SimAccount(Base):
    """The simulated broker's account: its starting cash (positions and cash follow from its fills)."""

    __tablename__ = "sim_account"
    __table__ = Table(
        __tablename__, Base.metadata,
        Column("id", Integer, primary_key=True),
        Column("starting_cash", ExactDecimal, nullable=False),
        Column("created_at", UTCDateTime, nullable=False),
    )

    id: Mapped[int]
    starting_cash: Mapped[Decimal]
    created_at: Mapped[datetime]


@_mapped
class KeyValue(Base):
    """Small pieces of server state (e.g. last reconciliation, reconciliation drift)."""

    __tablename__ = "server_state"
    __table__ = Table(
        __tablename__, Base.metadata,
        Column("key", String(64), primary_key=True),
        Column("value", JSON, nullable=False),
        Column("updated_at", UTCDateTime, nullable=False),
    )

    key: Mapped[str]
    value: Mapped[dict[str, Any]]
    updated_at: Mapped[datetime]


@_mapped
class WebhookDelivery(Base):
    """Where delivery to one webhook endpoint stands: the last audit record delivered (or passed over), and
    the lease of the replica delivering now (one sender per endpoint; another takes over when it lapses)."""

    __tablename__ = "webhook_deliveries"
    __table__ = Table(
        __tablename__, Base.metadata,
        Column("endpoint", String(64), primary_key=True),  # [[webhooks]] name, or url digest
        Column("cursor", Integer, nullable=False),  # audit seq up to which every event was sent or passed over
        Column("lease_owner", String(64)),
        Column("lease_until", UTCDateTime),
        Column("attempts", Integer, nullable=False, default=0),  # failed attempts at the next event
        Column("next_attempt_at", UTCDateTime),
        Column("last_error", Text),
        Column("delivered", Integer, nullable=False, default=0),
        Column("failures", Integer, nullable=False, default=0),
        Column("dropped", Integer, nullable=False, default=0),  # given up after 24 h
        Column("updated_at", UTCDateTime, nullable=False),
    )

    endpoint: Mapped[str]
    cursor: Mapped[int]
    lease_owner: Mapped[str | None]
    lease_until: Mapped[datetime | None]
    attempts: Mapped[int]
    next_attempt_at: Mapped[datetime | None]
    last_error: Mapped[str | None]
    delivered: Mapped[int]
    failures: Mapped[int]
    dropped: Mapped[int]
    updated_at: Mapped[datetime]


__all__ = [
    "GLOBAL_SCOPE", "SCHEMA_REVISION", "AgentAccount", "AgentOrderLeg", "AgentPermissions", "AgentPosition",
    "AgentTrade", "Approval", "AuditEvent", "AuditHead", "Base", "KeyValue", "OperatorRecord", "OperatorSession",
    "SimAccount", "SimOrder", "TradeProposal", "TradingState", "UniqueConstraint", "WebhookDelivery",
]
