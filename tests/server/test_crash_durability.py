"""A proposal the server answered is in the ledger with its audit records, even if the server is killed (-9)
the instant the answer arrives: an answer is sent only after its unit of work committed (group commit)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shlex
import signal
import sqlite3
import sys
from pathlib import Path

from mcp import Client, StdioServerParameters, stdio_client

from tests.cli_probe import create_ledger, run_cli

ROOT = Path(__file__).resolve().parents[2]
ROUNDS = 6
MAX_ANSWERS = 20
CONCURRENT_CALLS = 8  # in flight together: answers come out of groups of several units (with 8, a writer that
# answered before its group's COMMIT lost answered proposals here; with 4 the COMMIT won the race)


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "tradewarden.toml"
    path.write_text(f"""
[server]
database_url = "sqlite+aiosqlite:///{tmp_path / 'crash.db'}"
enforce_market_hours = false
log_level = "warning"

[[agents]]
id = "crash-agent"
allowed_symbols = ["*"]
approval = "auto"
auto_approve_max_notional = 5000
duplicate_window_seconds = 0
max_orders_per_window = 1000
max_denials_per_window = 1000
""")
    return path


async def _answers_until_killed(config: Path, pid_file: Path, kill_after: int) -> list[str]:
    """Propose trades through the real MCP client; kill -9 the server as the `kill_after`-th answer arrives.
    Returns the proposal ids the server answered."""
    serve = shlex.join([sys.executable, "-m", "server.cli", "serve", "--agent", "crash-agent",
                        "--config", str(config)])
    # exec: the server keeps the shell's process id, written first so the test can kill exactly it.
    params = StdioServerParameters(command="bash", args=["-c", f"echo $$ > {shlex.quote(str(pid_file))}; "
                                                               f"exec {serve} 2>/dev/null"], cwd=str(ROOT))
    answered: list[str] = []
    killed = asyncio.Event()

    async def caller(client: Client, index: int) -> None:
        call = 0
        while not killed.is_set():
            call += 1
            result = await client.call_tool("propose_trade", {
                "symbol": "AAPL", "side": "buy", "notional": 100 + index * 1000 + call,
                "reasoning": f"crash test {index}/{call}"})
            if killed.is_set():
                return
            content = result.structured_content or {}
            assert content.get("status") == "approved", content
            answered.append(str(content["proposal_id"]))
            if len(answered) == kill_after:
                os.kill(int(pid_file.read_text()), signal.SIGKILL)  # before anything else runs on this loop
                killed.set()

    # The client's own teardown fails once its server is gone: only the answers before the kill count.
    with contextlib.suppress(Exception, BaseExceptionGroup):
        async with Client(stdio_client(params)) as client:
            callers = [asyncio.create_task(caller(client, i)) for i in range(CONCURRENT_CALLS)]
            await killed.wait()
            for task in callers:
                task.cancel()
            await asyncio.gather(*callers, return_exceptions=True)
    assert killed.is_set()
    return answered


async def test_every_answered_proposal_and_its_audit_records_survive_kill_9(tmp_path: Path) -> None:
    config = create_ledger(_config(tmp_path))
    rng = random.Random(12)
    answered_in_all: list[str] = []
    for round_ in range(ROUNDS):
        kill_after = rng.randint(1, MAX_ANSWERS)
        answered = await _answers_until_killed(config, tmp_path / f"server-{round_}.pid", kill_after)
        assert len(answered) == kill_after
        answered_in_all += answered

        with contextlib.closing(sqlite3.connect(tmp_path / "crash.db")) as ledger:
            for proposal_id in answered_in_all:
                row = ledger.execute("SELECT status, audit_event_id FROM trade_proposals WHERE id = ?",
                                     (proposal_id,)).fetchone()
                assert row is not None, f"round {round_}: answered proposal {proposal_id} was lost"
                assert row[0] == "approved"
                record = ledger.execute("SELECT payload FROM audit_events WHERE event_id = ?", (row[1],)).fetchone()
                assert record is not None, f"round {round_}: the record binding {proposal_id} was lost"
                assert proposal_id in json.dumps(json.loads(record[0]))
            intents = ledger.execute("SELECT count(*) FROM audit_events WHERE kind = 'tool.intent' "
                                     "AND tool = 'propose_trade'").fetchone()[0]
            assert intents >= len(answered_in_all)  # who asked, for every answered call

        verified = run_cli(config, "audit", "verify")
        assert verified.returncode == 0, verified.stdout + verified.stderr
