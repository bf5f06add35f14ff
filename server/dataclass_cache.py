"""A bytecode cache for the methods `dataclasses` generates, as __pycache__ is for modules.

For every dataclass, Python 3.11 writes the source of its __init__, __repr__, __eq__ (and __hash__, __setattr__,
__delattr__ when frozen) as text and compiles each with exec(), at every start: a stdio server compiles ~850 of them
(~300 for our ~60 dataclasses on the path to its first answer, the rest the libraries'), ~45 µs each, the largest
single cost of ours on that path after SQLAlchemy's import (profiled). The text depends only on the class's fields
and options, so the compiled code is kept in a file beside the package's .pyc files and reused by the next process;
a text not in the file is compiled as before (and the file updated at exit). The classes and their methods are
exactly what dataclasses makes: the same text compiled by the same interpreter with the same flags gives the same
code object (tests/server/test_dataclass_cache.py compares them).

Installed by server/process_start.py for command-line processes only. Nothing is written when Python writes no
bytecode (PYTHONDONTWRITEBYTECODE, -B) or the folder is read-only; a missing, foreign or damaged file is ignored.
The file is trusted as the .pyc files beside it are (whoever can write one can write the other).
"""

from __future__ import annotations

import atexit
import builtins
import contextlib
import dataclasses
import importlib.util
import marshal
import os
import re
import sys
from pathlib import Path
from types import CodeType
from typing import Any

# A file holding more methods than this is rewritten with only those its process used (a class changed or removed
# leaves its old methods behind).
MAX_ENTRIES = 1000
_FORMAT = 2


def default_path(argv: list[str] | None = None) -> Path:
    """server/__pycache__/dataclass_methods.<command>.<interpreter tag>[.opt-N].marshal, beside this package's .pyc
    files: one file per command (`serve`, `audit`, ...), so each loads only the methods its own classes need."""
    args = sys.argv if argv is None else argv
    command = args[1] if len(args) > 1 and re.fullmatch(r"[a-z][a-z0-9-]{0,31}", args[1]) else "_"
    optimized = f".opt-{sys.flags.optimize}" if sys.flags.optimize else ""
    return Path(__file__).resolve().parent / "__pycache__" / \
        f"dataclass_methods.{command}.{sys.implementation.cache_tag}{optimized}.marshal"


class MethodCache:
    """exec() for dataclasses: a source text's code from the file when it is there, compiled otherwise. The file
    maps each source text to its marshalled code, unmarshalled only when that text comes (~5 µs, against ~50 µs
    to compile it)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.loaded = _read(path)
        self.used: dict[str, bytes] = {}
        self.compiled = 0

    def exec(self, source: Any, globals: dict[str, Any] | None = None, locals: Any = None, /) -> None:
        if not isinstance(source, str):
            return builtins.exec(source, globals, locals)
        code = _code(self.loaded.get(source))
        if code is None:
            # What exec(source) compiles: filename "<string>", no inherited __future__ flags (dataclasses has none).
            code = compile(source, "<string>", "exec", dont_inherit=True)
            self.used[source] = marshal.dumps(code)
            self.compiled += 1
        else:
            self.used[source] = self.loaded[source]
        return builtins.exec(code, globals, locals)

    def save(self) -> None:
        """Write the file when this process compiled anything (atomically: processes starting together each
        leave a whole file)."""
        if not self.compiled or sys.dont_write_bytecode:
            return
        kept = {**self.loaded, **self.used}
        if len(kept) > MAX_ENTRIES:
            kept = self.used
        temporary = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        with contextlib.suppress(OSError, ValueError):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                # 0o666 less the umask, as Python's own .pyc files
                with os.fdopen(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666), "wb") as file:
                    marshal.dump((_FORMAT, importlib.util.MAGIC_NUMBER, kept), file)
                os.replace(temporary, self.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temporary)
                raise


def _code(marshalled: bytes | None) -> CodeType | None:
    if marshalled is None:
        return None
    try:
        code = marshal.loads(marshalled)
    except (EOFError, ValueError, TypeError):
        return None
    return code if isinstance(code, CodeType) else None


def _read(path: Path) -> dict[str, bytes]:
    try:
        with path.open("rb") as file:
            found = marshal.load(file)
    except (OSError, EOFError, ValueError, TypeError):
        return {}
    if not (isinstance(found, tuple) and len(found) == 3 and found[0] == _FORMAT
            and found[1] == importlib.util.MAGIC_NUMBER and isinstance(found[2], dict)):
        return {}
    return {source: code for source, code in found[2].items() if isinstance(source, str) and isinstance(code, bytes)}


def install(path: Path | None = None) -> MethodCache:
    """From now on, dataclasses compiles through the cache at `path` (default_path()); the file is updated at exit."""
    cache = MethodCache(path or default_path())
    dataclasses.exec = cache.exec  # type: ignore[attr-defined]  # dataclasses calls exec() by its global name
    atexit.register(cache.save)
    return cache
