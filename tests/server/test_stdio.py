"""A real `tradewarden serve` subprocess over stdio: it trades, and its stdout carries only protocol."""

from __future__ import annotations

import asyncio
import json
import shlex
import sys
from contextlib import suppress
from pathlib import Path
from typing import IO, Any

from mcp import Client, StdioServerParameters, stdio_client

ROOT = Path(__file__).resolve().parents[2]


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "tradewarden.toml"
    path.write_text(f"""
[server]
database_url = "sqlite+aiosqlite:///{tmp_path / 'stdio.db'}"
enforce_market_hours = false
log_level = "debug"

[[agents]]
id = "stdio-agent"
allowed_symbols = ["*"]
approval = "auto"
auto_approve_max_notional = 5000
""")
    return path


async def test_stdio_server_trades_and_keeps_stdout_for_protocol_only(tmp_path: Path) -> None:
    stdout_copy, stderr_copy = tmp_path / "stdout.log", tmp_path / "stderr.log"
    serve = shlex.join([sys.executable, "-m", "server.cli", "serve", "--agent", "stdio-agent",
                        "--config", str(_config(tmp_path))])
    # tee keeps a copy of everything the server writes to stdout, byte for byte.
    params = StdioServerParameters(command="bash",
                                   args=["-c", f"{serve} 2>{shlex.quote(str(stderr_copy))} | tee {stdout_copy}"],
                                   cwd=str(ROOT))
    async with Client(stdio_client(params)) as client:
        tools = await client.list_tools()
        assert len(tools.tools) == 7
        proposal = await client.call_tool("propose_trade", {"symbol": "BTC/USD", "side": "buy", "notional": 100,
                                                            "time_in_force": "gtc", "reasoning": "stdio test"})
        assert proposal.structured_content["status"] == "approved", proposal.structured_content
        executed = await client.call_tool("execute_trade",
                                          {"proposal_id": proposal.structured_content["proposal_id"]})
        assert executed.structured_content["status"] == "filled", executed.structured_content
        await client.call_tool("propose_trade", {"symbol": "AAPL", "side": "buy", "qty": -1, "reasoning": "x"})
    lines = [line for line in stdout_copy.read_text().splitlines() if line.strip()]
    assert lines, "the server wrote nothing to stdout"
    for line in lines:
        message = json.loads(line)  # anything that is not JSON-RPC breaks the client
        assert message.get("jsonrpc") == "2.0"
    assert stderr_copy.read_text().strip(), "logs are expected on stderr"


async def test_a_2025_client_trades_over_stdio_after_its_handshake(tmp_path: Path) -> None:
    params = StdioServerParameters(command=sys.executable, cwd=str(ROOT),
                                   args=["-m", "server.cli", "serve", "--agent", "stdio-agent", "--config",
                                         str(_config(tmp_path))])
    async with Client(stdio_client(params), mode="legacy") as client:
        assert client.session.protocol_version.startswith("2025")  # type: ignore[union-attr]
        assert len((await client.list_tools()).tools) == 7
        proposal = await client.call_tool("propose_trade", {"symbol": "AAPL", "side": "buy", "qty": 1,
                                                            "reasoning": "a 2025 client"})
        assert proposal.structured_content is not None and proposal.structured_content["status"] == "approved"
        refused = await client.call_tool("propose_trade", {"symbol": "AAPL", "side": "hold", "qty": 1,
                                                           "reasoning": "x"})
        assert refused.is_error and refused.content[0].text.startswith("INVALID_ORDER")  # type: ignore[union-attr]


# --- every line gets an answer (server/stdio.py) --------------------------------------------------------

async def _raw_exchange(tmp_path: Path, lines: list[bytes]) -> list[dict[str, object]]:
    """Send raw lines to a real `tradewarden serve` over stdio; return every JSON-RPC message it wrote."""
    import asyncio

    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server.cli", "serve", "--agent", "stdio-agent", "--config", str(_config(tmp_path)),
        cwd=str(ROOT), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL)
    assert process.stdin is not None and process.stdout is not None
    answers: list[dict[str, object]] = []
    try:
        for line in lines:
            process.stdin.write(line + b"\n")
            await process.stdin.drain()
            answer = await asyncio.wait_for(process.stdout.readline(), timeout=20)
            answers.append(json.loads(answer))
    finally:
        process.stdin.close()
        await asyncio.wait_for(process.wait(), timeout=20)
    return answers


