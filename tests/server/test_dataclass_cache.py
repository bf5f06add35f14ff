"""The compiled methods of dataclasses kept between processes (server/dataclass_cache.py): the same classes, compiled
once."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from server import dataclass_cache

ROOT = Path(__file__).resolve().parents[2]

# Makes the same dataclasses through the cache at argv[1], then again without it (dataclasses' own exec), and
# reports what the cache did and whether the two kinds of classes are the same.
_PROBE = """
import builtins, dataclasses, json, sys
from pathlib import Path
from server import dataclass_cache

cache = dataclass_cache.install(Path(sys.argv[1]))

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
print(json.dumps({"loaded": len(cache.loaded), "compiled": cache.compiled, "same_code": same_code,
                  "methods": sorted(name for name in vars(Point) if hasattr(getattr(Point, name), "__code__")),
                  "repr": repr(Box(Point(1, ("a",)))), "eq": Point(1) == Point(1), "order": Point(1) < Point(2),
                  "hash": hash(Point(1)) == hash(Point(1)), "frozen": frozen,
                  "init_annotations": str(Point.__init__.__annotations__)}))
"""


def _probe(cache_file: Path, **env: str) -> dict[str, Any]:
    """The probe's report; it writes bytecode unless env says otherwise (whatever the test run's own setting)."""
    inherited = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}
    ran = subprocess.run([sys.executable, "-c", _PROBE, str(cache_file)], cwd=ROOT, capture_output=True, text=True,
                         timeout=60, env={**inherited, **env})
    assert ran.returncode == 0, ran.stderr[-2000:]
    return json.loads(ran.stdout)  # type: ignore[no-any-return]


def test_a_second_process_compiles_no_method_the_first_compiled(tmp_path: Path) -> None:
    cache_file = tmp_path / "methods.marshal"
    first = _probe(cache_file)
    assert first["loaded"] == 0 and first["compiled"] >= 8 and cache_file.is_file()
    second = _probe(cache_file)
    assert second["loaded"] == first["compiled"] and second["compiled"] == 0
    assert {**first, "loaded": 0, "compiled": 0} == {**second, "loaded": 0, "compiled": 0}


def test_classes_made_through_the_cache_are_the_ones_dataclasses_makes(tmp_path: Path) -> None:
    cache_file = tmp_path / "methods.marshal"
    _probe(cache_file)
    made = _probe(cache_file)  # from the file this time
    assert made["same_code"] is True  # every method: the same code object and annotations as dataclasses' own
    assert {"__init__", "__repr__", "__eq__", "__lt__", "__hash__", "__setattr__", "__delattr__"} <= set(
        made["methods"])
    assert made["repr"] == "make.<locals>.Box(point=make.<locals>.Point(x=1, tags=('a',)), label='box')"
    assert made["eq"] and made["order"] and made["hash"] and made["frozen"]
    assert made["init_annotations"] == str({"x": int, "tags": tuple[str, ...], "return": None})  # not strings


def test_a_damaged_or_foreign_file_is_ignored_and_replaced(tmp_path: Path) -> None:
    cache_file = tmp_path / "methods.marshal"
    for content in (b"", b"\x00garbage", b"\xe9" * 100):
        cache_file.write_bytes(content)
        made = _probe(cache_file)
        assert made["loaded"] == 0 and made["compiled"] >= 8 and made["same_code"] is True
        assert _probe(cache_file)["compiled"] == 0  # rewritten whole


def test_nothing_is_written_when_python_writes_no_bytecode(tmp_path: Path) -> None:
    cache_file = tmp_path / "methods.marshal"
    assert _probe(cache_file, PYTHONDONTWRITEBYTECODE="1")["compiled"] >= 8
    assert not cache_file.exists()


def test_a_command_line_process_compiles_its_dataclasses_through_the_cache() -> None:
    probe = (f"import sys; sys.argv = [{str(ROOT / 'server' / 'cli.py')!r}, 'probe']\n"
             "import dataclasses, server.cli as cli\n"
             "cli.main.command('probe')(lambda: print(type(getattr(dataclasses, 'exec', None).__self__).__name__))\n"
             "cli.main(prog_name='tradewarden')\n")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "MethodCache"


def test_each_command_keeps_its_own_file() -> None:
    names = {argv[1] if len(argv) > 1 else "": dataclass_cache.default_path(argv).name for argv in (
        ["tradewarden", "serve", "--agent", "a"], ["tradewarden", "audit", "verify"], ["tradewarden", "--help"],
        ["tradewarden"], ["tradewarden", "../../x"])}
    assert names["serve"].startswith("dataclass_methods.serve.")
    assert names["audit"].startswith("dataclass_methods.audit.")
    assert {names["--help"], names[""], names["../../x"]} == {names["serve"].replace(".serve.", "._.")}
    assert dataclass_cache.default_path().parent.name == "__pycache__"


def test_importing_the_command_line_as_a_library_leaves_dataclasses_alone() -> None:
    import server.cli  # noqa: F401

    assert not hasattr(dataclasses, "exec")
