"""The code libraries generate from source text, kept between processes (server/code_cache.py): the same code,
compiled once."""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

import pytest

from server import code_cache

ROOT = Path(__file__).resolve().parents[2]


def _run(probe: str, *args: str, **env: str) -> dict[str, Any]:
    """A probe's JSON report; it writes bytecode unless env says otherwise (whatever the test run's own setting)."""
    inherited = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}
    ran = subprocess.run([sys.executable, "-c", probe, *args], cwd=ROOT, capture_output=True, text=True,
                         timeout=120, env={**inherited, **env})
    assert ran.returncode == 0, ran.stderr[-2000:]
    return json.loads(ran.stdout.splitlines()[-1])  # type: ignore[no-any-return]


# Makes the same dataclasses through the cache at argv[1], then again without it (dataclasses' own exec), and
# reports what the cache did and whether the two kinds of classes are the same.
_DATACLASSES = """
import builtins, dataclasses, json, sys
from pathlib import Path
from server import code_cache

cache = code_cache.install(Path(sys.argv[1]))

def make():
    @dataclasses.dataclass(frozen=True, order=True)
    class Point:
        x: int
        tags: tuple[str, ...] = dataclasses.field(default_factory=tuple)

    @dataclasses.dataclass
    class Box:
        point: Point
        label: str = "box"
    return Point, Box

Point, Box = make()
del dataclasses.exec  # dataclasses' own exec from here on
PlainPoint, PlainBox = make()
def annotations(method):  # Box's point is a Point of its own kind: compared by name
    return {key: getattr(value, "__qualname__", value) for key, value in method.__annotations__.items()}

same_code = all(getattr(a, name).__code__ == getattr(b, name).__code__ and
                annotations(getattr(a, name)) == annotations(getattr(b, name))
                for a, b in ((Point, PlainPoint), (Box, PlainBox)) for name in vars(b)
                if hasattr(getattr(b, name), "__code__") and name in vars(a))
try:
    Point(1).x = 2
    frozen = False
except dataclasses.FrozenInstanceError:
    frozen = True
print(json.dumps({"loaded": len(cache.loaded) + len(cache.loaded_patterns), "compiled": cache.compiled,
                  "same_code": same_code,
                  "methods": sorted(name for name in vars(Point) if hasattr(getattr(Point, name), "__code__")),
                  "repr": repr(Box(Point(1, ("a",)))), "eq": Point(1) == Point(1), "order": Point(1) < Point(2),
                  "hash": hash(Point(1)) == hash(Point(1)), "frozen": frozen,
                  "init_annotations": str(Point.__init__.__annotations__)}))
"""


def test_a_second_process_compiles_no_dataclass_method_the_first_compiled(tmp_path: Path) -> None:
    cache_file = tmp_path / "code.marshal"
    first = _run(_DATACLASSES, str(cache_file))
    assert first["loaded"] == 0 and first["compiled"] >= 8 and cache_file.is_file()
    second = _run(_DATACLASSES, str(cache_file))
    assert second["loaded"] == first["compiled"] and second["compiled"] == 0
    assert {**first, "loaded": 0, "compiled": 0} == {**second, "loaded": 0, "compiled": 0}


def test_classes_made_through_the_cache_are_the_ones_dataclasses_makes(tmp_path: Path) -> None:
    cache_file = tmp_path / "code.marshal"
    _run(_DATACLASSES, str(cache_file))
    made = _run(_DATACLASSES, str(cache_file))  # from the file this time
    assert made["same_code"] is True  # every method: the same code object and annotations as dataclasses' own
    assert {"__init__", "__repr__", "__eq__", "__lt__", "__hash__", "__setattr__", "__delattr__"} <= set(
        made["methods"])
    assert made["repr"] == "make.<locals>.Box(point=make.<locals>.Point(x=1, tags=('a',)), label='box')"
    assert made["eq"] and made["order"] and made["hash"] and made["frozen"]
    assert made["init_annotations"] == str({"x": int, "tags": tuple[str, ...], "return": None})  # not strings


