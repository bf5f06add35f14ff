"""The stdio transport: the SDK's, plus an answer to every line and a bound on each.

The SDK's stdio transport drops a line it cannot parse without a word (the client waits forever), reads a
line of any size into memory, and loses the connection's writer when an answer cannot be encoded (a lone
surrogate). Here every line gets an answer:
- longer than MAX_LINE_BYTES: the rest of it is skipped unread into memory, and the request (its id read
  from the first bytes) is answered with JSON-RPC "invalid request" whose message starts INVALID_ARGUMENT;
- not JSON, or not a JSON-RPC message: JSON-RPC parse error (-32700) or invalid request (-32600);
- an answer that cannot be written as UTF-8: replaced by an internal error for the same id.
stdout still carries only protocol messages; the descriptors are claimed as the SDK claims them.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any, BinaryIO, Literal

import anyio
import anyio.lowlevel
import mcp_types as types
import structlog
from mcp.shared._context_streams import create_context_streams
from mcp.shared.message import SessionMessage
from pydantic_core import from_json

log = structlog.get_logger("tradewarden.stdio")

MAX_LINE_BYTES = 64 * 1024  # one JSON-RPC message; the largest legitimate tool call is a few KB
_ID = re.compile(rb'"id"\s*:\s*(-?\d{1,18}|"(?:[^"\\]|\\.){0,200}")')


def request_id(head: bytes) -> str | int | None:
    """The id of a request from its first bytes, if it can be read there."""
    found = _ID.search(head)
    if found is None:
        return None
    try:
        value = json.loads(found.group(1))
    except ValueError:
        return None
    return value if isinstance(value, (str, int)) and not isinstance(value, bool) else None


def _error(message_id: str | int | None, code: int, message: str) -> SessionMessage:
    return SessionMessage(types.JSONRPCError(jsonrpc="2.0", id=message_id,
                                             error=types.ErrorData(code=code, message=message)))


def parse_line(line: bytes) -> SessionMessage | None:
    """One line of stdin as a message, or the error answer to send back instead. None for a blank line."""
    if not line.strip():
        return None
    if len(line) > MAX_LINE_BYTES:
        return _error(request_id(line[:4096]), types.INVALID_REQUEST,
                      f"INVALID_ARGUMENT: a message of more than {MAX_LINE_BYTES} bytes is refused")
    text = line.decode("utf-8", errors="replace")
    try:
        return SessionMessage(types.jsonrpc_message_adapter.validate_json(text, by_name=False))
    except ValueError:
        pass
    try:
        from_json(text)  # the SDK's own JSON parser: it refuses lone surrogate escapes, as UTF-8 must
    except ValueError:
        return _error(request_id(line), types.PARSE_ERROR,
                      "parse error: not valid JSON (or a string with a lone surrogate escape)")
    return _error(request_id(line), types.INVALID_REQUEST, "invalid request: not a JSON-RPC 2.0 message")


def _encode(message: SessionMessage) -> bytes:
    """The message as one line of UTF-8; an answer that cannot be encoded becomes an internal error."""
    try:
        return (message.message.model_dump_json(by_alias=True, exclude_unset=True) + "\n").encode("utf-8")
    except (UnicodeError, ValueError):
        message_id = getattr(message.message, "id", None)
        fallback = _error(message_id, types.INTERNAL_ERROR, "the answer could not be encoded as UTF-8")
        return (fallback.message.model_dump_json(by_alias=True, exclude_unset=True) + "\n").encode("utf-8")


def _read_bounded_line(stream: BinaryIO) -> bytes | None:
    """One line, at most MAX_LINE_BYTES + 1 bytes of it kept (the rest is read and dropped). None at EOF."""
    line = stream.readline(MAX_LINE_BYTES + 1)
    if not line:
        return None
    if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
        while True:  # skip the rest of an oversized line without holding it
            rest = stream.readline(MAX_LINE_BYTES)
            if not rest or rest.endswith(b"\n"):
                break
    return line


def _claim(fd: int, mode: Literal["rb", "wb"]) -> tuple[BinaryIO, Callable[[], None] | None]:
    """The SDK's claim of fd 0/1 (stray reads see EOF, stray prints go to stderr); plain buffers if the
    SDK's helpers are not there."""
    try:
        from mcp.server import stdio as sdk_stdio

        if fd == 0:
            return sdk_stdio._claim_fd(0, sys.stdin, mode, sdk_stdio._open_stdin_diversion)  # type: ignore[no-any-return]
        return sdk_stdio._claim_fd(1, sys.stdout, mode, sdk_stdio._open_stdout_diversion)  # type: ignore[no-any-return]
    except (ImportError, AttributeError):
        return (sys.stdin.buffer if fd == 0 else sys.stdout.buffer), None


@asynccontextmanager
async def bounded_stdio_server() -> AsyncIterator[tuple[Any, Any]]:
    restores: list[Callable[[], None]] = []
    try:
        stdin, restore_in = _claim(0, "rb")
        if restore_in is not None:
            restores.append(restore_in)
        stdout, restore_out = _claim(1, "wb")
        if restore_out is not None:
            restores.append(restore_out)

        read_writer, read_stream = create_context_streams[SessionMessage | Exception](0)
        write_stream, write_reader = create_context_streams[SessionMessage](0)
        answers_writer, answers_reader = anyio.create_memory_object_stream[SessionMessage](16)
        one_writer = anyio.Lock()  # answers and refusals share stdout: whole lines, one at a time

        async def reader() -> None:
            try:
                async with read_writer, answers_writer:
                    while True:
                        line = await anyio.to_thread.run_sync(_read_bounded_line, stdin, abandon_on_cancel=True)
                        if line is None:
                            return
                        message = parse_line(line)
                        if message is None:
                            continue
                        if isinstance(message.message, types.JSONRPCError):
                            log.warning("stdio_line_refused", code=message.message.error.code,
                                        size=len(line))
                            await answers_writer.send(message)
                        else:
                            await read_writer.send(message)
            except anyio.ClosedResourceError:
                await anyio.lowlevel.checkpoint()

        async def write(message: SessionMessage) -> None:
            data = _encode(message)
            async with one_writer:
                await anyio.to_thread.run_sync(lambda: (stdout.write(data), stdout.flush()))

        async def writer() -> None:
            try:
                async with write_reader:
                    async for message in write_reader:
                        await write(message)
            except anyio.ClosedResourceError:
                await anyio.lowlevel.checkpoint()

        async def answerer() -> None:
            async with answers_reader:
                async for message in answers_reader:
                    await write(message)

        async with anyio.create_task_group() as group:
            group.start_soon(reader)
            group.start_soon(writer)
            group.start_soon(answerer)
            yield read_stream, write_stream
    finally:
        for restore in reversed(restores):
            with suppress(Exception):
                restore()
