"""Loggers that load structlog when a line first needs it, not when the module that logs is imported.

structlog's package imports every processor, renderer and helper it has (~5 ms of CPU): a stdio server paid it
before its first answer even when it logs nothing on that path (log_level "warning": the start-up line is info).
A module's `log = get_logger(name)` is a LazyLogger. While structlog is not loaded and server/logging.py
configure_logging has left its configuration waiting (`configure`), a call below the configured level returns
None at once, as structlog's filtering logger does; any other call loads structlog, applies the waiting
configuration first, and goes to structlog's own logger for that name. So the same lines come out, with the
same fields, through the same processors.

Kept apart from server/ so that every layer (policies, ledger, broker, tools) can log through it.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any

# The levels of structlog's filtering logger methods (structlog._native): below the configured level, a no-op.
_METHOD_LEVELS = {"debug": 10, "info": 20, "msg": 20, "warning": 30, "warn": 30, "error": 40, "exception": 40,
                  "critical": 50, "fatal": 50}

_lock = threading.RLock()
_loaded: Any = None  # structlog, once imported with no configuration left waiting
_waiting: Callable[[Any], None] | None = None  # configure_logging's structlog.configure, not applied yet
_drop_below = 0  # while a configuration waits: the level under which it drops every line


def _drop(*_args: Any, **_kwargs: Any) -> None:
    return None


def _import_structlog_without_rich() -> Any:
    """structlog's package loads rich (its pretty tracebacks, and pygments and attrs with them) whenever rich is
    installed: ~40 ms of CPU, for renderers these logs never use (format_exc_info renders an exception to text
    before the console renderer sees it). So the first import of structlog, when nothing has loaded rich yet,
    runs with rich hidden; rich stays importable for everyone else."""
    if "structlog" not in sys.modules and "rich" not in sys.modules:
        sys.modules["rich"] = None  # type: ignore[assignment]  # `import rich` raises ImportError meanwhile
        try:
            import structlog
        finally:
            del sys.modules["rich"]
    import structlog

    return structlog


def structlog_module() -> Any:
    """structlog, imported (without rich) and configured as configure_logging asked."""
    global _loaded, _waiting, _drop_below
    if _loaded is not None:
        return _loaded
    with _lock:
        module = _import_structlog_without_rich()
        if _waiting is not None:
            apply, _waiting, _drop_below = _waiting, None, 0
            apply(module)
        _loaded = module
        return module


def configure(apply: Callable[[Any], None], min_level: int) -> None:
    """Give structlog its configuration: `apply(structlog)` now when structlog is loaded, else before the first
    line that needs it; meanwhile calls below `min_level` (what that configuration filters out) do nothing."""
    global _loaded, _waiting, _drop_below
    with _lock:
        if _loaded is None and "structlog" not in sys.modules:
            _waiting, _drop_below = apply, min_level
            return
        _waiting, _drop_below = None, 0
        module = _import_structlog_without_rich()
        apply(module)
        _loaded = module


class LazyLogger:
    """`structlog.get_logger(*args)`, obtained when a line first needs structlog."""

    __slots__ = ("_args", "_logger")

    def __init__(self, *args: Any) -> None:
        self._args = args
        self._logger: Any = None

    def __getattr__(self, name: str) -> Any:
        if _drop_below and _METHOD_LEVELS.get(name, _drop_below) < _drop_below:
            return _drop
        logger = self._logger
        if logger is None:
            logger = self._logger = structlog_module().get_logger(*self._args)
        return getattr(logger, name)


def get_logger(*args: Any) -> Any:
    """What `structlog.get_logger(*args)` gives, without importing structlog until a line needs it."""
    return LazyLogger(*args)