async def test_every_malformed_line_gets_a_json_rpc_error(tmp_path: Path) -> None:
    surrogate = b'{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"get_orders","arguments":' \
                b'{"status":"\\ud800"}}}'
    oversized = b'{"jsonrpc":"2.0","id":"big","method":"tools/call","params":{"name":"cancel_order",' \
                b'"arguments":{"order_id":"' + b"7" * 200_000 + b'"}}}'
    not_json, not_rpc, bad_utf8 = b'{"jsonrpc": "2.0", "id": 3,', b'{"hello": "world", "id": 4}', b'\xff\xfe{'
    answers = await _raw_exchange(tmp_path, [not_json, surrogate, oversized, not_rpc, bad_utf8])
    codes = [(a.get("id"), a["error"]["code"]) for a in answers]  # type: ignore[index]
    assert codes == [(3, -32700), (7, -32700), ("big", -32600), (4, -32600), (None, -32700)]
    assert str(answers[2]["error"]["message"]).startswith("INVALID_ARGUMENT")  # type: ignore[index]


async def test_deeply_nested_json_is_refused_and_the_next_line_answered(tmp_path: Path) -> None:
    nested_list = b'{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"get_orders","arguments":' \
                  b'{"status":' + b"[" * 20_000 + b"]" * 20_000 + b"}}}"
    nested_object = b'{"jsonrpc":"2.0","id":10,"method":"ping","params":' + b'{"a":' * 5000 + b"1" + b"}" * 5001
    answers = await _raw_exchange(tmp_path, [nested_list, nested_object, _ping(11)])
    assert [(a.get("id"), a.get("error", {}).get("code")) for a in answers] == [  # type: ignore[attr-defined]
        (9, -32700), (10, -32700), (11, None)]


# --- the transport: line framing, bounds and end of input, from a pipe or a file --------------------------

def _ping(message_id: int, padding: int = 0) -> bytes:
    """A JSON-RPC ping; `padding` spaces inside it (valid JSON) make the line as long as wanted."""
    return b'{"jsonrpc":"2.0","id":%d,"method":"ping"' % message_id + b" " * padding + b"}"


async def _serve(tmp_path: Path, stdin: int | IO[bytes]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server.cli", "serve", "--agent", "stdio-agent", "--config", str(_config(tmp_path)),
        cwd=str(ROOT), stdin=stdin, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)


async def test_a_message_near_the_bound_arrives_whole_through_the_pipe(tmp_path: Path) -> None:
    from server.stdio import MAX_LINE_BYTES

    near = _ping(1, MAX_LINE_BYTES - 100)  # several reads of the pipe for one line
    answers = await _raw_exchange(tmp_path, [near, _ping(2)])
    assert [(a.get("id"), "result" in a) for a in answers] == [(1, True), (2, True)]


async def test_a_line_written_in_pieces_is_answered_once_it_is_complete(tmp_path: Path) -> None:
    process = await _serve(tmp_path, asyncio.subprocess.PIPE)
    assert process.stdin is not None and process.stdout is not None
    line = _ping(5, 5000) + b"\n"
    for start in range(0, len(line), 1000):
        process.stdin.write(line[start:start + 1000])
        await process.stdin.drain()
        await asyncio.sleep(0.02)
    answer = json.loads(await asyncio.wait_for(process.stdout.readline(), timeout=20))
    process.stdin.close()
    assert answer == {"jsonrpc": "2.0", "id": 5, "result": {}}
    assert await asyncio.wait_for(process.wait(), timeout=20) == 0


async def test_end_of_input_ends_the_server_cleanly(tmp_path: Path) -> None:
    process = await _serve(tmp_path, asyncio.subprocess.PIPE)
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write(_ping(1) + b"\n")
    await process.stdin.drain()
    await asyncio.wait_for(process.stdout.readline(), timeout=20)
    process.stdin.close()
    assert await asyncio.wait_for(process.wait(), timeout=20) == 0
    assert await process.stdout.read() == b""


