"""Secrets never leave the process in what it writes: redact(value) is the masking every record, log line and
error text goes through (audit records, events, log lines, an agent's error reasons).

Kept apart from policies/audit.py so that what only masks text (the log renderer, an error's one-line reason)
does not import the ledger and SQLAlchemy with it: a server logging its start-up line had loaded both on its
main thread before it could answer the handshake.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from policies import secrets

REDACTED = secrets.REDACTED
_SECRET_KEYS = re.compile(r"(secret|token|password|api[_-]?key|authorization|credential)", re.IGNORECASE)
# Values that look like bearer tokens (agents' tw_, operators' twop_) or Alpaca keys, wherever they appear in text.
_SECRET_VALUES = re.compile(r"(tw(?:op)?_[A-Za-z0-9_\-]{16,}|Bearer\s+\S+|\bAK[A-Z0-9]{16,}\b|\bPK[A-Z0-9]{16,}\b)")


# Values redact passes through as they are, recognised by their exact type before any ABC check (Mapping is
# an abstract class: isinstance against it costs more than the rest of redact for a small payload).
_PLAIN = frozenset({int, float, bool, type(None), Decimal, datetime})


_KEYS_KNOWN_MAX = 4096  # the keys of our payloads are few; past this many, a key is judged afresh each time
_secret_keys: dict[str, bool] = {}


def _secret_key(key: str) -> bool:
    """Whether a payload key names a secret (remembered: the same few keys come in every record)."""
    found = _secret_keys.get(key)
    if found is None:
        found = _SECRET_KEYS.search(key) is not None
        if len(_secret_keys) < _KEYS_KNOWN_MAX:
            _secret_keys[key] = found
    return found


def _masked(value: str) -> str:
    """The text with token-looking values and every rendering of a known secret masked. Every match of
    _SECRET_VALUES (case-sensitive) holds "tw", "Bearer", "AK" or "PK": text holding none of them (most text:
    ids, digests, symbols, statuses) skips the pattern."""
    if "tw" in value or "Bearer" in value or "AK" in value or "PK" in value:
        value = _SECRET_VALUES.sub(REDACTED, value)
    return secrets.scrub(value)


def _redact_text(value: str) -> str:
    # Shorter than anything masked (a token pattern or a secret's rendering, secrets.MIN_FRAGMENT): as is.
    return value if len(value) < secrets.MIN_FRAGMENT else _masked(value)


def redact(value: Any) -> Any:
    """Secrets never reach the audit log: keys that name a secret lose their value, values that look like a
    token are masked wherever they appear, and so is every rendering (raw, repr, JSON, URL, bytes, a line of
    it) of every secret the process knows (policies/secrets.py)."""
    kind = type(value)
    if kind is str:
        return _redact_text(value)
    if kind in _PLAIN:
        return value
    if kind is dict or isinstance(value, Mapping):
        return _redact_mapping(value)
    if isinstance(value, list | tuple | set | frozenset):
        return [_redact_item(v) for v in value]
    if isinstance(value, str):  # a str subclass (the pattern's sub makes it a str, as before)
        return secrets.scrub(_SECRET_VALUES.sub(REDACTED, value))
    return value


def _redact_item(value: Any) -> Any:
    """redact(value), the usual leaves (short text, numbers, None) answered without a call of redact: a record's
    payload is mostly such leaves, and a call per leaf was most of redact's cost."""
    kind = type(value)
    if kind is str:
        return value if len(value) < secrets.MIN_FRAGMENT else _masked(value)
    if kind in _PLAIN:
        return value
    return redact(value)


def _redact_mapping(value: Mapping[Any, Any]) -> dict[str, Any]:
    """redact of a mapping (tests/policies/test_redaction.py holds it to the recursive definition)."""
    out: dict[str, Any] = {}
    known = _secret_keys
    for key, item in value.items():
        name = key if type(key) is str else str(key)
        secret = known.get(name)
        if secret is None:
            secret = _secret_key(name)
        if secret:
            out[name] = REDACTED
            continue
        kind = type(item)
        if kind is str:
            out[name] = item if len(item) < secrets.MIN_FRAGMENT else _masked(item)
        elif kind in _PLAIN:
            out[name] = item
        else:
            out[name] = redact(item)
    return out
