"""What a stdio server loads and does before its first answer (server/startup.py, issue 12's start-up cost)."""

from __future__ import annotations

import gc
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from mcp import Client, StdioServerParameters, stdio_client

from server.runtime import freeze_start_up_heap
from server.startup import pause_collection_during_start_up

ROOT = Path(__file__).resolve().parents[2]

# Loaded only when something needs them, never to answer a stdio agent's first call: the exchange calendar
# (the shipped NYSE sessions answer instead), the HTTP server and what only it serves, webhooks when none are
# configured, the Alpaca client with the simulated broker, audit anchoring (its signatures) without [audit],
# migrations on an up-to-date ledger; SQLAlchemy's PostgreSQL dialect on a SQLite ledger (ledger/models.py
# PartialIndex); rich, which only the SDK's default logging and structlog's pretty tracebacks would load, neither
# of them used by these logs (server/logging.py, server/startup.py skip_sdk_logging_setup); the command-line
# modules of the other commands (server/cli.py LAZY_COMMANDS); the event stream's code, which only servers that serve
# events need (the gate writes the records with policies/event_kinds.py).
NOT_BEFORE_THE_FIRST_ANSWER = (
    "exchange_calendars", "pandas", "numpy",
    "server.http", "server.console", "server.console_events", "server.metrics", "server.health",
    "server.operator_api", "server.operator_auth", "server.operator_openapi", "server.events_ws",
    "server.ratelimit", "server.demo", "prometheus_client", "jinja2",
    "server.webhooks", "broker.alpaca", "alpaca",
    "policies.anchoring", "cryptography.hazmat.primitives.asymmetric.ed25519",
    "alembic",
    "sqlalchemy.dialects.postgresql", "asyncpg",
    "rich.console", "rich.logging", "rich.traceback", "rich.pretty", "pygments",
    "server.cli_operators", "server.cli_agents", "server.cli_books", "server.cli_doctor", "server.cli_events",
    "server.cli_console", "server.cli_common", "server.cli_audit",
    "policies.events", "policies.event_log",
)


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "tradewarden.toml"
    path.write_text(f"""
[server]
database_url = "sqlite+aiosqlite:///{tmp_path / 'startup.db'}"
enforce_market_hours = true

[[agents]]
id = "first-agent"
allowed_symbols = ["*"]
""")
    return path


