"""Reconciliation: our ledger against the broker, at start-up and periodically.

The ledger (agent_trades, agent_positions, agent_accounts) is our record of what each agent did; the broker is
the truth about what happened to the orders. The server can stop between sending an order and recording its
outcome, orders fill and expire while it is down, and an answer can be lost on the wire. The reconciler closes
those gaps, through the same Broker protocol for every broker (simulated or Alpaca), and never sends anything:
it only reads the broker and writes our ledger and the audit log (actor ``system:reconcile``).

Each order we hold in a live status (LIVE_TRADE_STATUSES: open at the broker, "unknown", "pending_submit"):
- found at the broker (in its open orders, in one listing of its orders closed lately, or by client_order_id
  = our proposal id): the broker's state is applied with apply_order_update (fills and partial fills
  booked once to the agent's position and cash;
  cancels, expiries and rejections release the reservation) and audited as ``order.updated``;
- "pending_submit" younger than ``stale_after``: left alone, the gate may be sending it right now;
- "pending_submit" or "unknown" not at the broker: in doubt. A broker may acknowledge an order long after the
  answer was lost, so it is looked for by client_order_id on every pass, holding its reservation, for
  ``doubt_window`` (config `order_in_doubt_seconds`, default 24 h). Found in that time, it is booked like any
  order, and a ``risk.alert`` record says it arrived late (the events engine turns it into an alert). Still
  absent after that, it never reached the broker (a crash between intent and outcome, or a submission lost on
  the way): marked rejected with reason "never reached the broker", which releases its reservation, and
  audited;
- acknowledged by the broker earlier but no longer known to it: left as is and listed as unresolved;
- the broker cannot be asked (error, timeout): nothing changes; the next pass tries again.

Then positions: per symbol, the sum of agent_positions over all agents against the broker's positions. What
still differs after the orders are brought up to date is drift, stored in server_state["reconciliation"]
({checked_at, drift: {symbol: {ours, broker}}, resolved, unresolved, errors}) and shown by
`tradewarden status`; a change in drift is audited (``reconcile.drift``).

The loop (Reconciler.run) does a full pass at start and every ``interval`` seconds, and in between refreshes
the live orders every ``poll_interval`` seconds (one list call when there is anything open), so fills show in
get_orders / get_positions without the agent asking twice; sooner once SETTLE_AFTER_ORDERS orders were answered
still open (the gate tells it: ``Gate.on_order_left_open``), so a fast flow of orders does not pile up open rows
that every decision reads. Every step is guarded: a failure is logged and
retried later, never raised into the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar, cast

from sqlalchemy import Table, bindparam, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from broker.base import OPEN_STATUSES, BrokerError, BrokerOrder
from ledger import traded
from ledger.accounting import (
    Book,
    Held,
    apply_order_update,
    book_fill,
    fill_delta,
    held_of,
    order_changes,
    position_after_fill,
    trade_with_holdings,
)
from ledger.db import execute, insert_if_absent, read, transaction
from ledger.fast_execute import prebuilt
from ledger.legs import PARENTS_OF_LIVE_LEGS, apply_leg_updates
from ledger.models import (
    GLOBAL_SCOPE,
    AgentOrderLeg,
    AgentPermissions,
    AgentPosition,
    AgentTrade,
    KeyValue,
    TradeProposal,
    TradingState,
)
from policies import alerts, audit, event_kinds, secrets
from policies.gate import LIVE_TRADE_STATUSES, Gate, trading_day
from policies.orders import decimal_text
from tradewarden.log import get_logger

log = get_logger("tradewarden.reconcile")
T = TypeVar("T")

ACTOR = "system:reconcile"
DEAD_MAN = "system:dead-man"
HEALTH_KEY = "reconciliation-health"
EXPIRY_KEY = "approval-expiry-alerts"
STATE_KEY = "reconciliation"
NEVER_REACHED = "never reached the broker"
STALE_SUBMIT = timedelta(seconds=60)  # a pending_submit older than this is a crash between intent and outcome
DOUBT_WINDOW = timedelta(hours=24)  # how long an order in doubt is looked for at the broker
ALERT_KIND = "risk.alert"
POLL_SECONDS = 2.0
RECENT_CLOSED = timedelta(minutes=10)  # live orders this young that left the open list: one listing finds them
BROKER_CLOCK_MARGIN = timedelta(minutes=1)  # how far the broker's clock may run behind ours
SETTLE_TOGETHER = 8  # orders whose broker state a poll applies at once (their units share a commit)
# Orders answered still open (every Alpaca market order: `pending_new`, filled a moment later) that bring the next
# poll forward. Until a poll books its fill such an order counts as open in every decision's usage read (each open
# row is read and summed again for every proposal and execution: ~10 µs of CPU per row and decision, under the
# ledger's write lock), so a flow faster than the polls would carry a whole poll interval's worth of them. Within
# Alpaca's rate limit (200 requests a minute, orders included) the clock's poll always comes first: this adds no
# request; it bounds the open rows of a faster flow (a bench on the contract server) to about this many.
SETTLE_AFTER_ORDERS = 16
QTY_TOLERANCE = Decimal("0.000000001")  # Alpaca quantities have 9 decimal places
_OUTCOME_LOST = frozenset({"pending_submit", "unknown"})
_MAX_LISTED = 20  # ids / errors kept in the stored report

# A fill found by a poll (Alpaca answers a market order pending_new and fills it a moment later: one per order
# placed) applied by prebuilt Core statements, as the gate applies a broker's answer: through the ORM session the
# same unit cost ~5 ms of server CPU per order (bench/results-issue12.md). What the broker's state changes on a
# trade row, read under lock before it is applied.
_TRADES = cast(Table, AgentTrade.__table__)
_PROPOSALS = cast(Table, TradeProposal.__table__)
# Core on the tables (no ORM work: a server's start runs this before its first answer, tests/server/test_startup.py).
_LEGS = cast(Table, AgentOrderLeg.__table__)
_ANY_LIVE_TRADE = select(_TRADES.c.id).where(or_(
    _TRADES.c.status.in_(sorted(LIVE_TRADE_STATUSES)),
    _TRADES.c.id.in_(select(_LEGS.c.parent_id).where(_LEGS.c.status.in_(sorted(OPEN_STATUSES)))))).limit(1)
_STATE = ("order_id", "price", "filled_qty", "status", "reject_reason", "submitted_at", "executed_at", "updated_at")
_STATE_LOCKED = select(*(_TRADES.c[name] for name in _STATE)).where(_TRADES.c.id == bindparam("trade_id")
                                                                   ).with_for_update()
# SQLite (its writers are serialized: nothing to lock): with the agent's position and cash, in the same read.
_STATE_AND_HOLDINGS = trade_with_holdings(_STATE)
_UPDATE_STATE = (update(_TRADES).where(_TRADES.c.id == bindparam("trade_id"))
                 .values(**{name: bindparam(f"new_{name}") for name in (*_STATE, "window_micros")}))
_CAPITAL = select(AgentPermissions.capital).where(AgentPermissions.agent_id == bindparam("agent_id"))
_EXECUTED = (update(_PROPOSALS).where(_PROPOSALS.c.id == bindparam("pid"), _PROPOSALS.c.status == "executing")
             .values(status="executed", updated_at=bindparam("now")))
# A full pass's positions read and its stored report, Core on the tables: a server's first pass runs before its first
# tool may, and an ORM statement there configured every mapper (~7 ms of CPU) and first-used the ORM's compile and
# flush before the first answer. The ORM stays for the rare paths (live orders, the dead-man action).
_POSITION_ROWS = cast(Table, AgentPosition.__table__)
_SERVER_STATE = cast(Table, KeyValue.__table__)
_ALL_POSITIONS = select(_POSITION_ROWS.c.symbol, _POSITION_ROWS.c.qty)
_STATE_VALUE_LOCKED = (select(_SERVER_STATE.c.value).where(_SERVER_STATE.c.key == bindparam("state_key"))
                       .with_for_update())
_SET_STATE_VALUE = (update(_SERVER_STATE).where(_SERVER_STATE.c.key == bindparam("state_key"))
                    .values(value=bindparam("new_value"), updated_at=bindparam("now")))
prebuilt(_ALL_POSITIONS, _STATE_VALUE_LOCKED, _SET_STATE_VALUE)


@dataclass
class ReconcileReport:
    checked_at: datetime
    resolved: int = 0  # orders changed from the broker's state (or found never to have reached it)
    unresolved: list[str] = field(default_factory=list)  # trade ids whose state could not be settled yet
    drift: dict[str, dict[str, str]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    positions_checked: bool = False

    def as_json(self) -> dict[str, Any]:
        return {"checked_at": self.checked_at.isoformat(), "drift": self.drift, "resolved": self.resolved,
                "unresolved": self.unresolved[:_MAX_LISTED], "errors": self.errors[:_MAX_LISTED]}


def position_drift(ours: Iterable[tuple[str, Decimal]], broker: Iterable[tuple[str, Decimal]]
                   ) -> dict[str, dict[str, str]]:
    """Per symbol, our total (summed over agents) against the broker's, where they differ."""
    totals: dict[str, list[Decimal]] = {}
    for index, rows in enumerate((ours, broker)):
        for symbol, qty in rows:
            totals.setdefault(symbol, [Decimal(0), Decimal(0)])[index] += qty
    return {symbol: {"ours": decimal_text(mine) or "0", "broker": decimal_text(theirs) or "0"}
            for symbol, (mine, theirs) in sorted(totals.items()) if abs(mine - theirs) > QTY_TOLERANCE}


