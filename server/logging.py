"""structlog to stderr, never stdout: under stdio, stdout is the protocol channel."""

from __future__ import annotations

import logging
import sys
import threading
import traceback
from collections.abc import Mapping, MutableMapping
from types import TracebackType
from typing import Any


def _import_structlog_without_rich() -> None:
    """structlog's package loads rich (its pretty tracebacks, and pygments and attrs with them) whenever rich is
    installed: ~40 ms of CPU before a stdio server's first answer, for renderers these logs never use
    (format_exc_info renders an exception to text before the console renderer sees it). So the first import of
    structlog, when nothing has loaded rich yet, runs with rich hidden; rich stays importable for everyone else."""
    if "structlog" in sys.modules or "rich" in sys.modules:
        return
    sys.modules["rich"] = None  # type: ignore[assignment]  # `import rich` raises ImportError meanwhile
    try:
        import structlog  # noqa: F401
    finally:
        del sys.modules["rich"]


_import_structlog_without_rich()

import structlog  # noqa: E402


def redact_event(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Last processor before rendering: keys naming a secret lose their value, and every rendering of a known
    secret or token is masked in every value, formatted tracebacks included (policies/audit.py `redact`)."""
    from policies.audit import redact

    plain = (str, int, float, bool, type(None), Mapping, list, tuple)
    # Anything else (an exception, a request object) is rendered here, so the scrubbing sees its text.
    return redact({str(k): v if isinstance(v, plain) else str(v) for k, v in event.items()})  # type: ignore[no-any-return]


class RedactingFormatter(logging.Formatter):
    """The standard library's log lines (the SDK's, uvicorn's, with their tracebacks) scrubbed the same way."""

    def format(self, record: logging.LogRecord) -> str:
        from policies.secrets import scrub

        return scrub(super().format(record))


def _scrubbed_excepthook(kind: type[BaseException], value: BaseException | None, tb: TracebackType | None) -> None:
    from policies.secrets import scrub

    sys.stderr.write(scrub("".join(traceback.format_exception(kind, value, tb))))


_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def configure_logging(level: str = "info", json: bool = False) -> None:
    numeric = _LEVELS.get(level, logging.INFO)
    renderer: structlog.types.Processor = (structlog.processors.JSONRenderer() if json
                                           else structlog.dev.ConsoleRenderer(colors=False))
    structlog.configure(
        processors=[structlog.processors.add_log_level, structlog.processors.TimeStamper(fmt="iso", utc=True),
                    structlog.processors.format_exc_info, redact_event, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    # The standard library's loggers (the SDK's, uvicorn's) go to stderr as well.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # An exception nobody caught prints its traceback to stderr: scrubbed like every log line.
    sys.excepthook = _scrubbed_excepthook
    threading.excepthook = lambda args: _scrubbed_excepthook(args.exc_type, args.exc_value, args.exc_traceback)
    root.setLevel(max(numeric, logging.WARNING) if numeric > logging.DEBUG else numeric)
