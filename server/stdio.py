"""The stdio transport: the SDK's, plus an answer to every line and a bound on each.

The SDK's stdio transport drops a line it cannot parse without a word (the client waits forever), reads a
line of any size into memory, and loses the connection's writer when an answer cannot be encoded (a lone
surrogate). Here every line gets an answer:
- longer than MAX_LINE_BYTES: the rest of it is skipped unread into memory, and the request (its id read
  from the first bytes) is answered with JSON-RPC "invalid request" whose message starts INVALID_ARGUMENT;
- not JSON, or not a JSON-RPC message: JSON-RPC parse error (-32700) or invalid request (-32600);
- an answer that cannot be written as UTF-8: replaced by an internal error for the same id.
stdout still carries only protocol messages; the descriptors are claimed as the SDK claims them.

The server reads and writes messages in its own tasks (StdinMessages, StdoutMessages): no reader or writer task
and no memory stream between the pipe and the SDK's dispatcher, which saves each message a task switch and two
turns of the event loop. What the client sees is byte for byte what the SDK's stdio sends (tests/server/test_stdio.py).
"""

from __future__ import annotations

import asyncio
import contextvars
import errno
import json
import os
import queue
import re
import stat
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any, BinaryIO, Literal, Self

import anyio
import mcp_types as types
from mcp.shared.message import SessionMessage
from pydantic_core import from_json

from tradewarden.log import get_logger

log = get_logger("tradewarden.stdio")

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


READ_AHEAD_LINES = 16  # lines read from stdin before the server has taken them: a flood waits in the pipe


class StdinLines:
    """stdin's lines, read by one thread of their own that stays blocked in read() between lines; each line
    reaches the event loop with one call_soon_threadsafe. (A worker handed each read, anyio.to_thread, cost
    about 45 µs of CPU per line against 15. Reading on the loop itself, connect_read_pipe, cost less still but
    made calls slower when the CPUs were contended: see bench/results-issue12.md.)"""

    def __init__(self, stdin: BinaryIO, loop: asyncio.AbstractEventLoop) -> None:
        self._stdin, self._loop = stdin, loop
        self._lines: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._room = threading.Semaphore(READ_AHEAD_LINES)
        # A daemon: it may stay blocked in read() once the server is done (the descriptor is never closed
        # under it, see _claim) and must not keep the process alive.
        threading.Thread(target=self._read, name="tradewarden-stdin", daemon=True).start()

    def _read(self) -> None:
        line: bytes | None = None
        try:
            while True:
                self._room.acquire()
                line = _read_bounded_line(self._stdin)
                self._loop.call_soon_threadsafe(self._lines.put_nowait, line)
                if line is None:
                    return
        except Exception as error:  # an unreadable stdin ends the input, as EOF does
            if not isinstance(error, RuntimeError):  # RuntimeError: the loop is closed, nobody is reading
                log.warning("stdio_read_failed", error=type(error).__name__)
                with suppress(RuntimeError):
                    self._loop.call_soon_threadsafe(self._lines.put_nowait, None)

    async def next(self) -> bytes | None:
        """The next line (at most MAX_LINE_BYTES + 1 bytes of it), None at the end of the input."""
        line = await self._lines.get()
        self._room.release()
        return line


def _nowait_pipe(stdout: BinaryIO) -> int | None:
    """stdout's descriptor if it is a pipe this system can write without waiting, per call: pwritev2 with
    RWF_NOWAIT (Linux 5.x+ on pipes). Not O_NONBLOCK, which would change the open file description that
    anything else holding this stdout shares (and a tty's, the shell's)."""
    if not hasattr(os, "RWF_NOWAIT") or not hasattr(os, "pwritev"):
        return None
    try:
        fd = stdout.fileno()
        return fd if stat.S_ISFIFO(os.fstat(fd).st_mode) else None
    except (OSError, ValueError):  # io.UnsupportedOperation is an OSError: no descriptor
        return None