class Reconciler:
    """Brings the ledger in line with the broker. One per running server (replicas each run one: every
    update is idempotent and locked, see ledger/accounting.py)."""

    def __init__(self, gate: Gate, *, interval: float = 30.0, poll_interval: float = POLL_SECONDS,
                 stale_after: timedelta | None = None, stale_intervals: int = 3, dead_man: bool = False,
                 doubt_window: timedelta = DOUBT_WINDOW):
        self.gate = gate
        self.started = gate.clock()
        self.stale_intervals = stale_intervals
        self.dead_man = dead_man  # reduce-only for everyone while reconciliation is stale
        self.interval = interval
        self.poll_interval = min(poll_interval, interval)
        # Longer than any submission the gate may still be waiting for (submit + lookup, each bounded).
        self.stale_after = stale_after or max(STALE_SUBMIT, timedelta(seconds=3 * gate.settings.broker_timeout))
        self.doubt_window = max(doubt_window, self.stale_after)
        self.first_pass = asyncio.Event()
        self.last_report: ReconcileReport | None = None
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()  # the pause between passes ends early: stopping, or orders left open
        self._left_open = 0  # orders answered open since the last pass began
        self._resolved_since_report = 0

    # --- the loop ----------------------------------------------------------------------------------

    async def run(self) -> None:
        """Full pass now and every `interval`; live orders refreshed every `poll_interval` in between, and
        sooner once SETTLE_AFTER_ORDERS orders were answered still open."""
        loop = asyncio.get_running_loop()
        next_full = loop.time()
        unsubscribe = self.gate.on_order_left_open(self._order_left_open)
        try:
            while not self._stop.is_set():
                # Orders counted so far were committed before this pass reads the live ones: it settles them.
                self._left_open = 0
                self._wake.clear()
                if loop.time() >= next_full:
                    await self._guarded("reconcile", self.reconcile)
                    self.first_pass.set()
                    next_full = loop.time() + self.interval
                else:
                    await self._guarded("poll", self.poll)
                wait = max(0.0, min(self.poll_interval, next_full - loop.time()))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=wait)
        finally:
            unsubscribe()

    def _order_left_open(self) -> None:
        self._left_open += 1
        if self._left_open >= SETTLE_AFTER_ORDERS:
            self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    async def wait_first_pass(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self.first_pass.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def _guarded(self, step: str, action: Callable[[], Awaitable[T]]) -> T | None:
        try:
            return await action()
        except asyncio.CancelledError:
            raise
        except Exception as error:  # never crash the server: log, and try again next time
            log.warning("reconcile_step_failed", step=step, error=type(error).__name__, detail=_text(error))
            return None

    # --- passes ------------------------------------------------------------------------------------

    async def reconcile(self) -> ReconcileReport:
        """One full pass: every live order, then positions against the broker's; the result is stored."""
        report = ReconcileReport(checked_at=self.gate.clock())
        await self._orders(report)
        await self._positions(report)
        if report.drift:  # an order may have filled between the two reads: look once more before reporting
            await self._orders(report)
            await self._positions(report)
        report.resolved += self._resolved_since_report
        self._resolved_since_report = 0
        await self._store(report)
        await self._guarded("health", lambda: self._health(report))
        self.last_report = report
        if report.resolved or report.drift or report.errors:
            log.info("reconciled", resolved=report.resolved, drift=report.drift, unresolved=len(report.unresolved),
                     errors=report.errors[:3])
        return report

    async def poll(self) -> int:
        """Refresh the live orders (cheap: one query when there are none). Returns how many changed."""
        report = ReconcileReport(checked_at=self.gate.clock())
        await self._guarded("approvals", self.announce_expiring_approvals)
        await self._orders(report)
        self._resolved_since_report += report.resolved
        return report.resolved

    # --- orders ------------------------------------------------------------------------------------

    async def _live_trades(self) -> list[AgentTrade]:
        async with read(self.gate.sessions) as connection:  # the usual answer, and a server's start: none
            if (await execute(connection, _ANY_LIVE_TRADE)).first() is None:
                return []
        async with self.gate.sessions() as session:
            return list((await session.execute(
                select(AgentTrade).where(or_(AgentTrade.status.in_(LIVE_TRADE_STATUSES),
                                             AgentTrade.id.in_(PARENTS_OF_LIVE_LEGS)))
                .order_by(AgentTrade.created_at))).scalars())

    async def _broker_call(self, call: Awaitable[T]) -> T:
        return await asyncio.wait_for(call, self.gate.settings.broker_timeout)

    async def _orders(self, report: ReconcileReport) -> None:
        report.unresolved = []
        trades = await self._live_trades()
        if not trades:
            return
        now = self.gate.clock()
        # Orders the gate may be sending right now are not ours to touch yet.
        trades = [t for t in trades if t.status != "pending_submit" or now - t.created_at >= self.stale_after]
        if not trades:
            return
        try:
            open_orders = {o.client_order_id: o for o in await self._broker_call(
                self.gate.broker.list_orders(status="open", limit=500))}
        except (BrokerError, TimeoutError) as error:
            report.errors.append(f"list open orders: {_text(error)}")
            report.unresolved.extend(t.id for t in trades)
            return
        open_orders.update(await self._recently_closed(
            [t for t in trades if t.client_order_id not in open_orders], now))
        changes: list[Callable[[], Awaitable[int]]] = []
        for index, trade in enumerate(trades):
            found = open_orders.get(trade.client_order_id)
            if found is None:  # closed since we last looked, never arrived, or beyond the open list's page
                try:
                    found = await self._broker_call(self.gate.broker.get_order_by_client_id(trade.client_order_id))
                except (BrokerError, TimeoutError) as error:  # the broker is unwell: leave the rest for later
                    report.errors.append(f"look up {trade.client_order_id}: {_text(error)}")
                    report.unresolved.extend(t.id for t in trades[index:])
                    break
            if found is not None:
                late = trade.status in _OUTCOME_LOST and now - trade.created_at >= self.stale_after
                changes.append(functools.partial(self._apply, trade, found, late=late))
            elif trade.status in _OUTCOME_LOST and now - trade.created_at >= self.doubt_window:
                changes.append(functools.partial(self._never_reached, trade))
            else:
                report.unresolved.append(trade.id)
                if trade.status not in _OUTCOME_LOST:
                    log.warning("order_missing_at_broker", order_id=trade.id, status=trade.status,
                                client_order_id=trade.client_order_id)
        report.resolved += await self._settle(changes)

    @staticmethod
    async def _settle(changes: list[Callable[[], Awaitable[int]]]) -> int:
        """The broker's states applied, each in its own unit of work, all at once: on SQLite units waiting
        together share one group commit (ledger/group_commit.py), so the fills a poll found cost one disk sync,
        not one each, and each unit still runs in its own savepoint, failing alone. The first failure is
        raised once every change has run (the step is logged and retried, as before). SETTLE_TOGETHER at a time,
        so a long backlog leaves pooled connections (PostgreSQL) to the agents' own calls."""
        results: list[int | BaseException] = []
        for start in range(0, len(changes), SETTLE_TOGETHER):
            results += await asyncio.gather(*(change() for change in changes[start:start + SETTLE_TOGETHER]),
                                            return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return sum(r for r in results if isinstance(r, int))

    async def _recently_closed(self, missing: list[AgentTrade], now: datetime) -> dict[str, BrokerOrder]:
        """Orders that closed since they were last seen open (a market order at Alpaca is answered
        `pending_new` and fills a moment later), by client_order_id, found in ONE listing of the broker's
        closed orders instead of one look-up each: an agent placing orders every second would otherwise spend
        most of Alpaca's 200 requests a minute on look-ups, and the loop a round trip each. Only orders younger
        than RECENT_CLOSED are looked for this way (the listing stays short); whatever it does not hold (older,
        beyond its one page, acknowledged late) is still looked up one by one, as before."""
        recent = [t for t in missing if now - t.created_at <= RECENT_CLOSED]
        if len(recent) < 2:  # one look-up is no dearer than a listing
            return {}
        wanted = {t.client_order_id for t in recent}
        # The broker filters on its own submission time, which follows our intent unless its clock is behind.
        since = min(t.created_at for t in recent) - BROKER_CLOCK_MARGIN
        # Newest first, and no longer than what is looked for plus room for orders of others (a page of 500
        # would be read and parsed every poll while orders flow): the rest is looked up one by one.
        limit = min(500, 2 * len(wanted) + 20)
        try:
            closed = await self._broker_call(self.gate.broker.list_orders(status="closed", limit=limit, after=since))
        except (BrokerError, TimeoutError) as error:  # the look-ups one by one will say what is wrong
            log.warning("list_closed_orders_failed", error=_text(error))
            return {}
        return {order.client_order_id: order for order in closed if order.client_order_id in wanted}

    async def _apply(self, trade: AgentTrade, order: BrokerOrder, *, late: bool = False) -> int:
        if (trade.status == order.status and trade.filled_qty == order.filled_qty
                and trade.order_id == order.broker_order_id
                and (not order.legs or await self.gate.bracket_unchanged(trade, order))):
            return 0  # nothing new (the entry, and its exits if it has any): no write
        if not order.legs:  # no exits to follow: the statements alone
            return await self._apply_entry(trade, order, late=late)
        now = self.gate.clock()
        async with transaction(self.gate.sessions) as session:
            row = await _locked_trade(session, trade.id)
            before, before_qty = row.status, row.filled_qty
            outcome_lost = before in _OUTCOME_LOST
            if outcome_lost and row.submitted_at is None:
                row.submitted_at = order.submitted_at or now
            capital = await _capital(session, row.agent_id)
            entry_changed = await apply_order_update(session, row, order, now, capital, trading_day(now))
            # The exits follow their entry: a leg filled while we were away is booked like any other fill.
            leg_changes = await apply_leg_updates(session, row, order, now, capital, trading_day(now))
            if not entry_changed and not leg_changes:
                return 0
            if outcome_lost and entry_changed:
                await _proposal_executed(session, row.proposal_id, now)
            if entry_changed:
                await audit.append(session, ts=now, actor=ACTOR, kind="order.updated", agent_id=row.agent_id,
                                   payload={"order_id": row.id, "client_order_id": row.client_order_id,
                                            "broker_order_id": row.order_id, "from": before, "to": row.status,
                                            "filled_qty_before": before_qty, "filled_qty": row.filled_qty,
                                            "filled_avg_price": row.price,
                                            "how": "found at the broker by client_order_id" if outcome_lost
                                            else "broker order state"})
            for leg_change in leg_changes:
                await audit.append(session, ts=now, actor=ACTOR, kind="order.updated", agent_id=row.agent_id,
                                   payload={**leg_change, "how": "broker order state (bracket leg)"})
            if row.filled_qty != before_qty or any(c["filled_qty"] != c["filled_qty_before"] for c in leg_changes):
                await audit.append(session, ts=now, actor="system:ledger", kind=event_kinds.KIND_POSITION,
                                   agent_id=row.agent_id, payload=await position_after_fill(session, row))
            if late and outcome_lost:
                waited = int((now - row.created_at).total_seconds())
                await audit.append(session, ts=now, actor=ACTOR, kind=ALERT_KIND, agent_id=row.agent_id,
                                   payload={"severity": "warning", "code": "ORDER_ACKNOWLEDGED_LATE",
                                            "message": f"order {row.id} ({row.side} {row.symbol}) was in doubt "
                                                       f"for {waited} s and has appeared at the broker: booked "
                                                       f"as {row.status}",
                                            "order_id": row.id, "client_order_id": row.client_order_id,
                                            "status": row.status, "waited_seconds": waited})
        log.info("order_reconciled", order_id=trade.id, status_from=before, status_to=order.status,
                 filled_qty=str(order.filled_qty))
        await self._notify(trade.proposal_id)
        return 1

    async def _apply_entry(self, trade: AgentTrade, order: BrokerOrder, *, late: bool) -> int:
        """_apply for an order without exits, by Core statements in one unit: the row locked and read again (a
        refresh, the gate or another replica may have booked part of it meanwhile: a fill is booked once), the
        new fill booked to position and cash (ledger/accounting.py's book_fill, the gate's), the row updated,
        and every record of the change appended with it."""
        now = self.gate.clock()
        day = trading_day(now)
        async with transaction(self.gate.sessions) as session:
            held: Held | None = None
            if self.gate.settings.is_postgres:  # the rows locked in the one order: trade, position, account
                current = (await execute(session, _STATE_LOCKED, {"trade_id": trade.id})).one()
            else:
                current = (await execute(session, _STATE_AND_HOLDINGS, {"trade_id": trade.id})).one()
                held = held_of(current)
            before, before_qty = current.status, current.filled_qty
            outcome_lost = before in _OUTCOME_LOST
            delta = fill_delta(current, order)  # type: ignore[arg-type]
            changes = order_changes(order_id=current.order_id, status=before, executed_at=current.executed_at,
                                    order=order, now=now, filled=delta is not None)
            if not changes:
                return 0
            values = {name: current._mapping[name] for name in _STATE} | changes
            if outcome_lost and values["submitted_at"] is None:
                values["submitted_at"] = order.submitted_at or now
            book: Book | None = None
            if delta is not None:
                capital = Decimal(0)
                if held is None:  # the account may have to be created, with the agent's capital
                    capital = (await execute(session, _CAPITAL, {"agent_id": trade.agent_id})).scalar() or capital
                book = await book_fill(session, agent_id=trade.agent_id, symbol=trade.symbol, side=trade.side,
                                       qty=delta[0], price=delta[1], capital=capital, day=day, now=now, held=held)
            micros = traded.window_micros(values["status"], trade.quantity, trade.reserved_notional, values["price"],
                                          values["filled_qty"])
            await execute(session, _UPDATE_STATE, {f"new_{name}": values[name] for name in _STATE} | {
                "new_window_micros": micros, "trade_id": trade.id})
            if outcome_lost:
                await execute(session, _EXECUTED, {"pid": trade.proposal_id, "now": now})
            entries = [audit.Entry(ts=now, actor=ACTOR, kind="order.updated", agent_id=trade.agent_id, payload={
                "order_id": trade.id, "client_order_id": trade.client_order_id, "broker_order_id": values["order_id"],
                "from": before, "to": values["status"], "filled_qty_before": before_qty,
                "filled_qty": values["filled_qty"], "filled_avg_price": values["price"],
                "how": "found at the broker by client_order_id" if outcome_lost else "broker order state"})]
            if book is not None:
                entries.append(audit.Entry(ts=now, actor="system:ledger", kind=event_kinds.KIND_POSITION,
                                           agent_id=trade.agent_id, payload={
                                               "order_id": trade.id, "symbol": trade.symbol, "qty": book.qty,
                                               "avg_entry_price": book.avg_entry_price,
                                               "realized_pl": book.realized_pl}))
            if late and outcome_lost:
                waited = int((now - trade.created_at).total_seconds())
                entries.append(audit.Entry(ts=now, actor=ACTOR, kind=ALERT_KIND, agent_id=trade.agent_id, payload={
                    "severity": "warning", "code": "ORDER_ACKNOWLEDGED_LATE",
                    "message": f"order {trade.id} ({trade.side} {trade.symbol}) was in doubt for {waited} s and "
                               f"has appeared at the broker: booked as {values['status']}",
                    "order_id": trade.id, "client_order_id": trade.client_order_id, "status": values["status"],
                    "waited_seconds": waited}))
            await audit.append_records(session, entries)
        log.info("order_reconciled", order_id=trade.id, status_from=before, status_to=order.status,
                 filled_qty=str(order.filled_qty))
        await self._notify(trade.proposal_id)
        return 1

    async def _never_reached(self, trade: AgentTrade) -> int:
        now = self.gate.clock()
        async with transaction(self.gate.sessions) as session:
            result = await session.execute(
                update(AgentTrade).where(AgentTrade.id == trade.id, AgentTrade.status == trade.status)
                .values(status="rejected", reject_reason=NEVER_REACHED, updated_at=now)
                .execution_options(synchronize_session=False))
            if result.rowcount != 1:  # type: ignore[attr-defined]
                return 0  # someone else settled it meanwhile
            await _proposal_executed(session, trade.proposal_id, now)
            await audit.append(session, ts=now, actor=ACTOR, kind="order.updated", agent_id=trade.agent_id,
                               payload={"order_id": trade.id, "client_order_id": trade.client_order_id,
                                        "from": trade.status, "to": "rejected", "reason": NEVER_REACHED,
                                        "released_notional": trade.reserved_notional,
                                        "how": f"no order with this client_order_id at the broker "
                                               f"{int((now - trade.created_at).total_seconds())}s after the "
                                               "intent"})
        log.warning("order_never_reached_broker", order_id=trade.id, status_from=trade.status)
        await self._notify(trade.proposal_id)
        return 1

    async def _notify(self, proposal_id: str) -> None:
        await self.gate.proposal_changed(proposal_id)  # listeners' failures are caught there

    # --- positions ---------------------------------------------------------------------------------

    async def _positions(self, report: ReconcileReport) -> None:
        try:
            broker_positions = await self._broker_call(self.gate.broker.get_positions())
        except (BrokerError, TimeoutError) as error:
            report.errors.append(f"positions: {_text(error)}")
            return
        async with read(self.gate.sessions) as connection:
            ours = [(symbol, qty) for symbol, qty in (await execute(connection, _ALL_POSITIONS)).all()]
        report.drift = position_drift(ours, [(p.symbol, p.qty) for p in broker_positions])
        report.positions_checked = True

    async def _store(self, report: ReconcileReport) -> None:
        now = self.gate.clock()
        async with transaction(self.gate.sessions) as session:
            row = (await execute(session, _STATE_VALUE_LOCKED, {"state_key": STATE_KEY})).first()
            previous_drift = (row.value or {}).get("drift", {}) if row is not None else {}
            value = report.as_json()
            if not report.positions_checked:  # positions could not be read: keep the last known drift
                value["drift"] = previous_drift
            if row is None:
                await insert_if_absent(session, _SERVER_STATE, {"key": STATE_KEY, "value": value, "updated_at": now})
            else:
                await execute(session, _SET_STATE_VALUE, {"state_key": STATE_KEY, "new_value": value, "now": now})
            if report.positions_checked and report.drift != previous_drift:
                await audit.append(session, ts=now, actor=ACTOR, kind="reconcile.drift", agent_id=None,
                                   payload={"drift": report.drift, "previous": previous_drift})
                if report.drift:
                    log.warning("position_drift", drift=report.drift)


    async def _health(self, report: ReconcileReport) -> None:
        """Alerts on a change of reconciliation health (the broker unreachable; no successful pass for
        stale_intervals intervals), once across replicas (the state row is locked); with the dead-man action,
        everyone is reduce-only while reconciliation is stale, and back to active when it is healthy again
        (unless a person changed the state meanwhile)."""
        now = self.gate.clock()
        broker_ok = not report.errors
        async with transaction(self.gate.sessions) as session:
            state_row = await session.get(TradingState, GLOBAL_SCOPE, with_for_update=True) if self.dead_man else None
            await insert_if_absent(session, _SERVER_STATE, {"key": HEALTH_KEY, "value": {}, "updated_at": now})
            stored = (await execute(session, _STATE_VALUE_LOCKED, {"state_key": HEALTH_KEY})).scalar_one() or {}
            before = alerts.ReconcileHealth(broker_ok=stored.get("broker_ok", True), stale=stored.get("stale", False))
            last_ok = now if broker_ok else (datetime.fromisoformat(stored["last_ok"]) if stored.get("last_ok")
                                             else None)
            after = alerts.reconcile_health(broker_ok=broker_ok, last_ok=last_ok, started=self.started, now=now,
                                            interval_seconds=self.interval, stale_intervals=self.stale_intervals)
            await execute(session, _SET_STATE_VALUE, {
                "state_key": HEALTH_KEY, "now": now,
                "new_value": {"broker_ok": after.broker_ok, "stale": after.stale,
                              "last_ok": last_ok.isoformat() if last_ok else None}})
            for alert in alerts.reconcile_transitions(before, after, last_ok=last_ok, dead_man=self.dead_man):
                await audit.append(session, ts=now, actor=ACTOR, kind=event_kinds.KIND_ALERT, payload=alert.payload())
            if state_row is not None and after.stale != before.stale:
                await self._dead_man(session, state_row, after.stale, now)

    async def announce_expiring_approvals(self) -> int:
        """A risk alert (APPROVAL_EXPIRING) for each proposal waiting for a person that expires within
        alerts.EXPIRY_WARNING, once across replicas (the list of those announced is a locked row)."""
        now = self.gate.clock()
        async with self.gate.sessions() as session:
            pending = [(pid, agent, expires) for pid, agent, expires in (await session.execute(
                select(TradeProposal.id, TradeProposal.agent_id, TradeProposal.expires_at)
                .where(TradeProposal.status == "pending_approval",
                       TradeProposal.expires_at <= now + alerts.EXPIRY_WARNING))).all()]
        if not alerts.expiring_soon(pending, now, set()):
            return 0
        async with transaction(self.gate.sessions) as session:
            await insert_if_absent(session, KeyValue, {"key": EXPIRY_KEY, "value": {}, "updated_at": now})
            row = (await session.execute(select(KeyValue).where(KeyValue.key == EXPIRY_KEY).with_for_update()
                                         .execution_options(populate_existing=True))).scalar_one()
            announced = set((row.value or {}).get("announced", []))
            due = alerts.expiring_soon(pending, now, announced)
            for proposal_id, agent_id, expires_at in due:
                seconds = int((expires_at - now).total_seconds())
                alert = alerts.Alert("warning", "APPROVAL_EXPIRING",
                                     f"proposal {proposal_id} of {agent_id} expires in {seconds} s without a "
                                     "decision", {"proposal_id": proposal_id, "expires_at": expires_at})
                await audit.append(session, ts=now, actor=ACTOR, kind=event_kinds.KIND_ALERT, agent_id=agent_id,
                                   payload=alert.payload())
            # Only proposals that can still be announced are kept: the list stays as short as the pending ones.
            row.value = {"announced": sorted((announced | {d[0] for d in due}) & {p[0] for p in pending})}
            row.updated_at = now
            return len(due)

    async def _dead_man(self, session: AsyncSession, row: TradingState, stale: bool, now: datetime) -> None:
        if stale and row.state == "active":
            row.state, row.reason = "reducing", "reconciliation with the broker is stale (dead-man action)"
        elif not stale and row.state == "reducing" and row.changed_by == DEAD_MAN:
            row.state, row.reason = "active", None
        else:
            return
        row.changed_by, row.changed_at = DEAD_MAN, now
        await audit.append(session, ts=now, actor=DEAD_MAN, kind="trading_state.changed",
                           payload={"scope": GLOBAL_SCOPE, "state": row.state, "reason": row.reason})


async def _locked_trade(session: AsyncSession, trade_id: str) -> AgentTrade:
    return (await session.execute(select(AgentTrade).where(AgentTrade.id == trade_id).with_for_update()
                                  .execution_options(populate_existing=True))).scalar_one()


async def _capital(session: AsyncSession, agent_id: str) -> Decimal:
    row = await session.get(AgentPermissions, agent_id)
    return row.capital if row is not None else Decimal(0)


async def _proposal_executed(session: AsyncSession, proposal_id: str, now: datetime) -> None:
    """The proposal's one order has an outcome now (as the gate does after a submission)."""
    await session.execute(update(TradeProposal).where(TradeProposal.id == proposal_id,
                                                      TradeProposal.status == "executing")
                          .values(status="executed", updated_at=now).execution_options(synchronize_session=False))


def _text(error: BaseException) -> str:
    message = error.message if isinstance(error, BrokerError) else str(error) or type(error).__name__
    return secrets.scrub(message)[:300]  # scrubbed before it is cut (a cut key escapes the masking)
