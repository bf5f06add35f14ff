"""typing.ForwardRef compiles each annotation string once per process, not once per ForwardRef.

Every `typing.ForwardRef(text)` compiles its text to an eval code object (typing.py: `compile(text, '<string>',
'eval')`), ~3 µs each. Pydantic makes one for every string annotation of every field and generic it inspects, the
SDK's models included: ~2,800 of them before a stdio server's first answer, only ~800 distinct texts. The same text
compiled the same way always gives an equal code object, and code objects are immutable, so one can be shared by
every ForwardRef of that text: the memo hands back the one compiled first. Evaluation (ForwardRef._evaluate, with
its own globals and locals each time) is unchanged.

Installed by server/process_start.py for command-line processes only (typing looks `compile` up in its module
globals before the builtins, so the memo is a global of typing, nothing else sees it). Deliberately no `from
__future__ import annotations` here: the memo compiles with dont_inherit=True, which is what typing's own call
compiles with (typing.py has no __future__ imports), whatever module calls it.
"""

import builtins
import typing
from types import CodeType
from typing import Any

# Past this many distinct texts (a program making ForwardRefs from data), compile as before without keeping them.
MAX_ENTRIES = 20_000

_memo: dict[tuple[str, str, str], CodeType] = {}


def memo_compile(source: Any, filename: Any, mode: Any, *args: Any, **kwargs: Any) -> Any:
    """builtins.compile, with typing's own call (a str, a filename, a mode, nothing else) memoized."""
    if args or kwargs or type(source) is not str or type(filename) is not str or type(mode) is not str:
        return builtins.compile(source, filename, mode, *args, **kwargs)
    key = (source, filename, mode)
    code = _memo.get(key)
    if code is None:
        code = builtins.compile(source, filename, mode, dont_inherit=True)
        if len(_memo) < MAX_ENTRIES:
            _memo[key] = code
    return code


def install() -> None:
    """From now on, typing's ForwardRefs compile through the memo."""
    typing.compile = memo_compile  # type: ignore[attr-defined]


def installed() -> bool:
    return getattr(typing, "compile", None) is memo_compile