class StdoutLines:
    """Whole lines written to stdout in the order given; `write` returns once its line is written (a client
    that stops reading holds the server's answers back, not its memory).

    A line the pipe can take at once is written from the event loop's own thread with one non-blocking write:
    handing it to the writer thread cost a wake-up and a GIL hand-over, and the writer could not write before
    the loop let go of the interpreter (see bench/results-issue12.md). What would block (a full pipe, the rest
    of a partial write) goes to one writer thread of its own, and while it holds lines nothing is written
    directly, so the order stays that of `write`."""

    _STOP = None

    def __init__(self, stdout: BinaryIO, loop: asyncio.AbstractEventLoop) -> None:
        self._stdout, self._loop = stdout, loop
        self._direct_fd = _nowait_pipe(stdout)
        self._queued = 0  # lines handed to the writer thread and not written yet; touched on the loop only
        self._jobs: queue.SimpleQueue[tuple[bytes, asyncio.Future[None]] | None] = queue.SimpleQueue()
        threading.Thread(target=self._write, name="tradewarden-stdout", daemon=True).start()

    def _write(self) -> None:
        while (job := self._jobs.get()) is not None:
            data, done = job
            try:
                self._stdout.write(data)
                self._stdout.flush()
            except Exception as error:
                self._settle(done, error)
            else:
                self._settle(done, None)

    def _settle(self, done: asyncio.Future[None], error: Exception | None) -> None:
        def settle() -> None:
            self._queued -= 1
            if done.done():  # its waiter was cancelled
                return
            if error is None:
                done.set_result(None)
            else:
                done.set_exception(error)

        with suppress(RuntimeError):  # the loop is closed: nobody waits for it
            self._loop.call_soon_threadsafe(settle)

    def _write_now(self, data: bytes) -> int:
        """How much of data the pipe took without waiting (0 if none); BrokenPipeError if nobody reads."""
        fd = self._direct_fd
        if fd is None or self._queued:
            return 0
        try:
            return os.pwritev(fd, [data], -1, os.RWF_NOWAIT)
        except BlockingIOError:
            return 0
        except OSError as error:
            if error.errno in (errno.EOPNOTSUPP, errno.EINVAL, errno.ESPIPE):  # an older kernel: the thread only
                self._direct_fd = None
                return 0
            raise

    async def write(self, data: bytes) -> None:
        written = self._write_now(data)
        if written == len(data):
            return
        done = self._loop.create_future()
        self._queued += 1
        self._jobs.put((data[written:], done))
        await done

    def close(self) -> None:
        self._jobs.put(self._STOP)


DRAIN_SECONDS = 5.0  # at the end of the input, how long the requests already read may take to be answered


class Unanswered:
    """The requests read and not answered yet. At the end of the input (a client that wrote its last requests
    and closed stdin, `serve < requests.jsonl`) the server answers those before it stops: closing the
    session's stream at once would cancel them unanswered. Bounded by DRAIN_SECONDS."""

    def __init__(self) -> None:
        self._ids: set[str | int] = set()
        self._none_left = asyncio.Event()
        self._none_left.set()

    def asked(self, message: Any) -> None:
        if isinstance(message, types.JSONRPCRequest):
            self._ids.add(message.id)
            self._none_left.clear()

    def answered(self, message: Any) -> None:
        if isinstance(message, (types.JSONRPCResponse, types.JSONRPCError)) and message.id is not None:
            self._ids.discard(message.id)
            if not self._ids:
                self._none_left.set()

    async def drained(self) -> None:
        with suppress(TimeoutError):
            async with asyncio.timeout(DRAIN_SECONDS):
                await self._none_left.wait()


class _ClosableStream:
    """What the SDK's dispatcher asks of a stream besides reading or writing: closing it, and `async with`."""

    _closed = False

    def close(self) -> None:
        self._closed = True

    async def aclose(self) -> None:
        self._closed = True

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._closed = True