async def test_requests_from_a_regular_file_are_answered_and_the_server_exits_at_its_end(tmp_path: Path) -> None:
    """stdin may be a regular file (`serve < requests.jsonl`): every line answered, the same bounds, exit 0."""
    from server.stdio import MAX_LINE_BYTES

    requests = tmp_path / "requests.jsonl"
    requests.write_bytes(b"\n".join([_ping(1), _ping(2, MAX_LINE_BYTES + 10), b"not json", _ping(3)]) + b"\n")
    with requests.open("rb") as stdin:
        process = await _serve(tmp_path, stdin)
        out, _ = await asyncio.wait_for(process.communicate(), timeout=30)
    answers = [json.loads(line) for line in out.splitlines()]
    # Refusals are written by the transport, answers by the server: each line is answered, in either order.
    assert sorted((str(a.get("id")), "result" in a) for a in answers) == [
        ("1", True), ("2", False), ("3", True), ("None", False)]
    assert process.returncode == 0


async def test_requests_written_just_before_the_end_of_input_are_all_answered(tmp_path: Path) -> None:
    process = await _serve(tmp_path, asyncio.subprocess.PIPE)
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write(b"".join(_ping(i) + b"\n" for i in range(1, 21)))
    await process.stdin.drain()
    process.stdin.close()  # at once: the server has read some of them at most
    out = await asyncio.wait_for(process.stdout.read(), timeout=30)
    assert sorted(json.loads(line)["id"] for line in out.splitlines()) == list(range(1, 21))
    assert await asyncio.wait_for(process.wait(), timeout=20) == 0


# --- answers written to a pipe: at once when it can take them, by the writer thread when it is full ---------

async def test_answers_keep_their_order_when_the_pipe_fills_and_the_writer_thread_takes_over() -> None:
    import os
    import threading

    from server.stdio import StdoutLines

    read_end, write_end = os.pipe()
    lines = [b"%05d" % number + b"x" * 1000 + b"\n" for number in range(200)]  # ~200 KB: three times the pipe
    received = bytearray()
    with os.fdopen(write_end, "wb") as stdout:
        out = StdoutLines(stdout, asyncio.get_running_loop())
        writes = asyncio.gather(*(out.write(line) for line in lines))  # started in this order, none read yet
        await asyncio.sleep(0.2)
        assert not writes.done(), "more than a pipe's worth was written with nobody reading"

        def drain() -> None:
            while chunk := os.read(read_end, 65536):
                received.extend(chunk)

        reader = threading.Thread(target=drain)
        reader.start()
        await asyncio.wait_for(writes, timeout=20)
        out.close()
    reader.join(timeout=20)
    os.close(read_end)
    assert bytes(received) == b"".join(lines)


async def test_an_answer_to_a_closed_reader_fails_with_broken_pipe() -> None:
    import os

    import pytest

    from server.stdio import StdoutLines

    read_end, write_end = os.pipe()
    stdout = os.fdopen(write_end, "wb")
    out = StdoutLines(stdout, asyncio.get_running_loop())
    await out.write(b"first\n")
    assert os.read(read_end, 100) == b"first\n"
    os.close(read_end)
    with pytest.raises(BrokenPipeError):
        await asyncio.wait_for(out.write(b"second\n"), timeout=20)
    out.close()
    with suppress(BrokenPipeError):  # what the writer thread may still hold for nobody
        stdout.close()


