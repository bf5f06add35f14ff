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

import asyncio
import json
import os
import re
import stat
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
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


def _loop_can_serve(stdin: BinaryIO, stdout: BinaryIO) -> bool:
    """Whether the event loop can read stdin and write stdout itself (no worker thread per line): both are
    pipes or sockets, the loop is asyncio's (or uvloop), and stdout is not the pipe stderr writes to (the
    loop makes its descriptor non-blocking, and a log line must never meet a full pipe's EAGAIN). A terminal
    or a regular file keeps the worker-thread path: a regular file cannot be polled, and a terminal made
    non-blocking would stay so for the shell that shares it."""
    try:
        asyncio.get_running_loop()  # RuntimeError under another event loop library (trio)
        read_end, write_end, errors = (os.fstat(stdin.fileno()), os.fstat(stdout.fileno()), os.fstat(2))
    except (OSError, ValueError, AttributeError, RuntimeError):
        return False
    pollable = all(stat.S_ISFIFO(end.st_mode) or stat.S_ISSOCK(end.st_mode) for end in (read_end, write_end))
    return pollable and (write_end.st_dev, write_end.st_ino) != (errors.st_dev, errors.st_ino)


class _LoopLines:
    """stdin's lines read by the event loop from the pipe, each bounded as _read_bounded_line bounds it: a
    longer line gives its first MAX_LINE_BYTES + 1 bytes (refused by parse_line), the rest skipped without
    being held. The reader's buffer is bounded too (asyncio pauses the pipe past twice the limit)."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader

    async def next(self) -> bytes | None:
        try:
            return await self._reader.readuntil(b"\n")
        except asyncio.IncompleteReadError as end:  # EOF: the last line without its newline, or nothing
            return end.partial or None
        except asyncio.LimitOverrunError as long:
            head = await self._take(long.consumed)
            await self._skip_rest_of_line()
            return head[:MAX_LINE_BYTES + 1]

    async def _take(self, count: int) -> bytes:
        try:
            return await self._reader.readexactly(count)
        except asyncio.IncompleteReadError as end:
            return end.partial

    async def _skip_rest_of_line(self) -> None:
        while True:
            try:
                await self._reader.readuntil(b"\n")
                return
            except asyncio.IncompleteReadError:
                return
            except asyncio.LimitOverrunError as more:
                await self._take(more.consumed)


NextLine = Callable[[], Awaitable[bytes | None]]  # the next line of stdin (bounded), None at EOF
WriteBytes = Callable[[bytes], Awaitable[None]]  # whole lines to stdout


@asynccontextmanager
async def _loop_pipes(stdin: BinaryIO, stdout: BinaryIO) -> AsyncIterator[tuple[NextLine, WriteBytes]]:
    """stdin and stdout as the loop's pipe transports; their descriptors' blocking mode restored after."""
    loop = asyncio.get_running_loop()
    blocking = {fd: os.get_blocking(fd) for fd in (stdin.fileno(), stdout.fileno())}
    reader = asyncio.StreamReader(limit=MAX_LINE_BYTES + 1, loop=loop)
    read_transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader, loop=loop), stdin)
    try:
        write_transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, stdout)
    except BaseException:
        read_transport.close()
        raise
    writer = asyncio.StreamWriter(write_transport, protocol, None, loop)

    async def write(data: bytes) -> None:
        writer.write(data)  # written at once when the pipe has room: no thread, no copy kept
        await writer.drain()

    try:
        yield _LoopLines(reader).next, write
    finally:
        read_transport.close()
        write_transport.close()
        for fd, was_blocking in blocking.items():
            with suppress(OSError):
                os.set_blocking(fd, was_blocking)


@asynccontextmanager
async def _thread_pipes(stdin: BinaryIO, stdout: BinaryIO) -> AsyncIterator[tuple[NextLine, WriteBytes]]:
    """stdin and stdout through a worker thread per line (any kind of file, any event loop)."""

    async def next_line() -> bytes | None:
        return await anyio.to_thread.run_sync(_read_bounded_line, stdin, abandon_on_cancel=True)

    async def write(data: bytes) -> None:
        await anyio.to_thread.run_sync(lambda: (stdout.write(data), stdout.flush()))

    yield next_line, write


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
        pipes = _loop_pipes(stdin, stdout) if _loop_can_serve(stdin, stdout) else _thread_pipes(stdin, stdout)

        async with pipes as (next_line, write_bytes):
            async def reader() -> None:
                try:
                    async with read_writer, answers_writer:
                        while True:
                            line = await next_line()
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
                    await write_bytes(data)

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
