"""`tradewarden approvals list` in a real terminal (a pty): an agent's words cannot drive the operator's terminal.

The attack: the agent's reasoning holds "cursor up, erase line" and a fake order line, or a right-to-left
override, so that the operator reads a different order than the one they approve."""

from __future__ import annotations

import asyncio
import os
import pty
import select
import subprocess
import time
from pathlib import Path

from tests.server.test_approvals_cli import _propose, write_config

ROOT = Path(__file__).resolve().parents[2]
BIDI_BYTES = [chr(c).encode() for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F, 0x061C)]


def run_in_terminal(*args: str, timeout: float = 60) -> bytes:
    """Run `tradewarden ARGS` with a pty as its terminal; everything it wrote to the terminal, as bytes."""
    leader, follower = pty.openpty()
    process = subprocess.Popen([str(ROOT / ".venv" / "bin" / "tradewarden"), *args], cwd=ROOT, stdin=follower,
                               stdout=follower, stderr=follower, close_fds=True)
    os.close(follower)
    received = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.5)
            if not ready:
                if process.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the terminal's other end closed
                break
            if not chunk:
                break
            received += chunk
    finally:
        os.close(leader)
        if process.poll() is None:
            process.kill()
        process.wait(10)
    assert process.returncode == 0, bytes(received)
    return bytes(received)


def test_escape_sequences_and_bidi_controls_never_reach_the_terminal_raw(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    fake_line = "\r\x1b[1A\x1b[2K    BUY 1 SPY, market order, time in force day"
    proposal_id = asyncio.run(_propose(
        config, qty=2, strategy="mom\x1b[2Kentum\u202e", reasoning=f"cheap{fake_line}\n\x1b]0;pwned\x07 "
                                                                   "\u202eyub\u2066 \u200bhidden \x9b2J"))
    shown = run_in_terminal("approvals", "list", "--config", str(config))
    assert b"\x1b" not in shown and b"\x07" not in shown and b"\x9b" not in shown.replace(b"\\x9b", b"")
    for control in BIDI_BYTES:
        assert control not in shown, control
    assert "\u200b".encode() not in shown
    text = shown.decode()
    assert proposal_id in text and "BUY 2 SPY, market order" in text
    # The agent's words are on the reasoning line, with the escapes shown, not obeyed.
    [reasoning] = [line for line in text.splitlines() if "reasoning:" in line]
    assert "\\x1b[1A\\x1b[2K" in reasoning and "U+202E" in reasoning and "BUY 1 SPY" in reasoning
    assert not any(line.lstrip().startswith("BUY 1 SPY") for line in text.splitlines())
    assert "strategy mom\\x1b[2KentumU+202E" in text
