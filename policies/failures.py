"""Failures that are nobody's argument: which exceptions mean the ledger or the broker cannot be reached,
and how a call's arguments are kept in the audit log without letting one call write megabytes. Pure.

- A database that is locked beyond its bounded wait, read-only, full, or unreachable is LEDGER_UNAVAILABLE:
  the agent can do nothing about it but try later, and must not see the SDK's generic error.
- A broker that times out or cannot be connected to is BROKER_UNAVAILABLE: one violation, not the three
  that missing data would otherwise produce (unknown symbol, no quote, unknown account).
- Audit payloads keep every argument up to AUDIT_STRING_MAX characters; a longer string is kept as a short
  excerpt with its length and the sha256 of the whole, so the record still proves what was sent.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from broker.base import BrokerError

AUDIT_STRING_MAX = 4096  # strings up to this length are audited whole (reasoning is bounded at 4,000)
AUDIT_EXCERPT = 160  # characters kept of a longer string
AUDIT_ITEMS_MAX = 50  # list items / mapping keys audited; the rest are counted
AUDIT_DEPTH_MAX = 6

# What SQLite and PostgreSQL say when the database cannot take a write (or be reached at all).
_LEDGER_SIGNS = ("database is locked", "database table is locked", "busy", "readonly", "read-only",
                 "read only", "disk is full", "database or disk is full", "no space left", "disk i/o error",
                 "unable to open database", "could not extend file", "lock timeout",
                 "canceling statement due to lock timeout", "connection refused", "connection was closed",
                 "the database system is", "too many connections", "could not connect")


def ledger_failure(error: BaseException) -> str | None:
    """Why the ledger cannot be used, when `error` says so (None for any other error)."""
    from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    if isinstance(error, PoolTimeout):
        return "no database connection became free in time"
    chain: list[BaseException] = [error]
    if isinstance(error, DBAPIError) and error.orig is not None:
        chain.append(error.orig)
    text = " ".join(str(e) for e in chain).lower()
    if isinstance(error, (OperationalError, InterfaceError)) or any(sign in text for sign in _LEDGER_SIGNS):
        if "locked" in text or "busy" in text or "lock timeout" in text:
            return "the database stayed locked by another writer beyond the bounded wait"
        if "read" in text and "only" in text:
            return "the database is read-only"
        if "full" in text or "no space" in text or "extend file" in text:
            return "the disk holding the database is full"
        return "the database cannot be reached or written"
    if isinstance(error, (ConnectionError, OSError)) and not isinstance(error, TimeoutError):
        return "the database cannot be reached"
    return None


def broker_unavailable(error: BaseException) -> bool:
    """A timeout, a refused or dropped connection: the broker could not be asked (not: it said no)."""
    if isinstance(error, TimeoutError):
        return True
    if isinstance(error, BrokerError):
        return error.code == "BROKER_UNAVAILABLE" or (error.retryable and error.status is None)
    return False


def _storable(text: str) -> str:
    """NUL as U+FFFD (PostgreSQL cannot store it), a lone surrogate as "?" (UTF-8 cannot encode it)."""
    if text.isascii() and "\x00" not in text:  # the usual case: nothing to replace, no copies made
        return text
    return text.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")


_PLAIN = frozenset({int, float, bool, type(None), Decimal, datetime})


def bounded(value: Any, depth: int = 0) -> Any:
    """`value` for an audit record: long strings as {excerpt, length, sha256}, long lists and mappings cut
    (with the count of what was left out), text made storable (_storable)."""
    if isinstance(value, str):
        if len(value) <= AUDIT_STRING_MAX:
            return _storable(value)
        digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()
        return {"excerpt": _storable(value[:AUDIT_EXCERPT]), "length": len(value), "sha256": digest}
    if depth >= AUDIT_DEPTH_MAX:
        return "…"
    if type(value) in _PLAIN:  # before the checks against abstract classes, which cost more than the rest
        return value
    # Below, the usual leaves (short ASCII text without NUL; numbers and None above the depth limit) are kept
    # in the loop without a call of bounded each: an audited payload is mostly such leaves, and a call per
    # leaf was most of bounded's cost. tests/policies/test_failures_bounded.py holds it to the plain recursion.
    child = depth + 1
    plain_kept = child < AUDIT_DEPTH_MAX
    if type(value) is dict or isinstance(value, Mapping):
        items = list(value.items())
        out: dict[str, Any] = {}
        for key, item in items[:AUDIT_ITEMS_MAX]:
            name = (key if type(key) is str and len(key) <= AUDIT_EXCERPT and key.isascii() and "\x00" not in key
                    else _storable(str(key)[:AUDIT_EXCERPT]))
            kind = type(item)
            if ((kind is str and len(item) <= AUDIT_STRING_MAX and item.isascii() and "\x00" not in item)
                    or (plain_kept and kind in _PLAIN)):
                out[name] = item
            else:
                out[name] = bounded(item, child)
        if len(items) > AUDIT_ITEMS_MAX:
            out["…"] = f"{len(items) - AUDIT_ITEMS_MAX} more keys"
        return out
    if isinstance(value, (list, tuple)):
        kept = [bounded(item, child) for item in value[:AUDIT_ITEMS_MAX]]
        if len(value) > AUDIT_ITEMS_MAX:
            kept.append(f"… {len(value) - AUDIT_ITEMS_MAX} more items")
        return kept
    return value


def has_nul(value: Any, depth: int = 0) -> bool:
    """Whether any string in `value` (keys included) holds a NUL character."""
    if isinstance(value, str):
        return "\x00" in value
    if depth >= AUDIT_DEPTH_MAX * 4:
        return False
    child = depth + 1
    if type(value) is dict or isinstance(value, Mapping):  # a dict by its type: the ABC check costs more
        # Text and plain values answered here, not by a call each (tests/policies/test_failures_bounded.py)
        for key, item in value.items():
            if ("\x00" in key) if type(key) is str else has_nul(key, child):
                return True
            kind = type(item)
            if kind is str:
                if "\x00" in item:
                    return True
            elif kind not in _PLAIN and has_nul(item, child):
                return True
        return False
    if isinstance(value, (list, tuple)):
        return any(has_nul(item, child) for item in value)
    return False
