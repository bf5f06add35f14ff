"""A bytecode cache for the code libraries generate from source text at every start, as __pycache__ is for modules.

Before a stdio server's first answer, Python compiles ~1,600 texts that are the same at every start (profiled by
wrapping compile/exec): the methods `dataclasses` writes for every dataclass (~530, ~45 µs each), the annotation
strings typing's ForwardRefs compile (~800 distinct of ~2,800, ~10 µs each), the functions SQLAlchemy generates
while it imports (`sqlalchemy.util.langhelpers`: ~215, ~6 ms), the __new__ of every namedtuple (~65, ~3 ms) and
pydantic's typing_inspection's checks (~30, ~0.5 ms). Not attrs' methods (`attr._make`, ~30, ~2 ms): the
text of each __hash__ holds the hash of a string, which differs in every process, so most would never be found again
and every process would rewrite the file.
The code depends only on the text, the file name, the mode and the compiler flags, so it is kept in one file per
command beside the package's .pyc files and reused by the next process; a text not in the file is compiled as
before (and the file updated at exit). The same text compiled by the same interpreter with the same flags gives the
same code object, which is what the libraries get (tests/server/test_code_cache.py compares them).

How each library is reached: each looks `compile`, `exec` or `eval` up as a global of its own module before the
builtins, so the cache's are set as globals of those modules only (dataclasses, typing, collections, and
sqlalchemy.util.langhelpers and typing_inspection.typing_objects before their bodies run, since they generate code
while they import); nothing else sees them. The linecache entries SQLAlchemy registers for its generated code
(tracebacks) are its own, as before. Within a process one code object serves every compilation of the same text
(ForwardRefs share it).

Installed by server/process_start.py for command-line processes only. Nothing is written when Python writes no
bytecode (PYTHONDONTWRITEBYTECODE, -B) or the folder is read-only; a missing, foreign or damaged file is ignored.
The file is trusted as the .pyc files beside it are (whoever can write one can write the other).
"""

from __future__ import annotations
import __future__

import atexit
import builtins
import collections
import contextlib
import dataclasses
import importlib.abc
import importlib.util
import marshal
import os
import re
import sys
import typing
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import CodeType, ModuleType
from typing import Any

# A file holding more entries than this is rewritten with only those its process used (a library upgraded or a class
# changed leaves its old code behind); past this many in one process, texts are compiled without being kept.
MAX_ENTRIES = 4000
_FORMAT = 3

# The compiler flags a caller's `from __future__ import ...` adds to what it compiles (CPython's PyCF_MASK), which
# compile() and exec() inherit from the calling code unless told not to.
_FUTURE_FLAGS = 0
for _feature in ("division", "absolute_import", "with_statement", "print_function", "unicode_literals",
                 "barry_as_FLUFL", "generator_stop", "annotations"):
    _FUTURE_FLAGS |= getattr(__future__, _feature).compiler_flag

# The modules that generate code while they import, so their `compile` and `exec` globals must be there before
# their bodies run.
GENERATING_MODULES = ("sqlalchemy.util.langhelpers", "typing_inspection.typing_objects")

# (source text, file name, mode, compiler flags)
Key = tuple[str, str, str, int]


def default_path(argv: list[str] | None = None) -> Path:
    """server/__pycache__/compiled_code.<command>.<interpreter tag>[.opt-N].marshal, beside this package's .pyc
    files: one file per command (`serve`, `audit`, ...), so each loads only the code its own imports need."""
    args = sys.argv if argv is None else argv
    command = args[1] if len(args) > 1 and re.fullmatch(r"[a-z][a-z0-9-]{0,31}", args[1]) else "_"
    optimized = f".opt-{sys.flags.optimize}" if sys.flags.optimize else ""
    return Path(__file__).resolve().parent / "__pycache__" / \
        f"compiled_code.{command}.{sys.implementation.cache_tag}{optimized}.marshal"


def _caller_future_flags(depth: int = 2) -> int:
    """The __future__ flags of the code calling compile()/exec() (what the builtins would inherit)."""
    return sys._getframe(depth).f_code.co_flags & _FUTURE_FLAGS


