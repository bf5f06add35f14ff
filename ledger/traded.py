"""What a final agent_trades row counts in the rolling notional window, kept on the row as an integer.

Amounts are stored as text (ledger.types.ExactDecimal), and SUM over text is a float sum on SQLite and
PostgreSQL alike: not exact. A final row's window notional never changes once it is final, so it is stored
in `agent_trades.window_micros` (whole micro-dollars, an integer column, migration 0011) whenever it is exact
at that scale, and the usage read sums the column with SUM() over an index range: an exact integer sum in
the database, whatever the history. NULL means "read this row in Python": open rows (their notional is
not final), values finer than a micro-dollar or too large for a 64-bit integer, and rows written without the
ORM (a Core UPDATE or a raw INSERT) — ledger.usage sums those exactly in Python, so NULL is always safe.

The column is set by an ORM hook (ledger.models) on every insert and update of an AgentTrade.
"""

from __future__ import annotations

from decimal import Decimal

from broker.base import OPEN_STATUSES

ZERO = Decimal(0)
MICROS = Decimal(1_000_000)
ROW_MAX_MICROS = (2**63 - 1) >> 20  # about 8.8 million dollars

# Statuses in which an order can still fill (queried by index for the account-wide reservation).
OPEN_TRADE_STATUSES = frozenset(OPEN_STATUSES | {"pending_submit", "unknown", "pending_replace"})
FILLED_STATUS = "filled"
# Final without a fill of their own: they release whatever they did not fill.
RELEASED_STATUSES = frozenset({"canceled", "expired", "rejected", "replaced"})
FINAL_STATUSES = RELEASED_STATUSES | {FILLED_STATUS}


def filled_value(quantity: Decimal | None, reserved: Decimal, price: Decimal | None,
                 filled_qty: Decimal) -> Decimal:
    """What was traded: filled_qty × fill price, else the filled share of the reservation."""
    if filled_qty <= 0:
        return ZERO
    if price is not None:
        return filled_qty * price
    if quantity:  # no fill price recorded: the filled share of the reservation
        return reserved * filled_qty / quantity
    return reserved


def final_window_notional(status: str, quantity: Decimal | None, reserved: Decimal | None,
                          price: Decimal | None, filled_qty: Decimal | None) -> Decimal | None:
    """What a final row counts in the rolling notional window; None for a row that is not final."""
    reserved = reserved if reserved is not None else ZERO
    filled_qty = filled_qty if filled_qty is not None else ZERO
    if status not in FINAL_STATUSES:
        return None
    if filled_qty > 0:  # filled, or final with a partial fill: what was traded
        return filled_value(quantity, reserved, price, filled_qty)
    if status == FILLED_STATUS:
        return reserved  # "filled" without a recorded fill: keep the reservation
    return ZERO  # released without a fill: not a trade


def window_micros(status: str, quantity: Decimal | None, reserved: Decimal | None, price: Decimal | None,
                  filled_qty: Decimal | None) -> int | None:
    """final_window_notional in whole micro-dollars, or None when not final or not exact at that scale."""
    value = final_window_notional(status, quantity, reserved, price, filled_qty)
    if value is None:
        return None
    scaled = value * MICROS
    # Capped so a SUM over a million rows at the cap still fits in 64 bits (SQLite raises on overflow).
    if scaled != scaled.to_integral_value() or abs(scaled) > ROW_MAX_MICROS:
        return None
    return int(scaled)