# Imports SQLAlchemy as a server does, with the cache at argv[1] when there is one, and reports every function
# SQLAlchemy generated (its code, field by field), its linecache entries, and what the cache did.
_SQLALCHEMY = """
import gc, json, linecache, sys, types
from pathlib import Path
cache = None
if len(sys.argv) > 1:
    from server import code_cache
    cache = code_cache.install(Path(sys.argv[1]))
import sqlalchemy, sqlalchemy.orm, sqlalchemy.ext.asyncio

def fields(code):
    return [code.co_code.hex(), [fields(c) if isinstance(c, types.CodeType) else repr(c) for c in code.co_consts],
            code.co_names, code.co_varnames, code.co_filename, code.co_firstlineno, code.co_flags,
            code.co_qualname, code.co_linetable.hex(), code.co_exceptiontable.hex()]

generated = sorted(json.dumps(fields(f.__code__)) for f in gc.get_objects() if isinstance(f, types.FunctionType)
                   and f.__code__.co_filename.startswith("<sqlalchemy generated"))
lines = sorted(json.dumps([name, entry[2]]) for name, entry in linecache.cache.items()
               if name.startswith("<sqlalchemy generated"))
print(json.dumps({"generated": generated, "lines": lines,
                  "compiled": cache.compiled if cache else None,
                  "loaded": len(cache.loaded) + len(cache.loaded_patterns) if cache else None}))
"""


def test_a_second_process_compiles_none_of_sqlalchemys_generated_code(tmp_path: Path) -> None:
    cache_file = tmp_path / "code.marshal"
    first = _run(_SQLALCHEMY, str(cache_file))
    assert first["compiled"] >= 100 and cache_file.is_file()
    second = _run(_SQLALCHEMY, str(cache_file))
    assert second["compiled"] == 0 and second["loaded"] == first["compiled"]


def test_sqlalchemys_generated_code_from_the_cache_is_what_it_compiles_itself(tmp_path: Path) -> None:
    cache_file = tmp_path / "code.marshal"
    _run(_SQLALCHEMY, str(cache_file))
    cached = _run(_SQLALCHEMY, str(cache_file))  # from the file this time
    own = _run(_SQLALCHEMY)
    assert len(own["generated"]) >= 100
    assert cached["generated"] == own["generated"]  # co_code, co_consts, co_names, filename, first line, flags...
    assert cached["lines"] == own["lines"] and len(own["lines"]) >= 100  # tracebacks still show the source


_HOOK = """
import json, sys
from pathlib import Path
from server import code_cache
cache = code_cache.install(Path(sys.argv[1]))
finders = [type(finder).__name__ for finder in sys.meta_path]
import sqlalchemy, sqlalchemy.orm, pydantic
from sqlalchemy.util import langhelpers, compat
from sqlalchemy.sql import lambdas
from typing_inspection import typing_objects
print(json.dumps({"finders_before": finders, "finders_after": [type(finder).__name__ for finder in sys.meta_path],
                  "hooked": all(module.compile == cache.compile and module.exec == cache.exec
                                for module in (langhelpers, typing_objects)),
                  "elsewhere": [m.__name__ for m in (sqlalchemy, compat, lambdas, sqlalchemy.orm)
                                if "compile" in vars(m) or "exec" in vars(m)],
                  "loader": type(langhelpers.__loader__).__name__,
                  "spec_loader": type(langhelpers.__spec__.loader).__name__,
                  "source": "def exec_code_in_env" in langhelpers.__loader__.get_source(langhelpers.__name__)}))
"""


def test_the_import_hook_seeds_only_its_modules_and_leaves_no_finder_behind(tmp_path: Path) -> None:
    report = _run(_HOOK, str(tmp_path / "code.marshal"))
    assert report["finders_before"][0] == "SeedGlobalsFinder"
    assert "SeedGlobalsFinder" not in report["finders_after"]
    assert report["hooked"] is True and report["elsewhere"] == []
    assert report["loader"] == report["spec_loader"] == "SourceFileLoader" and report["source"] is True


_FORWARD_REFS = """
import json, sys, typing
from pathlib import Path
from server import code_cache
cache = code_cache.install(Path(sys.argv[1]))
texts = ["int", "list[Decimal] | None", "dict[str, 'Item']", "Callable[..., Awaitable[None]]"]
refs = [typing.ForwardRef(text) for text in texts]
shared = all(typing.ForwardRef(text).__forward_code__ is ref.__forward_code__ for text, ref in zip(texts, refs))
del typing.compile  # typing's own compile from here on
same = all(typing.ForwardRef(text).__forward_code__ == ref.__forward_code__ for text, ref in zip(texts, refs))
print(json.dumps({"compiled": cache.compiled, "shared": shared, "same": same}))
"""


