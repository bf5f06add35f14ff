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

Regular expressions are kept the same way (~200 patterns, ~25 ms before a stdio server's first answer): re's own
pattern compiler (re._compiler.compile) is replaced, on Python 3.11 only, by one that keeps what it hands the engine
(_sre.compile); the Patterns are equal to re's own (same flags, groups and engine code).

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
# A process that found the file and compiled fewer new texts than this leaves it as it is: some texts differ in every
# process (tokenize's pattern lists string prefixes in set order, which hash randomisation changes), and rewriting
# ~1.4 MB at every exit for them would cost more than compiling a few texts again.
NEW_ENTRIES_WORTH_SAVING = 4
_FORMAT = 4

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
# (pattern, flags): a regular expression as re compiles it
PatternKey = tuple[str | bytes, int]

# re compiles a pattern in two steps: its compiler (pure Python, ~100 µs a pattern) turns the text into the engine's
# code, then _sre.compile makes the Pattern. The code depends only on the pattern, its flags and the interpreter, and
# libraries compile the same ~200 patterns at every start (pydantic's, the SDK's, ours: ~25 ms before a stdio
# server's first answer), so the compiler's output is kept too. The two steps are those of 3.11's
# re._compiler.compile (mirrored by _pattern_arguments); on another version patterns compile as before.
_re_compiler: Any = sys.modules["re._compiler"]
_re_parser: Any = sys.modules["re._parser"]
_sre: Any = sys.modules["_sre"]
_compile_pattern = _re_compiler.compile
_CACHES_PATTERNS = sys.version_info[:2] == (3, 11)


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


def _callers_namespaces(globals: dict[str, Any] | None, locals: Any) -> tuple[dict[str, Any], Any]:
    """The namespaces exec()/eval() run in: without globals, those of the code that called the cache's exec or eval
    (as the builtins take their caller's), not the cache method's own."""
    if globals is None:
        caller = sys._getframe(2)
        globals = caller.f_globals
        if locals is None:
            locals = caller.f_locals
    return globals, locals


class CodeCache:
    """compile(), exec() and eval() for code-generating libraries: a text's code from the file when it is there,
    compiled otherwise. The file maps each key to its marshalled code, unmarshalled only when that text comes (a few µs,
    against 10-50 µs to compile it)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.loaded, self.loaded_patterns = _read(path)
        self.used: dict[Key, bytes] = {}
        self.used_patterns: dict[PatternKey, bytes] = {}
        self.codes: dict[Key, CodeType] = {}  # this process's: one code object per key
        self.compiled = 0
        # Nothing is written when Python writes no bytecode: what is compiled then is not marshalled either.
        self.saving = not sys.dont_write_bytecode

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
            if len(self.codes) >= MAX_ENTRIES:  # a program making code from data: compiled as before, not kept
                return code
            self.compiled += 1
            if not self.saving:
                self.codes[key] = code
                return code
            marshalled = marshal.dumps(code)
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
        globals, locals = _callers_namespaces(globals, locals)
        if type(source) is str:
            source = self.code(source, "<string>", "exec", _caller_future_flags())
        if closure is not None:
            return builtins.exec(source, globals, locals, closure=closure)
        return builtins.exec(source, globals, locals)

    def eval(self, source: Any, globals: dict[str, Any] | None = None, locals: Any = None, /) -> Any:
        """builtins.eval; a text is compiled as eval() compiles it (leading blanks dropped, file name "<string>",
        the caller's flags)."""
        globals, locals = _callers_namespaces(globals, locals)
        if type(source) is str:
            source = self.code(source.lstrip(" \t"), "<string>", "eval", _caller_future_flags())
        return builtins.eval(source, globals, locals)

    def compile_pattern(self, pattern: Any, flags: Any = 0) -> Any:
        """re._compiler.compile: a pattern's engine code from the file when it is there, compiled otherwise."""
        if type(pattern) not in (str, bytes) or type(flags) is not int or flags & _re_compiler.SRE_FLAG_DEBUG:
            return _compile_pattern(pattern, flags)  # a parsed pattern (re.Scanner), or one printed while compiled
        key = (pattern, flags)
        # this process's own first (re keeps only its last 512 patterns), then the file's
        marshalled = self.used_patterns.get(key) or self.loaded_patterns.get(key)
        arguments = _arguments(marshalled)
        if arguments is None or marshalled is None:
            if not self.saving or len(self.used_patterns) >= MAX_ENTRIES:  # or a program making patterns from data
                return _compile_pattern(pattern, flags)
            arguments = _pattern_arguments(pattern, flags)
            try:
                marshalled = marshal.dumps(arguments)
            except ValueError:  # a group name of a str subclass: compiled, not kept
                return _sre.compile(pattern, *arguments)
            self.compiled += 1
        if len(self.used_patterns) < MAX_ENTRIES:
            self.used_patterns[key] = marshalled
        return _sre.compile(pattern, *arguments)

    def save(self) -> None:
        """Write the file when this process compiled anything new, enough of it when there was a file (atomically:
        processes starting together each leave a whole file)."""
        found_a_file = bool(self.loaded or self.loaded_patterns)
        if (not self.compiled or sys.dont_write_bytecode
                or (found_a_file and self.compiled < NEW_ENTRIES_WORTH_SAVING)):
            return
        temporary = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        # RuntimeError: a daemon thread still compiling changed a dict while it was copied; the next process saves
        with contextlib.suppress(OSError, ValueError, RuntimeError):
            kept = {**self.loaded, **self.used}
            if len(kept) > MAX_ENTRIES:
                kept = dict(self.used)
            kept_patterns = {**self.loaded_patterns, **self.used_patterns}
            if len(kept_patterns) > MAX_ENTRIES:
                kept_patterns = dict(self.used_patterns)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                # 0o666 less the umask, as Python's own .pyc files
                with os.fdopen(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666), "wb") as file:
                    marshal.dump((_FORMAT, importlib.util.MAGIC_NUMBER, sys.version, kept, kept_patterns), file)
                os.replace(temporary, self.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temporary)
                raise


def _unmarshalled(marshalled: Any) -> Any:
    """A file entry's object; None when there is no entry or it is damaged (its user then compiles again)."""
    if marshalled is None:
        return None
    try:
        return marshal.loads(marshalled)
    except (EOFError, ValueError, TypeError):
        return None


def _code(marshalled: Any) -> CodeType | None:
    code = _unmarshalled(marshalled)
    return code if isinstance(code, CodeType) else None


def _pattern_arguments(pattern: str | bytes, flags: int) -> tuple[int, list[int], int, dict[str, int], tuple[Any, ...]]:
    """What re._compiler.compile (3.11) hands _sre.compile after the pattern's text: its flags, the engine's code,
    the group count and the group names both ways."""
    parsed = _re_parser.parse(pattern, flags)
    code = [int(word) for word in _re_compiler._code(parsed, flags)]  # plain ints: its opcodes are an int subclass
    groupindex = parsed.state.groupdict
    indexgroup: list[str | None] = [None] * parsed.state.groups
    for name, index in groupindex.items():
        indexgroup[index] = name
    return flags | parsed.state.flags, code, parsed.state.groups - 1, groupindex, tuple(indexgroup)


def _arguments(marshalled: Any) -> tuple[Any, ...] | None:
    arguments = _unmarshalled(marshalled)
    return arguments if type(arguments) is tuple and len(arguments) == 5 else None


def _read(path: Path) -> tuple[dict[Key, bytes], dict[PatternKey, bytes]]:
    """The file's entries; each is checked when it is used (a key of another shape is never looked up, a value that
    is not what it should be is compiled again). The whole file is dropped when another Python wrote it (the
    pattern compiler may differ between patch releases, which keep the bytecode's magic number)."""
    try:
        # One read, then unmarshalled from memory: marshal.load() on a file reads it piece by piece (~8x slower).
        found = marshal.loads(path.read_bytes())
    except (OSError, EOFError, ValueError, TypeError):
        return {}, {}
    if not (isinstance(found, tuple) and len(found) == 5 and found[0] == _FORMAT
            and found[1] == importlib.util.MAGIC_NUMBER and found[2] == sys.version
            and isinstance(found[3], dict) and isinstance(found[4], dict)):
        return {}, {}
    return found[3], found[4]


class SeedGlobalsFinder:  # a meta path finder (not importlib.abc's subclass: importing it costs ~5 ms, tempfile...)
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


class _SeedingLoader:
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
    if _CACHES_PATTERNS:
        _re_compiler.compile = cache.compile_pattern  # re._compile calls it by the module's attribute
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
