"""typing's ForwardRefs compiling each annotation string once per process (server/forward_ref_memo.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from server import forward_ref_memo

ROOT = Path(__file__).resolve().parents[2]


def test_the_same_text_gives_the_same_code_object_as_compile_gives() -> None:
    first = forward_ref_memo.memo_compile("list[Decimal] | None", "<string>", "eval")
    again = forward_ref_memo.memo_compile("list[Decimal] | None", "<string>", "eval")
    own = compile("list[Decimal] | None", "<string>", "eval", dont_inherit=True)
    assert again is first
    assert first == own and first.co_flags == own.co_flags


def test_a_text_that_is_not_python_still_raises_syntax_error() -> None:
    try:
        forward_ref_memo.memo_compile("list[", "<string>", "eval")
    except SyntaxError:
        return
    raise AssertionError("compiled a text that is not an expression")


# Installs the memo, then checks typing evaluates forward references against each class's own namespace.
_PROBE = """
import typing
from server import forward_ref_memo
forward_ref_memo.install()
assert forward_ref_memo.installed()

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
assert typing.ForwardRef("Item").__forward_code__ is typing.ForwardRef("Item").__forward_code__
try:
    typing.ForwardRef("list[")
except SyntaxError:
    print("ok")
"""


def test_typing_evaluates_forward_references_as_before_with_the_memo() -> None:
    out = subprocess.run([sys.executable, "-c", _PROBE], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["ok"]


def test_a_command_line_process_installs_it_and_a_library_import_does_not() -> None:
    probe = (f"import sys; sys.argv = [{str(ROOT / 'server' / 'cli.py')!r}, 'probe']\n"
             "import server.process_start\nfrom server import forward_ref_memo\nprint(forward_ref_memo.installed())")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True"]
    import server.cli  # noqa: F401

    assert not forward_ref_memo.installed()