def test_forward_refs_compile_once_across_processes_to_typings_own_code(tmp_path: Path) -> None:
    cache_file = tmp_path / "code.marshal"
    assert _run(_FORWARD_REFS, str(cache_file)) == {"compiled": 4, "shared": True, "same": True}
    assert _run(_FORWARD_REFS, str(cache_file)) == {"compiled": 0, "shared": True, "same": True}


_NAMEDTUPLES = """
import collections, json, sys, typing
from pathlib import Path
from server import code_cache
cache = code_cache.install(Path(sys.argv[1]))

def make():
    Point = collections.namedtuple("Point", "x y", defaults=(0,))
    class Quote(typing.NamedTuple):
        symbol: str
        bid: float = 0.0
    return Point, Quote

Point, Quote = make()
del collections.eval  # collections' own eval from here on
PlainPoint, PlainQuote = make()
print(json.dumps({"compiled": cache.compiled, "loaded": len(cache.loaded),
                  "same_code": Point.__new__.__code__ == PlainPoint.__new__.__code__
                               and Quote.__new__.__code__ == PlainQuote.__new__.__code__,
                  "values": [repr(Point(1)), repr(Quote("AAPL")), Point._make([1, 2]) == (1, 2),
                             Quote.__new__.__defaults__, Point.__new__.__name__, Point.__new__.__doc__]}))
"""


def test_namedtuples_compile_once_across_processes_to_their_own_code(tmp_path: Path) -> None:
    cache_file = tmp_path / "code.marshal"
    first = _run(_NAMEDTUPLES, str(cache_file))
    second = _run(_NAMEDTUPLES, str(cache_file))
    assert first["compiled"] == 2 and second["compiled"] == 0 and second["loaded"] == 2
    assert first["same_code"] is True and second["same_code"] is True
    assert second["values"] == first["values"] == ["Point(x=1, y=0)", "Quote(symbol='AAPL', bid=0.0)", True, [0.0],
                                                   "__new__", "Create new instance of Point(x, y)"]


# Installs the cache, then checks typing evaluates forward references against each class's own namespace.
_TYPING = """
import sys, typing
from pathlib import Path
from server import code_cache
code_cache.install(Path(sys.argv[1]))
assert code_cache.installed() is not None

class A:
    x: "Item"
class Item: ...
def f():
    class Item: ...
    class B:
        x: "Item"
    return B, Item
B, LocalItem = f()
assert typing.get_type_hints(A)["x"] is Item
assert typing.get_type_hints(B, localns={"Item": LocalItem})["x"] is LocalItem
try:
    typing.ForwardRef("list[")
except SyntaxError:
    print('"ok"')
"""


def test_typing_evaluates_forward_references_as_before_with_the_cache(tmp_path: Path) -> None:
    assert _run(_TYPING, str(tmp_path / "code.marshal")) == "ok"


def test_compile_and_exec_keep_the_callers_future_flags(tmp_path: Path) -> None:
    # This module compiles with `from __future__ import annotations`: so do compile() and exec() called from here.
    cache = code_cache.CodeCache(tmp_path / "code.marshal")
    text = "def f(x: Undefined) -> Undefined: pass"
    assert cache.compile(text, "<t>", "exec") == compile(text, "<t>", "exec")
    assert cache.compile(text, "<t>", "exec", dont_inherit=True) == compile(text, "<t>", "exec", dont_inherit=True)
    assert cache.compile(text, "<t>", "exec").co_flags != cache.compile(text, "<t>", "exec", dont_inherit=True).co_flags
    namespace: dict[str, Any] = {}
    cache.exec(text, namespace)
    assert namespace["f"].__annotations__ == {"x": "Undefined", "return": "Undefined"}


def test_eval_and_exec_without_globals_run_in_the_callers_namespace(tmp_path: Path) -> None:
    cache = code_cache.CodeCache(tmp_path / "code.marshal")
    limit = 3  # noqa: F841 - read by the texts below, from this function's namespace
    assert cache.eval(" \tlimit + 1") == eval(" \tlimit + 1") == 4  # leading blanks dropped, as eval() does
    with pytest.raises(AssertionError):
        cache.exec("assert limit == 4")
    assert cache.eval("limit * 2", {"limit": 5}) == 10