class StdinMessages(_ClosableStream):
    """The server's read stream: each stdin line parsed into a message when the server's receive loop asks for
    the next one, in that loop's own task. (A reader task handing messages over a memory stream cost a task
    switch and two anyio checkpoints, each a turn of the event loop, per message: see bench/results-issue12.md.)
    Lines that are no message are answered through `refuse` and skipped. At the end of the input it waits for
    the requests already read to be answered (Unanswered) before it ends."""

    def __init__(self, lines: StdinLines, refuse: Callable[[SessionMessage], Awaitable[None]],
                 unanswered: Unanswered) -> None:
        self._lines, self._refuse, self._unanswered = lines, refuse, unanswered
        self._closed = False
        # What a reader task started here would have sent with each message (the SDK's context streams carry the
        # sender's context; the dispatcher runs each request in a copy of it): this task's context, as it is now.
        self._context = contextvars.copy_context()

    @property
    def last_context(self) -> contextvars.Context:
        return self._context.copy()

    async def receive(self) -> SessionMessage | Exception:
        while True:
            if self._closed:
                raise anyio.ClosedResourceError
            line = await self._lines.next()
            if line is None:
                await self._unanswered.drained()
                self._closed = True
                raise anyio.EndOfStream
            message = parse_line(line)
            if message is None:
                continue
            if isinstance(message.message, types.JSONRPCError):
                log.warning("stdio_line_refused", code=message.message.error.code, size=len(line))
                await self._refuse(message)
                continue
            self._unanswered.asked(message.message)
            return message

    def __aiter__(self) -> StdinMessages:
        return self

    async def __anext__(self) -> SessionMessage | Exception:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None


class StdoutMessages(_ClosableStream):
    """The server's write stream: `send` encodes the message and writes its line (StdoutLines: at once when the
    pipe takes it, else through the writer thread; whole lines in the order of the calls, no lock needed), in
    the sender's own task. A broken stdout (the client closed it) ends the server: `on_failure` is told once,
    and the sender gets the BrokenResourceError the SDK's dispatcher expects from a closed stream."""

    def __init__(self, out: StdoutLines, unanswered: Unanswered, on_failure: Callable[[Exception], None]) -> None:
        self._out, self._unanswered, self._on_failure = out, unanswered, on_failure
        self._closed = False
        self._failed = False

    async def send(self, message: SessionMessage) -> None:
        if self._closed:
            raise anyio.ClosedResourceError
        await self.deliver(message)

    async def deliver(self, message: SessionMessage) -> None:
        """Write one message even once the server's side has closed this stream (the transport's own refusals
        of lines read before the end of the input still get their answer)."""
        if self._failed:
            raise anyio.BrokenResourceError
        try:
            await self._out.write(_encode(message))
        except OSError as error:
            self._failed = True
            self._on_failure(error)
            raise anyio.BrokenResourceError from error
        self._unanswered.answered(message.message)


@asynccontextmanager
async def bounded_stdio_server() -> AsyncIterator[tuple[StdinMessages, StdoutMessages]]:
    restores: list[Callable[[], None]] = []
    try:
        stdin, restore_in = _claim(0, "rb")
        if restore_in is not None:
            restores.append(restore_in)
        stdout, restore_out = _claim(1, "wb")
        if restore_out is not None:
            restores.append(restore_out)

        # Refusals (lines that are no message) are written by a task of their own, so a client flooding bad
        # lines while not reading its answers fills this buffer, not the server's receive loop.
        refusals_writer, refusals_reader = anyio.create_memory_object_stream[SessionMessage](16)
        loop = asyncio.get_running_loop()
        lines, out = StdinLines(stdin, loop), StdoutLines(stdout, loop)
        unanswered = Unanswered()
        failures: list[Exception] = []

        try:
            async with anyio.create_task_group() as group:
                def failed(error: Exception) -> None:  # stdout broke (nobody reads the answers): the server ends
                    if not failures:
                        failures.append(error)
                        group.cancel_scope.cancel()

                write_stream = StdoutMessages(out, unanswered, failed)

                async def refuser() -> None:
                    async with refusals_reader:
                        async for refusal in refusals_reader:
                            with suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                                await write_stream.deliver(refusal)

                group.start_soon(refuser)
                try:
                    yield StdinMessages(lines, refusals_writer.send, unanswered), write_stream
                finally:
                    refusals_writer.close()  # the refuser writes what it holds, then ends
        finally:
            out.close()
        if failures:
            raise failures[0]
    finally:
        for restore in reversed(restores):
            with suppress(Exception):
                restore()