def _imported(importtime_log: str) -> set[str]:
    """The modules a `python -X importtime` process imported, from its stderr."""
    return set(re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s*(\S+)\s*$", importtime_log, flags=re.MULTILINE))


def _loaded(imported: set[str], packages: tuple[str, ...]) -> list[str]:
    return sorted(m for m in imported if any(m == p or m.startswith(p + ".") for p in packages))


async def test_a_stdio_server_answers_its_first_call_without_loading_what_only_other_paths_need(
        tmp_path: Path) -> None:
    config = _config(tmp_path)
    stderr_file = tmp_path / "stderr.log"
    params = StdioServerParameters(command=sys.executable, cwd=str(ROOT),
                                   args=["-X", "importtime", "-m", "server.cli", "serve", "--agent", "first-agent",
                                         "--config", str(config)])
    for start in ("first", "second"):  # the first start creates and migrates the ledger; the second is the usual
        with stderr_file.open("w") as stderr:
            async with Client(stdio_client(params, errlog=stderr)) as client:
                status = await client.call_tool("get_trading_status", {})
        assert not status.is_error, (start, status)
        assert status.structured_content is not None and "market" in str(status.structured_content), status
    imported = _imported(stderr_file.read_text())
    assert {"policies.gate", "ledger.models", "sqlalchemy"} <= imported  # the log was read: the runtime is there
    assert _loaded(imported, NOT_BEFORE_THE_FIRST_ANSWER) == []


async def test_a_stdio_server_logging_at_warning_answers_its_first_call_without_loading_structlog(
        tmp_path: Path) -> None:
    # Nothing is logged on that path at this level (the start-up line is info): tradewarden/log.py loads
    # structlog for the first line that is written, never for one that is dropped.
    config = _config(tmp_path)
    config.write_text(config.read_text().replace("[server]\n", '[server]\nlog_level = "warning"\n'))
    stderr_file = tmp_path / "stderr.log"
    params = StdioServerParameters(command=sys.executable, cwd=str(ROOT),
                                   args=["-X", "importtime", "-m", "server.cli", "serve", "--agent", "first-agent",
                                         "--config", str(config)])
    for _start in ("first", "second"):
        with stderr_file.open("w") as stderr:
            async with Client(stdio_client(params, errlog=stderr)) as client:
                status = await client.call_tool("get_trading_status", {})
                proposal = await client.call_tool("propose_trade", {"symbol": "BTC/USD", "side": "buy", "qty": "0.001",
                                                                    "reasoning": "a first order"})
        assert not status.is_error and not proposal.is_error, (status, proposal)
    imported = _imported(stderr_file.read_text())
    assert "policies.gate" in imported
    assert _loaded(imported, ("structlog",)) == []


@pytest.fixture
def collection_restored() -> Iterator[None]:
    yield
    gc.unfreeze()
    gc.enable()


def test_collection_paused_for_start_up_resumes_at_the_heap_freeze(collection_restored: None) -> None:
    pause_collection_during_start_up()
    assert not gc.isenabled()
    freeze_start_up_heap()
    assert gc.isenabled()


def test_the_pydantic_models_built_before_the_first_answer_have_evaluated_annotations() -> None:
    # pydantic evaluates string annotations again (server/config.py, policies/results.py say why).
    from pydantic import BaseModel

    from policies import results
    from server import config

    models = [model for module in (config, results) for model in vars(module).values()
              if isinstance(model, type) and issubclass(model, BaseModel) and model.__module__ == module.__name__]
    written_as_text = [f"{model.__name__}.{name}" for model in models
                       for name, annotation in vars(model).get("__annotations__", {}).items()
                       if isinstance(annotation, str)]
    assert {config.Config, config.AgentConfig, results.TradingStatusResult, results.OrderOut} <= set(models)
    assert written_as_text == []


# A fresh server process's first call (argv[2], its arguments as JSON in argv[3]); prints the mappers configured
# by the time it answered.
_FIRST_CALL = """
import asyncio, json, sys
from mcp import Client
from ledger.models import Base
from server.app import create_server
from server.config import load_config

async def main() -> None:
    async with Client(create_server(load_config(sys.argv[1]), agent_id="first-agent")) as client:
        result = await client.call_tool(sys.argv[2], json.loads(sys.argv[3]))
        assert not result.is_error, result
        print(sorted(mapper.class_.__name__ for mapper in Base.registry.mappers if mapper.configured))

asyncio.run(main())
"""


def _first_call(config: Path, tool: str, arguments: dict[str, object]) -> str:
    ran = subprocess.run([sys.executable, "-c", _FIRST_CALL, str(config), tool, json.dumps(arguments)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, (tool, ran.stderr[-2000:])
    return ran.stdout.strip()


def test_a_server_reconciles_at_start_and_answers_its_first_call_without_configuring_the_orm(
        tmp_path: Path) -> None:
    # Mapper configuration (~7 ms of CPU) and the ORM's first compile and flush were paid before the first
    # answer by the start-up reconciliation pass (policies/reconcile.py: its positions read and stored report are
    # Core statements on the tables); the first call of a status read runs none either.
    config = _config(tmp_path)
    _first_call(config, "get_trading_status", {})  # the first start creates the ledger
    assert _first_call(config, "get_trading_status", {}) == "[]"  # the usual start


def test_a_servers_first_call_may_be_one_that_answers_with_mapped_objects(tmp_path: Path) -> None:
    # A proposal's answer is presented from a TradeProposal object built without a session (policies/gate.py
    # _inserted): the mappers are configured for it when nothing before it configured them.
    config = _config(tmp_path)
    _first_call(config, "get_trading_status", {})
    assert "TradeProposal" in _first_call(config, "propose_trade", {"symbol": "AAPL", "side": "buy", "qty": 1,
                                                                    "reasoning": "the first call of a server"})