class CodeCache:
    """compile(), exec() and eval() for code-generating libraries: a text's code from the file when it is there,
    compiled otherwise. The file maps each key to its marshalled code, unmarshalled only when that text comes (a few µs,
    against 10-50 µs to compile it)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.loaded = _read(path)
        self.used: dict[Key, bytes] = {}
        self.codes: dict[Key, CodeType] = {}  # this process's: one code object per key
        self.compiled = 0

    def code(self, source: str, filename: str, mode: str, flags: int) -> CodeType:
        """The code of `source` as compile(source, filename, mode, flags, dont_inherit=True) gives it."""
        key = (source, filename, mode, flags)
        code = self.codes.get(key)
        if code is not None:
            return code
        marshalled = self.loaded.get(key)
        code = _code(marshalled)
        if code is None or marshalled is None:
            code = builtins.compile(source, filename, mode, flags, dont_inherit=True)
            marshalled = marshal.dumps(code)
            self.compiled += 1
        if len(self.codes) < MAX_ENTRIES:
            self.codes[key] = code
            self.used[key] = marshalled
        return code

    def compile(self, source: Any, filename: Any, mode: Any, flags: int = 0, dont_inherit: bool = False,
                optimize: int = -1) -> Any:
        """builtins.compile; a text compiled to code (no AST, no other optimisation level) comes from the cache."""
        inherited = 0 if dont_inherit else _caller_future_flags()
        if (type(source) is not str or type(filename) is not str or type(mode) is not str or flags & ~_FUTURE_FLAGS
                or optimize not in (-1, sys.flags.optimize)):
            return builtins.compile(source, filename, mode, flags | inherited, True, optimize)
        return self.code(source, filename, mode, flags | inherited)

    def exec(self, source: Any, globals: dict[str, Any] | None = None, locals: Any = None, /, *,
             closure: Any = None) -> None:
        """builtins.exec; a text is compiled as exec() compiles it (file name "<string>", the caller's flags)."""
        if globals is None:  # exec() runs in its caller's namespace then, not in this method's
            caller = sys._getframe(1)
            globals = caller.f_globals
            if locals is None:
                locals = caller.f_locals
        if type(source) is str:
            source = self.code(source, "<string>", "exec", _caller_future_flags())
        if closure is not None:
            return builtins.exec(source, globals, locals, closure=closure)
        return builtins.exec(source, globals, locals)

    def eval(self, source: Any, globals: dict[str, Any] | None = None, locals: Any = None, /) -> Any:
        """builtins.eval; a text is compiled as eval() compiles it (leading blanks dropped, file name "<string>",
        the caller's flags)."""
        if globals is None:  # eval() runs in its caller's namespace then, not in this method's
            caller = sys._getframe(1)
            globals = caller.f_globals
            if locals is None:
                locals = caller.f_locals
        if type(source) is str:
            source = self.code(source.lstrip(" \t"), "<string>", "eval", _caller_future_flags())
        return builtins.eval(source, globals, locals)

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


def _code(marshalled: Any) -> CodeType | None:
    if marshalled is None:
        return None
    try:
        code = marshal.loads(marshalled)
    except (EOFError, ValueError, TypeError):
        return None
    return code if isinstance(code, CodeType) else None


def _read(path: Path) -> dict[Key, bytes]:
    """The file's entries; each is checked when it is used (a key of another shape is never looked up, a value that
    is not marshalled code is compiled again)."""
    try:
        # One read, then unmarshalled from memory: marshal.load() on a file reads it piece by piece (~8x slower).
        found = marshal.loads(path.read_bytes())
    except (OSError, EOFError, ValueError, TypeError):
        return {}
    if not (isinstance(found, tuple) and len(found) == 3 and found[0] == _FORMAT
            and found[1] == importlib.util.MAGIC_NUMBER and isinstance(found[2], dict)):
        return {}
    return found[2]


class SeedGlobalsFinder(importlib.abc.MetaPathFinder):
    """Finds no module itself: for each module named, the next finders find it and its loader puts the given globals
    in the module's namespace before the module's body runs, then hands the module its own loader back. Leaves
    sys.meta_path once every named module was found."""

    def __init__(self, seeds: dict[str, dict[str, Any]]) -> None:
        self.seeds = dict(seeds)

    def find_spec(self, fullname: str, path: Any, target: ModuleType | None = None) -> ModuleSpec | None:
        seed = self.seeds.get(fullname)
        if seed is None:
            return None
        spec = None
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            if finder is not self and find is not None:
                spec = find(fullname, path, target)
                if spec is not None:
                    break
        del self.seeds[fullname]
        if not self.seeds:
            # importlib stops iterating sys.meta_path at the spec returned now
            sys.meta_path.remove(self)
        if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _SeedingLoader(spec.loader, seed)
        return spec


class _SeedingLoader(importlib.abc.Loader):
    def __init__(self, loader: Any, seed: dict[str, Any]) -> None:
        self.loader = loader
        self.seed = seed

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)  # type: ignore[no-any-return]

    def exec_module(self, module: ModuleType) -> None:
        # The module keeps its own loader (get_source for tracebacks, reload): nothing of this one stays.
        module.__loader__ = self.loader
        if module.__spec__ is not None:
            module.__spec__.loader = self.loader
        vars(module).update(self.seed)
        self.loader.exec_module(module)


def install(path: Path | None = None) -> CodeCache:
    """From now on, dataclasses, typing's ForwardRefs, namedtuples and GENERATING_MODULES compile through the cache at
    `path` (default_path()); the file is updated at exit. A generating module already imported gets the globals at
    once (its import-time code was compiled without the cache)."""
    cache = CodeCache(path or default_path())
    hooks = {"compile": cache.compile, "exec": cache.exec}
    dataclasses.exec = cache.exec  # type: ignore[attr-defined]  # dataclasses calls exec() by its global name
    typing.compile = cache.compile  # type: ignore[attr-defined]  # so does typing.ForwardRef compile()
    collections.eval = cache.eval  # type: ignore[attr-defined]  # and namedtuple eval() (its __new__)
    pending = {}
    for name in GENERATING_MODULES:
        module = sys.modules.get(name)
        if module is not None:
            vars(module).update(hooks)
        else:
            pending[name] = hooks
    if pending:
        sys.meta_path.insert(0, SeedGlobalsFinder(pending))
    atexit.register(cache.save)
    return cache


def installed() -> CodeCache | None:
    """The cache this process's dataclasses and typing compile through, if any."""
    hook = getattr(typing, "compile", None)
    owner = getattr(hook, "__self__", None)
    return owner if isinstance(owner, CodeCache) else None