def test_a_client_that_closes_its_end_of_stdout_ends_the_server(tmp_path: Path) -> None:
    import subprocess

    process = subprocess.Popen(
        [sys.executable, "-m", "server.cli", "serve", "--agent", "stdio-agent", "--config", str(_config(tmp_path))],
        cwd=str(ROOT), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert process.stdin is not None and process.stdout is not None
    try:
        process.stdin.write(_ping(1) + b"\n")
        process.stdin.flush()
        assert json.loads(process.stdout.readline())["id"] == 1
        process.stdout.close()  # nobody reads the answers any more
        process.stdin.write(_ping(2) + b"\n")  # its answer meets a closed pipe
        process.stdin.flush()
        process.wait(timeout=20)  # the server ends with stdin still open
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdin.close()
    assert process.returncode is not None


async def test_answers_to_a_regular_file_are_written_whole_and_in_order(tmp_path: Path) -> None:
    """stdout may be a file (`serve > answers.jsonl`): no pipe to write to at once, the writer thread writes."""
    from server.stdio import StdoutLines

    lines = [b'{"id":%d}\n' % number for number in range(50)]
    with (tmp_path / "answers.jsonl").open("wb") as stdout:
        out = StdoutLines(stdout, asyncio.get_running_loop())
        for line in lines:
            await out.write(line)
        out.close()
    assert (tmp_path / "answers.jsonl").read_bytes() == b"".join(lines)


# --- the transport against the SDK's own stdio: the same bytes for the same messages ------------------------

_BARE_SERVER = """
import sys
sys.path.insert(0, {root!r})
import anyio
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from pydantic import BaseModel

server = MCPServer("bare", instructions="the same server on two transports")

@server.tool(description="echo")
async def echo(text: str, times: int = 1) -> dict[str, str]:
    return {{"echo": text * times}}

@server.tool(description="reports progress twice")
async def slow(ctx: Context) -> str:
    await ctx.report_progress(1, 2, "half")
    await ctx.report_progress(2, 2, "done")
    return "finished"

class Answer(BaseModel):
    ok: bool

@server.tool(description="asks the client (2025 connections)")
async def ask(ctx: Context) -> str:
    answered = await ctx.elicit("proceed?", Answer)
    return f"{{answered.action}} {{getattr(answered, 'data', None)}}"

@server.tool(description="waits until it is cancelled")
async def forever() -> str:
    await anyio.sleep(3600)
    return "never"

if sys.argv[1] == "sdk":
    server.run("stdio")
else:
    from server.app import TradewardenServer
    anyio.run(TradewardenServer.run_stdio_async, server)
"""

_ENVELOPE = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
             "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "1"},
             "io.modelcontextprotocol/clientCapabilities": {}}


def _params(message: dict[str, object]) -> dict[str, Any]:
    params = message.get("params")
    return dict(params) if isinstance(params, dict) else {}


def _request(message_id: int, method: str, params: dict[str, object] | None = None) -> dict[str, object]:
    request: dict[str, object] = {"jsonrpc": "2.0", "id": message_id, "method": method}
    if params is not None:
        request["params"] = params
    return request


def _modern(message_id: int, method: str, params: dict[str, Any] | None = None) -> dict[str, object]:
    """A 2026-era request: the envelope in its `_meta`, next to whatever `_meta` it has (a progress token)."""
    params = dict(params or {})
    return _request(message_id, method, {**params, "_meta": {**_ENVELOPE, **params.get("_meta", {})}})


LEGACY_SESSION: list[dict[str, object]] = [
    _request(1, "initialize", {"protocolVersion": "2025-11-25", "capabilities": {},
                               "clientInfo": {"name": "t", "version": "1"}}),
    {"jsonrpc": "2.0", "method": "notifications/initialized"},
    _request(2, "tools/list"),
    _request(3, "tools/call", {"name": "echo", "arguments": {"text": "ab", "times": 2}}),
    _request(4, "tools/call", {"name": "slow", "arguments": {}, "_meta": {"progressToken": "p-4"}}),
    _request(5, "tools/call", {"name": "nope", "arguments": {}}),
    _request(6, "tools/call", {"name": "echo", "arguments": {"text": ["not", "text"]}}),
    _request(7, "tools/call", {"name": 12}),
    _request(8, "ping"),
    _request(9, "no/such/method"),
    {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 99}},
    _request("ten", "tools/call", {"name": "echo", "arguments": {"text": "\u00e9\u2014\U0001f600"}}),  # type: ignore[arg-type]
]

MODERN_SESSION: list[dict[str, object]] = [
    _modern(1, "server/discover"),
    _modern(2, "tools/list"),
    _modern(3, "tools/call", {"name": "echo", "arguments": {"text": "ab", "times": 2}}),
    _modern(4, "tools/call", {"name": "slow", "arguments": {}, "_meta": {"progressToken": 4}}),
    _modern(5, "tools/call", {"name": "nope", "arguments": {}}),
    _modern(6, "tools/call", {"name": "echo", "arguments": {"times": "x"}}),
    _request(7, "tools/call", {"name": "echo", "arguments": {"text": "no envelope"}}),
    _modern(8, "initialize", {"protocolVersion": "2025-11-25", "capabilities": {},
                              "clientInfo": {"name": "t", "version": "1"}}),
    _modern(9, "ping"),
]


