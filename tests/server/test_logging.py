"""Log lines on stderr never carry a secret, whatever rendering of it an error or a library put in them."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import pytest
import structlog

from policies import secrets

if TYPE_CHECKING:  # the module itself is loaded as a pytest plugin (its fixture), not imported
    from tests.logging_probe import ServerStderr

pytest_plugins = ["tests.logging_probe"]  # server_stderr: what configure_logging printed

SECRET = "loggedSecretFirstHalf0123\nloggedSecretSecondHalf4567"


@pytest.fixture(autouse=True)
def registered() -> None:
    secrets.register(SECRET)


@pytest.mark.parametrize("json", [False, True])
def test_structlog_fields_and_exceptions_are_scrubbed(server_stderr: ServerStderr, json: bool) -> None:
    server_stderr.configure("debug", json=json)
    log = structlog.get_logger("test")
    log.warning("call_failed", error=f"InvalidHeader: {SECRET!r}", detail=ValueError(SECRET))
    try:
        raise RuntimeError(f"header value {SECRET.encode()!r}")
    except RuntimeError:
        log.exception("crashed")
    err = server_stderr.read()
    assert "call_failed" in err and "crashed" in err
    assert "loggedSecret" not in err


def test_standard_library_log_lines_and_tracebacks_are_scrubbed(server_stderr: ServerStderr) -> None:
    server_stderr.configure("info")
    try:
        raise ValueError(f"bad key {SECRET!r}")
    except ValueError:
        logging.getLogger("some.library").exception("request failed for %s", SECRET)
    err = server_stderr.read()
    assert "request failed" in err and "Traceback" in err
    assert "loggedSecret" not in err
