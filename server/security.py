"""What a deployment protects against, said where it matters: at start (docs/SECURITY.md has the whole story)."""

from __future__ import annotations

from server.config import Config
from tradewarden.log import get_logger

log = get_logger("tradewarden.security")

STDIO_LIVE_WARNING = (
    "LIVE trading over stdio: this server runs as the operator's OS user, so anyone with a shell on the agent's "
    "host can act as the operator (approve trades, resume trading, edit the config). For real money run "
    "`tradewarden serve --transport http` under an OS user of its own, give the agent only its bearer token, "
    "and keep the audit signing key and checkpoints out of the server's write reach (docs/SECURITY.md).")


def stdio_live_warning(config: Config, transport: str) -> str | None:
    """The warning a server gives at start when it trades real money over stdio; None otherwise."""
    return STDIO_LIVE_WARNING if transport == "stdio" and config.is_live else None


def warn_at_start(config: Config, transport: str) -> None:
    """Log (to stderr) what this deployment does not protect against."""
    warning = stdio_live_warning(config, transport)
    if warning is not None:
        log.warning("live_mode_over_stdio", detail=warning)
