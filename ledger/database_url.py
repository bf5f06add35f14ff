"""Which database a deployment uses, said one way for programs and one way for people.

Pure string work (no SQLAlchemy: the configuration is read before anything heavy is imported).
- `normalize_database_url`: the URL the engine gets. A relative SQLite path becomes absolute against a base
  folder (the config file's folder: a command run from another working directory acts on the same ledger as
  the server); `postgresql://` (the usual spelling) means the asyncpg driver; other databases are refused.
- `describe_database`: the database for people, in status lines, start-up logs and every failure: the SQLite
  file's absolute path, or the PostgreSQL URL with its password masked.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import parse_qsl, urlencode

SQLITE_DRIVER = "sqlite+aiosqlite"
POSTGRES_DRIVER = "postgresql+asyncpg"
_SQLITE_SCHEMES = {"sqlite", SQLITE_DRIVER}
_POSTGRES_SCHEMES = {"postgresql", "postgres", POSTGRES_DRIVER}
_MASK = "***"
_PASSWORD_PARAMS = re.compile(r"pass(word)?|secret|token|key", re.IGNORECASE)


class DatabaseUrlError(ValueError):
    """The database URL cannot be used; the message is one line and never shows a password."""


def _split_scheme(url: str) -> tuple[str, str]:
    scheme, sep, rest = url.partition("://")
    if not sep or not scheme:
        raise DatabaseUrlError("database_url must look like sqlite+aiosqlite:///PATH or "
                               "postgresql://USER@HOST/DB")
    return scheme.lower(), rest


def is_memory(path: str) -> bool:
    return path in ("", ":memory:") or "mode=memory" in path


def normalize_database_url(url: str, base_dir: Path | None = None) -> str:
    """The URL with its driver and an absolute SQLite path (relative to `base_dir`, else the working
    directory). DatabaseUrlError for databases tradewarden does not run on."""
    url = url.strip()
    scheme, rest = _split_scheme(url)
    if scheme in _SQLITE_SCHEMES:
        if not rest.startswith("/"):
            raise DatabaseUrlError("a SQLite database_url has three slashes: sqlite+aiosqlite:///PATH "
                                   "(four for an absolute path)")
        path, sep, query = rest[1:].partition("?")
        if not is_memory(path):
            expanded = Path(os.path.expanduser(path))
            if not expanded.is_absolute():
                expanded = (base_dir or Path.cwd()).absolute() / expanded
            path = os.path.normpath(expanded)
        return f"{SQLITE_DRIVER}:///{path}{sep}{query}"
    if scheme in _POSTGRES_SCHEMES:
        return f"{POSTGRES_DRIVER}://{rest}"
    shown = scheme.split("+")[0]
    if shown.startswith("postgres"):
        raise DatabaseUrlError(f"database_url uses the driver {scheme!r}: tradewarden runs on asyncpg "
                               "(write postgresql://USER@HOST/DB)")
    raise DatabaseUrlError(f"database_url {shown}:// is not supported: use sqlite+aiosqlite:///PATH or "
                           "postgresql://USER@HOST/DB")


def sqlite_file(url: str) -> Path | None:
    """The file of a (normalized) SQLite URL; None for PostgreSQL and in-memory SQLite."""
    scheme, rest = _split_scheme(url)
    if scheme not in _SQLITE_SCHEMES:
        return None
    path = rest[1:].partition("?")[0]
    return None if is_memory(path) else Path(path)


def describe_database(url: str) -> str:
    """The database for people: `/abs/path/tradewarden.db`, or the PostgreSQL URL with the password
    (in the authority or the query) masked. Never raises: a URL it cannot read is shown by scheme only."""
    try:
        scheme, rest = _split_scheme(url)
    except DatabaseUrlError:
        return "an unreadable database_url"
    if scheme in _SQLITE_SCHEMES:
        path = rest[1:].partition("?")[0]
        return "in-memory SQLite" if is_memory(path) else path
    authority, slash, tail = rest.partition("/")
    if "@" in authority:
        credentials, _, host = authority.rpartition("@")
        user, has_password, _ = credentials.partition(":")
        authority = f"{user}:{_MASK}@{host}" if has_password else f"{user}@{host}"
    path, question, query = tail.partition("?")
    if question:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, _MASK if _PASSWORD_PARAMS.search(k) else v) for k, v in pairs], safe="*")
    return f"{scheme}://{authority}{slash}{path}{question}{query}"
