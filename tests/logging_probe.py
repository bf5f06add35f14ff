"""Tests that configure logging as a server does, and leave the process able to log afterwards."""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from server.logging import configure_logging


class ServerStderr:
    """A file standing in for the server's stderr: `configure` logging as `tradewarden serve` does (inside the
    test: pytest swaps sys.stderr between a test's phases), then `read` what a server would have printed."""

    def __init__(self, path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.path = path
        self.sink = path.open("w", encoding="utf-8")
        self.monkeypatch = monkeypatch

    def configure(self, level: str = "info", json: bool = False) -> None:
        self.monkeypatch.setattr(sys, "stderr", self.sink)
        configure_logging(level, json)
        # A server caches each logger on first use; here that would pin module loggers to this file and this
        # configuration for the rest of the session (later tests' capture_logs would see nothing).
        structlog.configure(cache_logger_on_first_use=False)

    def read(self) -> str:
        self.sink.flush()
        return self.path.read_text()


@pytest.fixture
def server_stderr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ServerStderr]:
    """structlog's configuration, the root handlers and the exception hooks are put back afterwards."""
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    hooks = sys.excepthook, threading.excepthook
    stderr = ServerStderr(tmp_path / "stderr.log", monkeypatch)
    try:
        yield stderr
    finally:
        structlog.configure(**saved)
        stderr.sink.close()
        root.handlers[:] = handlers
        root.setLevel(level)
        sys.excepthook, threading.excepthook = hooks