async def _wire(tmp_path: Path, transport: str, session: list[dict[str, object]]) -> list[bytes]:
    """Every line the server wrote, the messages sent one at a time (each request's answer awaited)."""
    script = tmp_path / "bare_server.py"
    script.write_text(_BARE_SERVER.format(root=str(ROOT)))
    process = await asyncio.create_subprocess_exec(sys.executable, str(script), transport, cwd=str(ROOT),
                                                   stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                                                   stderr=asyncio.subprocess.DEVNULL)
    assert process.stdin is not None and process.stdout is not None
    written: list[bytes] = []
    try:
        for message in session:
            process.stdin.write(json.dumps(message).encode() + b"\n")
            await process.stdin.drain()
            if "id" not in message or "method" not in message:  # nothing answers a notification or an answer
                continue
            if _params(message).get("name") == "forever":
                continue  # answered never: the client cancels it next
            while True:
                line = await asyncio.wait_for(process.stdout.readline(), timeout=20)
                assert line, f"no answer to {message}"
                written.append(line)
                answer = json.loads(line)
                if answer.get("method") == "elicitation/create":  # the server asks the client: it answers
                    reply = {"jsonrpc": "2.0", "id": answer["id"], "result": {"action": "accept",
                                                                              "content": {"ok": True}}}
                    process.stdin.write(json.dumps(reply).encode() + b"\n")
                    await process.stdin.drain()
                elif answer.get("id") == message["id"]:
                    break
    finally:
        process.stdin.close()
        await asyncio.wait_for(process.wait(), timeout=20)
    return written


def _cancelled(message_id: int, request: dict[str, object]) -> list[dict[str, object]]:
    """A call that never ends, the client's cancellation of it, and a ping: the cancelled call gets no answer."""
    return [request, {"jsonrpc": "2.0", "method": "notifications/cancelled",
                      "params": {"requestId": message_id, "reason": "the client gave up"}},
            _request(message_id + 1, "ping") if "_meta" not in _params(request)
            else _modern(message_id + 1, "tools/call", {"name": "echo", "arguments": {"text": "after"}})]


LEGACY_SESSION.append(_request(30, "tools/call", {"name": "ask", "arguments": {}}))
LEGACY_SESSION += _cancelled(20, _request(20, "tools/call", {"name": "forever", "arguments": {}}))
MODERN_SESSION += _cancelled(20, _modern(20, "tools/call", {"name": "forever", "arguments": {}}))


async def test_a_2025_session_is_written_byte_for_byte_as_the_sdks_stdio_writes_it(tmp_path: Path) -> None:
    ours = await _wire(tmp_path, "ours", LEGACY_SESSION)
    assert ours == await _wire(tmp_path, "sdk", LEGACY_SESSION)
    assert sum(b'"notifications/progress"' in line for line in ours) == 2


async def test_a_2026_session_is_written_byte_for_byte_as_the_sdks_stdio_writes_it(tmp_path: Path) -> None:
    ours = await _wire(tmp_path, "ours", MODERN_SESSION)
    assert ours == await _wire(tmp_path, "sdk", MODERN_SESSION)
    assert sum(b'"notifications/progress"' in line for line in ours) == 2


# Frames before the first request: kept (up to the SDK's limit) and replayed ahead of it, the rest dropped.
_ROOTS_CHANGED: dict[str, object] = {"jsonrpc": "2.0", "method": "notifications/roots/list_changed"}
EARLY_SESSION: list[dict[str, object]] = [
    *[_ROOTS_CHANGED] * 10,
    {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1}},
    {"jsonrpc": "2.0", "id": 77, "result": {}},  # an answer to a request the server never sent
    *MODERN_SESSION,
]


async def test_frames_before_the_first_request_are_handled_as_the_sdks_stdio_handles_them(tmp_path: Path) -> None:
    ours = await _wire(tmp_path, "ours", EARLY_SESSION)
    assert ours == await _wire(tmp_path, "sdk", EARLY_SESSION)
    assert json.loads(ours[0])["id"] == 1


async def test_input_that_ends_before_any_request_ends_the_server_cleanly(tmp_path: Path) -> None:
    process = await _serve(tmp_path, asyncio.subprocess.PIPE)
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write(b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n')
    await process.stdin.drain()
    process.stdin.close()
    assert await asyncio.wait_for(process.wait(), timeout=20) == 0
    assert await process.stdout.read() == b""
