"""The statements behind every decision and read tool find their rows by index (migration 0010): their cost
does not grow with the agent's history. Read from SQLite's EXPLAIN QUERY PLAN of the statements the real server
runs (captured while an agent proposes, executes, lists, cancels), on the schema the migrations build."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import time_machine
from sqlalchemy import event
from sqlalchemy.engine import Engine

from server.config import Config
from tests.conftest import call, connect

Statement = tuple[str, Any]


@contextmanager
def captured_statements() -> Iterator[list[Statement]]:
    """Every statement any engine of this process runs, with its parameters, while the block runs."""
    seen: list[Statement] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        seen.append((statement, parameters[0] if executemany else parameters))

    event.listen(Engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(Engine, "before_cursor_execute", record)


def plan(database: Path, statement: Statement) -> str:
    connection = sqlite3.connect(database)
    try:
        return "\n".join(row[3] for row in connection.execute("EXPLAIN QUERY PLAN " + statement[0], statement[1]))
    finally:
        connection.close()


def selects_from(statements: list[Statement], table: str, *fragments: str) -> list[Statement]:
    return [s for s in statements if s[0].lstrip().upper().startswith("SELECT") and f"FROM {table}" in s[0]
            and all(fragment in s[0] for fragment in fragments)]


def database_of(config: Config) -> Path:
    return Path(config.server.database_url.split("///", 1)[1])


async def an_agents_day(config: Config) -> list[Statement]:
    """Propose and execute market orders (fills), rest a limit order, list orders and positions, cancel:
    the statements these calls run, once the server is up."""
    async with connect(config) as client:
        await call(client, "get_trading_status")  # start-up (migrations, config sync) is not a decision
        with captured_statements() as statements:
            for qty in (1, 2):
                proposal = await call(client, "propose_trade", symbol="AAPL", side="buy", qty=qty, reasoning="x")
                await call(client, "execute_trade", proposal_id=proposal["proposal_id"])
            proposal = await call(client, "propose_trade", symbol="AAPL", side="buy", qty=1, reasoning="rest",
                                  order_type="limit", limit_price=1)
            order = await call(client, "execute_trade", proposal_id=proposal["proposal_id"])
            await call(client, "get_orders")
            await call(client, "get_orders", status="all")
            await call(client, "get_positions")
            await call(client, "cancel_order", order_id=order["order_id"])
    return statements


async def test_an_agents_live_orders_are_found_by_agent_and_status(
        config: Config, market_open: time_machine.Coordinates) -> None:
    statements = await an_agents_day(config)
    # Its live orders, and its entries whose exits (agent_order_legs) still work.
    live = selects_from(statements, "agent_trades", "agent_trades.agent_id = ?", "agent_order_legs.parent_id")
    assert live, "no query for an agent's live orders was run"
    for statement in live:
        found = plan(database_of(config), statement)
        assert "USING INDEX ix_agent_trades_agent_status_created (agent_id=? AND status=?)" in found, found
        assert "USING INDEX ix_agent_trades_agent_created" not in found, found


async def test_listing_open_orders_reads_only_the_live_rows(
        config: Config, market_open: time_machine.Coordinates) -> None:
    statements = await an_agents_day(config)
    listing = selects_from(statements, "agent_trades", "agent_trades.status IN", "agent_order_legs.parent_id",
                           "LIMIT")
    assert listing, "get_orders ran no query for open orders"
    for statement in listing:
        found = plan(database_of(config), statement)
        assert "ix_agent_trades_agent_status_created (agent_id=? AND status=?)" in found, found
        assert "USING INDEX ix_agent_trades_agent_created" not in found, found


async def test_the_simulated_brokers_new_fills_are_a_range_of_an_index(
        config: Config, market_open: time_machine.Coordinates) -> None:
    """A broker applies its own fills as it makes them; it reads the fills since the last one it applied when
    another process (here a second server on the same database) filled orders."""
    async def buy(client: Any, qty: int) -> None:  # different sizes: not refused as a repeated order
        proposal = await call(client, "propose_trade", symbol="AAPL", side="buy", qty=qty, reasoning="x")
        assert (await call(client, "execute_trade", proposal_id=proposal["proposal_id"]))["status"] == "filled"

    async with connect(config) as mine, connect(config) as other:
        await buy(mine, 1)  # this server's broker has applied every fill so far
        with captured_statements() as statements:
            await buy(other, 2)
            await buy(mine, 3)
    since = selects_from(statements, "sim_orders", "sim_orders.filled_at >= ?")
    assert since, "the simulated broker never read its fills since the last one"
    for statement in since:
        found = plan(database_of(config), statement)
        assert "USING INDEX ix_sim_orders_status_filled_at (status=? AND filled_at>?)" in found, found


async def test_the_simulated_broker_counts_its_filled_orders_from_its_last_count(
        config: Config, market_open: time_machine.Coordinates) -> None:
    """Only the first count of filled orders counts them all; the next ones count the rows since the last
    (a range of rowids in the status index) and look up the orders that were open then."""
    statements = await an_agents_day(config)
    counts = selects_from(statements, "sim_orders", "count(*)")
    from_the_last = [s for s in counts if "sim_orders.rowid" in s[0]]
    every_one = [s for s in counts if "sim_orders.rowid" not in s[0] and "sim_orders.id IN" not in s[0]]
    assert len(from_the_last) >= 4, counts
    assert len(every_one) <= 1, every_one  # the first count of a broker, if the server had not counted yet
    for statement in from_the_last:
        found = plan(database_of(config), statement)
        assert "USING COVERING INDEX ix_sim_orders_status (status=? AND rowid>?)" in found, found


async def test_no_statement_of_decisions_or_reads_scans_the_trade_history(
        config: Config, market_open: time_machine.Coordinates) -> None:
    statements = await an_agents_day(config)
    history_tables = ("agent_trades", "trade_proposals", "sim_orders", "approvals", "audit_events")
    checked = 0
    for statement in statements:
        if not re.match(r"\s*(SELECT|UPDATE|DELETE)", statement[0], re.IGNORECASE):
            continue
        found = plan(database_of(config), statement)
        for table in history_tables:
            assert f"SCAN {table}" not in found, (statement[0], found)
        checked += 1
    assert checked > 20