def test_what_is_not_a_text_to_code_compiles_as_before(tmp_path: Path) -> None:
    cache = code_cache.CodeCache(tmp_path / "code.marshal")
    import ast

    assert isinstance(cache.compile("x = 1", "<t>", "exec", ast.PyCF_ONLY_AST), ast.Module)
    with pytest.raises(SyntaxError):
        cache.compile("list[", "<string>", "eval")
    assert cache.compiled == 0 and cache.used == {}


def test_a_process_keeps_at_most_max_entries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(code_cache, "MAX_ENTRIES", 5)
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    cache_file = tmp_path / "code.marshal"
    cache = code_cache.CodeCache(cache_file)
    for number in range(8):
        cache.compile(f"x{number}", "<string>", "eval")
    assert cache.compiled == 5  # the last three compiled as before, not kept
    cache.save()
    assert len(code_cache.CodeCache(cache_file).loaded) == 5
    later = code_cache.CodeCache(cache_file)
    for number in range(code_cache.NEW_ENTRIES_WORTH_SAVING):  # five from the file and four new: past the bound
        later.compile(f"y{number}", "<string>", "eval")
    later.save()  # only what it used
    assert [source for source, _, _, _ in code_cache.CodeCache(cache_file).loaded] == ["y0", "y1", "y2", "y3"]


def test_a_process_keeps_at_most_max_patterns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(code_cache, "MAX_ENTRIES", 5)
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    cache = code_cache.CodeCache(tmp_path / "code.marshal")
    patterns = [cache.compile_pattern(f"a{{{number}}}", 0) for number in range(8)]
    assert len(cache.used_patterns) == 5 and cache.compiled == 5
    assert [pattern.fullmatch("a" * number) is not None for number, pattern in enumerate(patterns)] == [True] * 8


def test_a_process_that_found_the_file_and_compiled_only_a_few_new_texts_leaves_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    cache_file = tmp_path / "code.marshal"
    first = code_cache.CodeCache(cache_file)
    first.compile("x", "<string>", "eval")  # no file yet: even one text is saved
    first.save()
    written = cache_file.stat().st_mtime_ns
    second = code_cache.CodeCache(cache_file)
    for number in range(code_cache.NEW_ENTRIES_WORTH_SAVING - 1):  # texts that may differ in every process
        second.compile(f"x{number}", "<string>", "eval")
    second.save()
    assert cache_file.stat().st_mtime_ns == written
    assert [source for source, _, _, _ in code_cache.CodeCache(cache_file).loaded] == ["x"]


# Compiles patterns through the cache at argv[1] (every pattern pydantic and SQLAlchemy compile while they import, and
# a few of each kind), and compares each Pattern with the one re's own compiler makes.
_PATTERNS = """
import json, re, sys
from pathlib import Path
from server import code_cache
original = re._compiler.compile
cache = code_cache.install(Path(sys.argv[1]))
import pydantic, sqlalchemy
ours = [re.compile(p, f) for p, f in [(r"(?P<year>\\d{4})-(?P<month>\\d\\d)", 0), (rb"^[a-z]+\\s*$", re.M),
        (r"(?i)straße|ΣΑΣ", 0), (r"(?x) a  b # c", 0), (r"(?<=\\$)\\d+(?:\\.\\d+)?", re.A), (r"\\bword\\b", re.L & 0)]]
same = [key for key in cache.used_patterns if original(*key) != cache.compile_pattern(*key)]
groups = [ours[0].groupindex == {"year": 1, "month": 2}, ours[0].match("2026-11").group("month"),
          bool(ours[2].fullmatch("STRASSE".lower().replace("ss", "ß"))), bool(ours[2].fullmatch("σας")),
          ours[4].findall("$12.50 and $3"), ours[1].findall(b"ab  \\ncd")]
print(json.dumps({"compiled": cache.compiled, "kept": len(cache.used_patterns), "differ": [repr(k) for k in same],
                  "hooked": re._compiler.compile == cache.compile_pattern, "results": repr(groups)}))
"""


def test_patterns_compile_once_across_processes_to_res_own_patterns(tmp_path: Path) -> None:
    cache_file = tmp_path / "code.marshal"
    first = _run(_PATTERNS, str(cache_file))
    second = _run(_PATTERNS, str(cache_file))
    assert first["kept"] >= 50 and first["compiled"] >= first["kept"] and second["compiled"] == 0
    assert first["differ"] == second["differ"] == []  # flags, groups, engine code: Pattern == compares them all
    assert first["hooked"] is True and second["results"] == first["results"] == repr(
        [True, "11", True, True, ["12.50", "3"], [b"ab  ", b"cd"]])


