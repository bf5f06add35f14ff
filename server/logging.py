"""structlog to stderr, never stdout: under stdio, stdout is the protocol channel.

structlog itself is loaded when a line first needs it (tradewarden/log.py): configure_logging hands it the
configuration to apply then."""

from __future__ import annotations

import logging
import sys
import threading
import traceback
from collections.abc import Mapping, MutableMapping
from types import TracebackType
from typing import Any

from tradewarden import log as lazy_log


def redact_event(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Last processor before rendering: keys naming a secret lose their value, and every rendering of a known
    secret or token is masked in every value, formatted tracebacks included (policies/redaction.py `redact`)."""
    from policies.redaction import redact

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
    stderr = sys.stderr  # the stream of this call, even when structlog is configured later

    def apply(structlog_module: Any) -> None:
        renderer = (structlog_module.processors.JSONRenderer() if json
                    else structlog_module.dev.ConsoleRenderer(colors=False))
        structlog_module.configure(
            processors=[structlog_module.processors.add_log_level,
                        structlog_module.processors.TimeStamper(fmt="iso", utc=True),
                        structlog_module.processors.format_exc_info, redact_event, renderer],
            wrapper_class=structlog_module.make_filtering_bound_logger(numeric),
            logger_factory=structlog_module.PrintLoggerFactory(file=stderr),
            cache_logger_on_first_use=True,
        )

    lazy_log.configure(apply, numeric)
    # The standard library's loggers (the SDK's, uvicorn's) go to stderr as well.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # An exception nobody caught prints its traceback to stderr: scrubbed like every log line.
    sys.excepthook = _scrubbed_excepthook
    threading.excepthook = lambda args: _scrubbed_excepthook(args.exc_type, args.exc_value, args.exc_traceback)
    root.setLevel(max(numeric, logging.WARNING) if numeric > logging.DEBUG else numeric)
