"""`tradewarden operators list|add|disable|rotate-token` (server/cli_operators.py), run as real processes
against the deployment's database."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

from ledger import db
from policies.operator_registry import authenticate
from policies.operators import OperatorIdentity, Role
from server.config import load_config
from tests.cli_probe import run_cli as cli
from tests.server.test_cli import write_config


def who(config: Path, token: str) -> OperatorIdentity | None:
    async def look() -> OperatorIdentity | None:
        engine = db.create_engine(load_config(str(config), env={}).server.database_url)
        try:
            async with db.session_factory(engine)() as session:
                return await authenticate(session, token)
        finally:
            await engine.dispose()

    return asyncio.run(look())


def add(config: Path, name: str, role: str) -> str:
    result = cli(config, "operators", "add", name, "--role", role, check=True)
    return result.stdout.strip().splitlines()[-1]


def test_add_prints_the_token_once_on_the_last_line_and_it_authenticates(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    cli(config, "db", "upgrade", check=True)
    added = cli(config, "operators", "add", "ann", "--role", "approver", check=True)
    token = added.stdout.strip().splitlines()[-1]
    assert token.startswith("twop_") and added.stdout.count(token) == 1
    assert who(config, token) == OperatorIdentity("ann", Role.APPROVER)
    with sqlite3.connect(tmp_path / "tradewarden.db") as conn:
        stored = " ".join(str(v) for row in conn.execute("SELECT * FROM operators") for v in row)
        audit = " ".join(row[0] for row in conn.execute("SELECT payload FROM audit_events"))
        [(actor,)] = conn.execute("SELECT actor FROM audit_events WHERE kind = 'operator.added'").fetchall()
    assert token not in stored and token not in audit
    assert actor == "operator:cli"


def test_list_shows_operators_and_json_without_tokens(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    cli(config, "db", "upgrade", check=True)
    token = add(config, "ann", "viewer")
    add(config, "bob", "admin")
    table = cli(config, "operators", "list", check=True).stdout
    as_json = json.loads(cli(config, "operators", "list", "--json", check=True).stdout)
    assert "ann" in table and "viewer" in table and "bob" in table
    assert [(o["name"], o["role"], o["enabled"]) for o in as_json] == [("ann", "viewer", True), ("bob", "admin", True)]
    assert token not in table and "token_hash" not in json.dumps(as_json)


def test_disable_stops_the_token(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    cli(config, "db", "upgrade", check=True)
    token = add(config, "ann", "approver")
    assert cli(config, "operators", "disable", "ann", check=True).stdout.strip() == "operator ann disabled"
    assert who(config, token) is None
    [listed] = json.loads(cli(config, "operators", "list", "--json", check=True).stdout)
    assert listed["enabled"] is False


def test_rotate_token_prints_a_new_token_and_the_old_one_stops(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    cli(config, "db", "upgrade", check=True)
    old = add(config, "ann", "admin")
    rotated = cli(config, "operators", "rotate-token", "ann", check=True)
    new = rotated.stdout.strip().splitlines()[-1]
    assert new.startswith("twop_") and new != old
    assert who(config, old) is None and who(config, new) == OperatorIdentity("ann", Role.ADMIN)


def test_failures_are_one_line_with_the_right_exit_code(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    cli(config, "db", "upgrade", check=True)
    add(config, "ann", "viewer")
    for args, code, reason in [(("operators", "add", "ann", "--role", "admin"), 1, "already exists"),
                               (("operators", "disable", "nobody"), 1, "no operator 'nobody'"),
                               (("operators", "rotate-token", "nobody"), 1, "no operator 'nobody'"),
                               (("operators", "add", "cli", "--role", "admin"), 1, "reserved")]:
        result = cli(config, *args)
        assert result.returncode == code, (args, result.stderr)
        assert reason in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "twop_" not in result.stdout


def test_an_unknown_role_is_a_usage_error(tmp_path: Path) -> None:
    result = cli(write_config(tmp_path), "operators", "add", "eve", "--role", "root")
    assert result.returncode == 2 and "--role" in result.stderr and "Traceback" not in result.stderr
    assert result.stdout == ""