def test_what_is_not_a_pattern_text_compiles_as_re_compiles_it(tmp_path: Path) -> None:
    import re

    cache = code_cache.CodeCache(tmp_path / "code.marshal")
    with pytest.raises(re.error):
        cache.compile_pattern("(unclosed", 0)
    # re.Scanner (public, untyped) compiles a parsed pattern, not a text
    scanner = re.Scanner([(r"\d+", lambda _, token: int(token)), (r"\s+", None)])  # type: ignore[attr-defined]
    assert scanner.scan("1 22") == ([1, 22], "")
    assert cache.compiled == 0 and cache.used_patterns == {}


def test_a_damaged_or_foreign_file_is_ignored_and_replaced(tmp_path: Path) -> None:
    cache_file = tmp_path / "code.marshal"
    for content in (b"", b"\x00garbage", b"\xe9" * 100):
        cache_file.write_bytes(content)
        made = _run(_DATACLASSES, str(cache_file))
        assert made["loaded"] == 0 and made["compiled"] >= 8 and made["same_code"] is True
        assert _run(_DATACLASSES, str(cache_file))["compiled"] == 0  # rewritten whole


def test_nothing_is_written_when_python_writes_no_bytecode(tmp_path: Path) -> None:
    cache_file = tmp_path / "code.marshal"
    assert _run(_DATACLASSES, str(cache_file), PYTHONDONTWRITEBYTECODE="1")["compiled"] >= 8
    assert not cache_file.exists()


def test_a_process_that_writes_no_bytecode_marshals_nothing_but_still_shares_code(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    cache = code_cache.CodeCache(tmp_path / "code.marshal")
    first = cache.compile("Decimal | None", "<string>", "eval")
    assert cache.compile("Decimal | None", "<string>", "eval") is first
    assert cache.compile_pattern(r"\d+", 0).fullmatch("12") is not None
    assert cache.used == {} and cache.used_patterns == {}


def test_a_command_line_process_compiles_through_the_cache() -> None:
    probe = (f"import sys; sys.argv = [{str(ROOT / 'server' / 'cli.py')!r}, 'probe']\n"
             "import dataclasses, typing, json, server.cli as cli\n"
             "import collections\n"
             "from sqlalchemy.util import langhelpers\n"
             "cli.main.command('probe')(lambda: print(json.dumps([type(hook.__self__).__name__ for hook in (\n"
             "    dataclasses.exec, typing.compile, collections.eval, langhelpers.compile, langhelpers.exec)])))\n"
             "cli.main(prog_name='tradewarden')\n")
    assert _run(probe) == ["CodeCache"] * 5


def test_each_command_keeps_its_own_file() -> None:
    names = {argv[1] if len(argv) > 1 else "": code_cache.default_path(argv).name for argv in (
        ["tradewarden", "serve", "--agent", "a"], ["tradewarden", "audit", "verify"], ["tradewarden", "--help"],
        ["tradewarden"], ["tradewarden", "../../x"])}
    assert names["serve"].startswith("compiled_code.serve.")
    assert names["audit"].startswith("compiled_code.audit.")
    assert {names["--help"], names[""], names["../../x"]} == {names["serve"].replace(".serve.", "._.")}
    assert code_cache.default_path().parent.name == "__pycache__"


def test_importing_the_command_line_as_a_library_leaves_the_libraries_alone() -> None:
    from sqlalchemy.util import langhelpers

    import server.cli  # noqa: F401

    assert not hasattr(dataclasses, "exec") and not hasattr(typing, "compile") and not hasattr(collections, "eval")
    assert sys.modules["re._compiler"].compile is code_cache._compile_pattern
    assert "compile" not in vars(langhelpers) and code_cache.installed() is None
    assert not any(isinstance(finder, code_cache.SeedGlobalsFinder) for finder in sys.meta_path)


def test_exec_and_eval_without_namespaces_run_in_their_callers_as_the_builtins_do(tmp_path: Path) -> None:
    cache = code_cache.CodeCache(tmp_path / "cache.marshal")

    def caller(run_exec: Any, run_eval: Any) -> tuple[Any, list[str]]:
        seen: list[str] = []
        run_exec("seen.append(__name__)")  # a local of the caller's, and its module's globals
        return run_eval("len(seen) + 20"), seen

    assert caller(cache.exec, cache.eval) == caller(exec, eval) == (21, [__name__])
