"""A secret is masked in every rendering an error can hold, and a key with a line break inside reaches no output.

The attack (issue 10): an ALPACA_SECRET_KEY with a line break inside (a paste slip) makes the HTTP library refuse
the header and raise an error quoting the key's repr (`'abc\\ndef'`); masking that looked for the raw value only
let the whole key through to the agent's tool error, the audit record and stderr."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, quote_plus

import pytest
from mcp import Client
from sqlalchemy import select

from broker.alpaca import AlpacaBroker
from policies import secrets
from policies.redaction import redact
from server.app import create_server
from tests.alpaca_env import alpaca_config, read
from tests.broker.alpaca_contract_server import FAKE_API_KEY, AlpacaContractServer

if TYPE_CHECKING:  # the module itself is loaded as a pytest plugin (its fixture), not imported
    from tests.logging_probe import ServerStderr

pytest_plugins = ["tests.alpaca_fixtures", "tests.logging_probe"]

# A key as a paste slip leaves it: a line break in the middle. Each half is long enough to matter.
BROKEN_SECRET = "brokenSecretFirstHalf0123\nbrokenSecretSecondHalf4567"
HALVES = BROKEN_SECRET.split("\n")


def leaked(text: str, secret: str = BROKEN_SECRET) -> list[str]:
    """Every piece of the secret (raw or escaped) still readable in `text`."""
    pieces = [p for p in secret.split("\n") if len(p) >= secrets.MIN_FRAGMENT]
    return [p for p in pieces if p.lower() in text.lower()]


@pytest.fixture(autouse=True)
def registered() -> None:
    secrets.register(BROKEN_SECRET)


@pytest.mark.parametrize("rendering", [
    BROKEN_SECRET, repr(BROKEN_SECRET), json.dumps(BROKEN_SECRET), quote(BROKEN_SECRET, safe=""),
    quote_plus(BROKEN_SECRET), repr(BROKEN_SECRET.encode()), json.dumps(repr(BROKEN_SECRET)),
    quote(BROKEN_SECRET, safe="").lower(),
])
def test_every_rendering_of_a_secret_is_masked(rendering: str) -> None:
    text = f"Invalid header value {rendering} in request"
    scrubbed = secrets.scrub(text)
    assert not leaked(scrubbed), scrubbed
    assert secrets.REDACTED in scrubbed


def test_the_first_line_of_a_message_cut_at_the_secrets_line_break_is_masked() -> None:
    message = f"bad header value: {BROKEN_SECRET}"
    first_line = message.splitlines()[0]
    assert HALVES[0] in first_line
    assert not leaked(secrets.scrub(first_line))


def test_redact_masks_registered_secrets_in_nested_payloads() -> None:
    payload = {"error": f"ValueError: {BROKEN_SECRET!r}", "details": [{"body": json.dumps({"k": BROKEN_SECRET})}]}
    assert not leaked(json.dumps(redact(payload)))


def test_text_without_secrets_is_left_alone() -> None:
    text = "BROKER_ERROR: Alpaca 500: internal error (get_account)"
    assert secrets.scrub(text) == text


@pytest.mark.parametrize(("value", "problem"), [
    ("abc\ndef", "a line break"), ("abc\r\ndef", "a line break"), ("abc def", "whitespace"),
    ("abc\tdef", "whitespace"), ("abc\x1b[2Kdef", "a control character"), ("abc\u202edef", "a control character"),
    ("abc\u00e9def", "a non-ASCII character"), ("PKCLEAN0123", None),
])
def test_unsafe_characters_are_named_in_words(value: str, problem: str | None) -> None:
    assert secrets.unsafe_character(value) == problem


async def test_a_key_with_a_line_break_reaches_no_tool_result_audit_record_or_log(
        db_url: str, alpaca_server: AlpacaContractServer, server_stderr: ServerStderr) -> None:
    """The broker built straight from the broken key (no start-up check in between): the HTTP library refuses
    the header and raises an error quoting its repr; nothing of it reaches the agent, the ledger or stderr."""
    server_stderr.configure("debug", json=True)
    config = alpaca_config(db_url, alpaca_server, log_level="debug", enforce_market_hours=False)

    def broker(_sessions: Any, _clock: Any) -> AlpacaBroker:
        return AlpacaBroker(api_key=FAKE_API_KEY, secret_key=BROKEN_SECRET, paper=True,
                            trading_url=alpaca_server.trading_url, data_url=alpaca_server.data_url, timeout=2,
                            read_retries=0)

    texts: list[str] = []
    async with Client(create_server(config, agent_id="agent-1", broker=broker)) as client:
        for tool, args in [("get_market_data", {"symbols": ["AAPL"]}), ("get_positions", {}),
                           ("get_orders", {"status": "all"}), ("get_trading_status", {}),
                           ("propose_trade", {"symbol": "AAPL", "side": "buy", "qty": 1, "reasoning": "probe"})]:
            result = await client.call_tool(tool, args)
            texts.append(json.dumps([c.model_dump(mode="json") for c in result.content]))
            texts.append(json.dumps(result.structured_content))
    assert any("BROKER" in t or "NO_MARKET_DATA" in t for t in texts), texts  # the calls did fail
    from ledger.models import AuditEvent

    audit = json.dumps([row.payload for row in await read(db_url, select(AuditEvent))])
    logs = server_stderr.read()
    assert "alpaca.call" in logs  # the debug log was on
    for where, text in [("tool results", " ".join(texts)), ("audit records", audit), ("stderr", logs)]:
        assert not leaked(text), f"the key reached the {where}"
