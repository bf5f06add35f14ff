"""SQLite calls run on the loop's thread, yet waiting for another writer never blocks the loop."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time

from sqlalchemy import text

from ledger import db


async def test_waiting_for_another_processes_write_lock_keeps_the_loop_serving(db_url: str, tmp_path) -> None:
    engine = db.create_engine(db_url)
    await db.upgrade(engine)
    sessions = db.session_factory(engine)
    holding = threading.Event()

    def other_writer() -> None:  # another process, as far as SQLite can tell: its own connection
        conn = sqlite3.connect(tmp_path / "tradewarden.db", isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        holding.set()
        time.sleep(0.4)
        conn.execute("COMMIT")
        conn.close()

    thread = threading.Thread(target=other_writer)
    thread.start()
    holding.wait()
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    ticking = asyncio.create_task(ticker())
    started = time.monotonic()
    async with db.transaction(sessions) as session:
        await session.execute(text("SELECT 1"))
    waited = time.monotonic() - started
    ticking.cancel()
    thread.join()
    await engine.dispose()
    assert waited >= 0.3  # it really waited for the lock
    assert ticks >= 10  # and the loop went on serving meanwhile


async def test_reads_do_not_wait_for_a_writer(db_url: str, tmp_path) -> None:
    engine = db.create_engine(db_url)
    await db.upgrade(engine)
    conn = sqlite3.connect(tmp_path / "tradewarden.db", isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    started = time.monotonic()
    async with db.session_factory(engine)() as session:
        assert (await session.execute(text("SELECT count(*) FROM audit_events"))).scalar_one() == 0
    assert time.monotonic() - started < 0.2
    conn.execute("COMMIT")
    conn.close()
    await engine.dispose()
