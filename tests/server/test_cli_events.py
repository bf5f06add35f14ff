"""`tradewarden events tail` as an operator runs it (a separate process on the server's database)."""

from __future__ import annotations

import json
import select
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from policies.events import Event
from policies.text import inert
from server.cli_events import human_line
from tests.server.http_servers import ROOT, cli


def setup(tmp_path: Path) -> Path:
    config = tmp_path / "tw.toml"
    config.write_text(f'[server]\ndatabase_url = "sqlite+aiosqlite:///{tmp_path / "t.db"}"\n')
    cli(config, "db", "upgrade")
    for reason in ("one", "two"):
        cli(config, "halt", "--reason", reason)
        cli(config, "resume")
    return config


def test_tail_prints_the_last_events_as_lines_or_json(tmp_path: Path) -> None:
    config = setup(tmp_path)
    lines = cli(config, "events", "tail").stdout.splitlines()
    envelopes = [json.loads(line) for line in cli(config, "events", "tail", "--json").stdout.splitlines()]
    assert len(lines) == 4 and "TRADING_HALTED" in lines[0] and "TRADING_RESUMED" in lines[1]
    assert [e["payload"]["code"] for e in envelopes] == ["TRADING_HALTED", "TRADING_RESUMED"] * 2
    assert all(e["message_type"] == "agent.risk.alert" for e in envelopes)


def test_tail_since_an_event_id_gives_the_events_after_it(tmp_path: Path) -> None:
    config = setup(tmp_path)
    envelopes = [json.loads(line) for line in cli(config, "events", "tail", "--json").stdout.splitlines()]
    after = cli(config, "events", "tail", "--json", "--since", str(envelopes[1]["event_id"])).stdout.splitlines()
    assert [json.loads(line) for line in after] == envelopes[2:]


def test_tail_filters_by_type_and_refuses_an_unknown_one(tmp_path: Path) -> None:
    config = setup(tmp_path)
    assert cli(config, "events", "tail", "--type", "agent.trade.signal").stdout == ""
    refused = cli(config, "events", "tail", "--type", "agent.nope", check=False)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "unknown event type" in refused.stderr


def test_tail_follow_prints_a_new_event_within_a_second(tmp_path: Path) -> None:
    config = setup(tmp_path)
    last = json.loads(cli(config, "events", "tail", "--json").stdout.splitlines()[-1])["event_id"]
    follower = subprocess.Popen([sys.executable, "-m", "server.cli", "events", "tail", "--follow", "--json",
                                 "--since", str(last), "--config", str(config)], cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(3)  # started and following
        cli(config, "halt", "--reason", "followed")
        committed = time.monotonic()
        assert follower.stdout is not None
        ready, _, _ = select.select([follower.stdout], [], [], 15)  # bounded: never hang the suite
        line = follower.stdout.readline() if ready else ""
        seen = time.monotonic()
    finally:
        follower.terminate()
        follower.wait(10)
    assert json.loads(line)["payload"]["reason"] == "followed"
    assert seen - committed < 5  # generous for a loaded machine; the poll is every 0.25 s


def test_agent_supplied_text_is_inert_in_a_terminal() -> None:
    nasty = "BUY\x1b]0;owned\x07 \x1b[2J \u202eevil\u202c\r\n"
    assert "\x1b" not in inert(nasty) and "\u202e" not in inert(nasty) and "\r" not in inert(nasty)
    event = Event(event_id=1, message_type="agent.trade.signal", agent_id="a1",
                  timestamp=datetime.now(UTC),
                  payload={"side": "buy", "symbol": nasty, "notional": "1", "status": "approved"})
    line = human_line({**event.envelope(), "timestamp": "t"})
    assert "\x1b" not in line and "\\x1b" in line
