"""redact and canonical_json, as the audit log runs them, give byte for byte what their plain definitions give:
the recursive redact below (the reference, as it stood before its leaves were answered in the loop) and
json.dumps with the canonical arguments. Whatever the payload: nested mappings and lists, secret-looking keys
and values, registered secrets, NUL, long and non-ASCII text, keys that are not text."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from policies import audit, redaction, secrets

REGISTERED = "Zq9-registered-Secret\nline2"  # also masked in its renderings (JSON-escaped, a line of it, ...)


def reference_redact(value: Any) -> Any:
    """redact's definition: every value visited by a call of its own."""
    if isinstance(value, str) and type(value) is str:
        return value if len(value) < secrets.MIN_FRAGMENT else secrets.scrub(
            redaction._SECRET_VALUES.sub(redaction.REDACTED, value))
    if type(value) in redaction._PLAIN:
        return value
    if isinstance(value, Mapping):
        return {str(k): (redaction.REDACTED if redaction._SECRET_KEYS.search(str(k)) else reference_redact(v))
                for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [reference_redact(v) for v in value]
    if isinstance(value, str):
        return secrets.scrub(redaction._SECRET_VALUES.sub(redaction.REDACTED, value))
    return value


def reference_canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=audit._json_default, ensure_ascii=False)


class Text(str):
    """A str subclass (redact scrubs it whatever its length)."""


_TOKENS = st.sampled_from([
    "tw_" + "a" * 20, "twop_Abcdefghijklmnop_-12", "Bearer abc.def", "AKABCDEFGHIJKLMNOPQR", "PK1234567890ABCDEFGH",
    "x PK1234567890ABCDEFGH y", REGISTERED, REGISTERED.split("\n")[0], json.dumps(REGISTERED), "abc", "",
    "\x00", "naïve ünïcode ✓", "a\x00b", "\ud800", "tw_short", "line2", "Bearer x", "LINE2"])
# Text built from the pieces the token patterns begin with and consist of: near misses and hits.
_TOKEN_PIECES = st.lists(st.sampled_from(["tw", "twop", "_", "-", "a", "Z", "9", "Bearer", " ", "\t", "AK", "PK", "x",
                                          "ABCDEFGHIJKLMNOP", "é", "\x00"]), max_size=12).map("".join)
_KEYS = st.one_of(
    st.sampled_from(["symbol", "api_key", "API-KEY", "password", "client_secret", "Authorization", "token", "x",
                     "credentials", "reasoning", "notional", "secretary"]),
    st.text(max_size=12), st.integers(-5, 5), st.booleans(), st.none())
_LEAVES = st.one_of(
    _TOKENS, _TOKEN_PIECES, st.text(max_size=40), st.text(min_size=60, max_size=300, alphabet="ab \x00é"),
    st.integers(),
    st.floats(allow_nan=False), st.booleans(), st.none(), st.decimals(allow_nan=False, allow_infinity=False),
    st.datetimes(timezones=st.just(UTC)), st.builds(Text, _TOKENS))
_PAYLOADS = st.recursive(
    _LEAVES,
    lambda children: st.one_of(st.lists(children, max_size=5), st.tuples(children, children),
                               st.dictionaries(_KEYS, children, max_size=6)),
    max_leaves=30)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payload=st.dictionaries(_KEYS, _PAYLOADS, max_size=8))
@example(payload={"args": {"symbol": "AAPL", "qty": Decimal("1"), "api_key": "PK1234567890ABCDEFGH"}})
@example(payload={1: "x", "1": "y", None: "tw_" + "b" * 30, False: {"token": 1}})
def test_redact_gives_what_its_definition_gives(payload: dict[Any, Any]) -> None:
    secrets.register(REGISTERED)
    expected = reference_redact(payload)
    got = redaction.redact(payload)
    assert got == expected
    assert audit.canonical_json(got) == reference_canonical_json(expected)


def _outcome(dump: Any, payload: Any) -> tuple[str, str]:
    """The text written, or the error raised (keys that cannot be sorted together), as what was observed."""
    try:
        return "text", dump(payload)
    except TypeError as error:
        return "error", f"{type(error).__name__}: {error}"


@settings(max_examples=150, deadline=None)
@given(payload=_PAYLOADS)
def test_canonical_json_is_json_dumps_with_the_canonical_arguments(payload: Any) -> None:
    assert _outcome(audit.canonical_json, payload) == _outcome(reference_canonical_json, payload)


def test_a_secret_key_is_masked_in_a_flat_payload_and_its_neighbours_kept() -> None:
    payload = {"symbol": "AAPL", "api_key": "not masked by its looks", "qty": 1, "when": datetime(2026, 1, 1)}
    assert redaction.redact(payload) == {"symbol": "AAPL", "api_key": redaction.REDACTED, "qty": 1,
                                     "when": datetime(2026, 1, 1)}


def test_record_ids_are_fresh_time_ordered_uuids() -> None:
    ids = [audit.new_event_id() for _ in range(100)]
    assert len(set(ids)) == 100
    assert all(uuid.UUID(i).version == 7 and uuid.UUID(i).variant == uuid.RFC_4122 for i in ids)


_FIELD_TEXT = st.one_of(st.text(max_size=20), _TOKENS)


@settings(max_examples=200, deadline=None)
@given(seq=st.integers(0, 2**62), event_id=_FIELD_TEXT, ts=st.datetimes(timezones=st.just(UTC)), actor=_FIELD_TEXT,
       agent_id=st.none() | _FIELD_TEXT, kind=_FIELD_TEXT, tool=st.none() | _FIELD_TEXT, payload=_PAYLOADS)
def test_record_hash_is_sha256_of_the_previous_hash_and_the_canonical_record(
        seq: int, event_id: str, ts: datetime, actor: str, agent_id: str | None, kind: str, tool: str | None,
        payload: Any) -> None:
    body = reference_canonical_json(reference_redact({"payload": payload}))
    record = {"seq": seq, "event_id": event_id, "ts": ts.isoformat(), "actor": actor, "agent_id": agent_id,
              "kind": kind, "tool": tool, "payload": body}
    expected = hashlib.sha256(("b" * 64 + reference_canonical_json(record)).encode("utf-8", "surrogatepass")
                              ).hexdigest()
    try:
        text = audit.canonical_json(redaction.redact({"payload": payload}))
        got = audit.record_hash("b" * 64, seq=seq, event_id=event_id, ts=ts, actor=actor, agent_id=agent_id,
                                kind=kind, tool=tool, payload=text)
    except UnicodeEncodeError:  # a lone surrogate in a field (never in a stored record: bounded makes it "?")
        return
    assert got == expected


def test_masking_text_loads_neither_the_ledger_nor_sqlalchemy() -> None:
    """The log renderer and an error's one-line reason mask text before a stdio server has answered its handshake;
    loading redact must not load the ledger (SQLAlchemy, the models) on that thread."""
    import subprocess
    import sys

    probe = ("import sys; from policies.redaction import redact; import server.logging; "
             "assert 'abcdefghijklmnop' not in redact('Bearer abcdefghijklmnop'); "
             "print(sorted(m for m in sys.modules if m.split('.')[0] in ('sqlalchemy', 'ledger')))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]"
