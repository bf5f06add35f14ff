"""The MCP server: tools registered on MCPServer, a lifespan that opens the runtime, identity per call."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from mcp.server import MCPServer
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from mcp.server.mcpserver.server import logger as sdk_logger
from mcp.server.mcpserver.tools import Tool
from mcp.shared.exceptions import MCPError
from mcp.types import CallToolRequestParams, CallToolResult, TextContent, ToolAnnotations
from mcp.types import Tool as MCPTool
from pydantic import ValidationError

from broker.base import Broker
from policies.failures import has_nul
from policies.violations import Code
from server.clock import utc_now
from server.config import Config
from server.notifications import (
    LegacySubscriptions,
    ListenedBus,
    guard_listen_subscriptions,
    proposal_notifications,
    serve_legacy_subscriptions,
)
from server.schemas import compact_output_schema, compact_schema
from server.sdk_path import serve_stream, text_result_on_wire, tool_context, use_lean_sdk_path
from tools import account, approval, market_data, orders, trading
from tools.common import call_app, compact_call_result, compact_json, compact_wire, drop_none
from tradewarden import __version__
from tradewarden.log import get_logger

if TYPE_CHECKING:  # the ledger (SQLAlchemy and the gate) loads with the runtime, not to answer the handshake
    from policies.gate import Gate
    from server.runtime import BrokerFactory, Runtime

log = get_logger("tradewarden.app")

# Only the hints that say something (MCP's defaults: not idempotent, open world); tools/list is sent every turn.
READ_ONLY = ToolAnnotations(read_only_hint=True, destructive_hint=False)
PROPOSE = ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=False)
DESTRUCTIVE = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=True)


@dataclass
class ServerState:
    """What tools reach through ctx.request_context.lifespan_context."""

    fixed_agent: str | None
    runtime: Runtime | None = None  # None until the runtime is open (see ready)
    extras: dict[str, Any] = field(default_factory=dict)
    failure: str | None = None  # why the runtime could not be opened
    _settled: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def gate(self) -> Gate:
        if self.runtime is None:
            raise RuntimeError("the runtime is not open: await ServerState.ready() first")
        return self.runtime.gate

    async def ready(self) -> None:
        """Wait until the runtime is open. A stdio server answers the handshake first and opens its runtime
        meanwhile; every request that needs it waits here. ToolError if it could not be opened."""
        await self._settled.wait()
        if self.runtime is None:
            raise ToolError(f"tradewarden could not open its ledger and broker: {self.failure}")

    def opened(self, runtime: Runtime | None, failure: str | None = None) -> None:
        self.runtime, self.failure = runtime, failure
        self._settled.set()

    def agent_id(self) -> str | None:
        """Over HTTP the bearer token decides who is calling; over stdio, the --agent the server started for.
        Nothing in a tool's arguments can change it."""
        token = get_access_token()
        if token is not None:
            return token.client_id
        return self.fixed_agent


def _one_line_reason(error: Exception) -> str:
    """The error's first line, with anything that looks like a key or token masked: it is shown to the agent.
    Masked before it is cut short (a cut through a key would leave a piece no masking recognises). Only the
    error's type if even the masking cannot be loaded (the failure may be a broken install)."""
    try:
        from policies.redaction import redact
    except Exception:
        return type(error).__name__
    text = str(redact(f"{type(error).__name__}: {error}"))
    return (text.splitlines() or [""])[0][:300]


def instructions(config: Config) -> str:
    mode = config.server.trading_mode.upper()
    live = " REAL MONEY." if config.is_live else " No real money."
    return (f"tradewarden — trading mode: {mode}{live} Broker: {config.server.broker}. "
            "To trade: propose_trade (checked against your limits) → execute_trade with the proposal_id. "
            "Denials come with stable codes and say which limit; adjust the order rather than retrying it. "
            "Some trades need a person's approval. You cannot change your limits or lift a halt.")


class TradewardenServer(MCPServer[ServerState]):
    """MCPServer that also audits calls the SDK rejects before they reach a tool (bad arguments), and
    serves a compact tools/list."""

    _listed: list[MCPTool] | None = None

    async def list_tools(self) -> list[MCPTool]:
        if self._listed is None:
            self._listed = [tool.model_copy(update={
                "input_schema": compact_schema(tool.input_schema),
                "output_schema": compact_output_schema(tool.output_schema) if tool.output_schema else None,
            }) for tool in await super().list_tools()]
        return self._listed

    async def read_resource(self, uri: Any, context: Context[ServerState, Any] | None = None) -> Any:
        if context is not None:
            await context.request_context.lifespan_context.ready()
        return await super().read_resource(uri, context)

    async def _handle_call_tool(self, ctx: Any, params: CallToolRequestParams) -> Any:
        """The SDK's tools/call handler (MCPServer._handle_call_tool, mcp 2.3.0: CALL_HANDLER_AS_WRITTEN in
        tests/server/test_sdk_path.py) with the tool's Context built directly and a text result handed to the
        runner as its wire mapping (server/sdk_path.py); its failures answered as the SDK answers them."""
        context = tool_context(ctx, self, params, self._subscriptions)
        try:
            # Extensions' interceptors (none here) see what the handler returns: they get the SDK's model.
            return await self._call(params.name, params.arguments or {}, context, on_wire=not self._extensions)
        except MCPError:
            raise
        except Exception as exc:
            if isinstance(exc, ToolError) and not isinstance(exc, UnexpectedToolError):
                if isinstance(exc.__cause__, ValidationError):
                    fields = sorted({".".join(str(part) for part in err["loc"]) for err in exc.__cause__.errors()})
                    sdk_logger.info("Tool %r rejected arguments: %r", params.name, fields)
                else:
                    sdk_logger.info("Tool %r failed: %r", params.name, str(exc))
            else:
                sdk_logger.exception("Tool %r raised an unexpected exception", params.name)
            return CallToolResult(content=[TextContent(type="text", text=str(exc))], is_error=True)

    async def call_tool(self, name: str, arguments: dict[str, Any], context: Context[ServerState, Any] | None = None
                        ) -> Any:
        return await self._call(name, arguments, context, on_wire=False)

    async def _call(self, name: str, arguments: dict[str, Any], context: Context[ServerState, Any] | None, *,
                    on_wire: bool) -> Any:
        """Every failure answers with a stable code: arguments are refused before the tool runs when they
        name no tool, carry NUL characters, booleans where numbers belong, or do not validate; the refusal
        is audited with a bounded copy of the arguments (policies/failures.py)."""
        state: ServerState | None = None
        if context is not None:
            state = _request_context(context).lifespan_context
            await state.ready()
        arguments = arguments if isinstance(arguments, dict) else {}
        tool = self._tool_manager.get_tool(name)
        code = (Code.INVALID_ORDER if name in ORDER_TOOLS else Code.INVALID_ARGUMENT).value
        if tool is None:
            known = ", ".join(sorted(t.name for t in self._tool_manager.list_tools()))
            await self._refuse(context, name, arguments, f"unknown tool; the tools are: {known}",
                               kind="tool.unknown")
            raise ToolError(f"{Code.INVALID_ARGUMENT.value}: unknown tool {name[:64]!r}; the tools are: {known}")
        problem = input_problem(tool.parameters, arguments)
        if problem is not None:
            await self._refuse(context, name, arguments, problem)
            raise ToolError(f"{code}: invalid arguments: {problem}")
        try:
            if context is None:
                return compact_result(await super().call_tool(name, arguments, context))
            # The tool finds the state here rather than through ctx.request_context again (tools.common.app_of).
            token = call_app.set(state)
            try:
                return answer(tool, await tool.run(arguments, context), on_wire=on_wire)
            finally:
                call_app.reset(token)
        except ToolError as error:
            from policies.secrets import scrub  # every tool error is scrubbed on its way to the agent

            cause = error.__cause__
            if isinstance(cause, ToolError):
                # Our own denials: the text starts with the stable code, without the SDK's prefix.
                raise ToolError(scrub(str(cause))) from None
            if isinstance(cause, ValidationError):
                problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg']}"
                                     for e in cause.errors()[:5])
                await self._refuse(context, name, arguments, problems)
                raise ToolError(f"{code}: invalid arguments: {problems}") from None
            if cause is not None:
                from policies.failures import ledger_failure

                reason = ledger_failure(cause)
                if reason is not None:
                    raise ToolError(f"{Code.LEDGER_UNAVAILABLE.value}: {reason}; nothing was changed, try again "
                                    "shortly") from None
            if scrub(str(error)) != str(error):  # a library's error quoting a secret: never shown as it is
                raise ToolError(scrub(str(error))) from None
            raise

    async def _refuse(self, context: Context[ServerState, Any] | None, name: str, arguments: dict[str, Any],
                      problems: str, *, kind: str = "tool.rejected_input") -> None:
        """Audit a call refused before it reached a tool (bounded: a huge argument is kept as an excerpt
        and its sha256). A ledger that cannot take the record does not hide the refusal's own reason."""
        if context is None:
            return
        from policies.failures import bounded

        state: ServerState = context.request_context.lifespan_context
        try:
            await state.gate.record(actor=f"agent:{state.agent_id()}", kind=kind, tool=str(bounded(name[:64])),
                                    agent_id=state.agent_id(),
                                    payload={"args": bounded(arguments), "problems": bounded(problems[:1000])})
        except Exception as error:
            log.warning("refusal_not_audited", tool=name[:64], error=type(error).__name__)

    async def run_stdio_async(self) -> None:
        """stdio with an answer to every line, and a bound on each (server/stdio.py)."""
        from server.stdio import bounded_stdio_server

        async with bounded_stdio_server() as (read_stream, write_stream):
            await serve_stream(self._lowlevel_server, read_stream, write_stream)  # Server.run, leaner (sdk_path)


ORDER_TOOLS = frozenset({"propose_trade", "execute_trade"})


def _request_context(context: Context[ServerState, Any]) -> Any:
    """context.request_context, read from the model's private attributes in one dictionary lookup: the property
    reads its pydantic private attribute through __getattr__ twice (~3 us). The property when it is not there."""
    private = getattr(context, "__pydantic_private__", None)
    found = private.get("_request_context") if isinstance(private, dict) else None
    return found if found is not None else context.request_context


def answer(tool: Tool, result: Any, *, on_wire: bool = False) -> Any:
    """What a tool returned as the wire carries it. A result of exactly the tool's output model (every tool's
    own result type) is dumped once and sent compact (tools.common.compact_call_result, what compact_result
    makes of the SDK's conversion); anything else is converted by the SDK, then compacted. on_wire: the
    former as the mapping the runner would dump that CallToolResult to (server/sdk_path.text_result_on_wire),
    not the model."""
    if tool.fn_metadata.output_model is not None and type(result) is tool.fn_metadata.output_model \
            and not tool.fn_metadata.wrap_output:
        if on_wire:
            return text_result_on_wire(*compact_wire(result))
        return compact_call_result(result)
    return compact_result(tool.fn_metadata.convert_result(result))


def compact_result(result: Any) -> Any:
    """A tool result without None values (the output schemas make them optional), and its text the same
    data as one line of JSON: clients that read only the text get everything, without indentation."""
    if not isinstance(result, CallToolResult) or result.structured_content is None:
        return result
    if len(result.content) == 1 and isinstance(result.content[0], TextContent) and "\n" not in \
            result.content[0].text[:200]:
        return result  # already compact (tools.common.compact_call_result)
    structured = drop_none(result.structured_content)
    text = compact_json(structured)
    return result.model_copy(update={"structured_content": structured,
                                      "content": [TextContent(type="text", text=text)]})


def input_problem(schema: dict[str, Any], arguments: dict[str, Any]) -> str | None:
    """What makes the arguments unusable before validation: NUL characters (no database stores them), a
    lone surrogate (no UTF-8 writer writes it), or a boolean given for a number (true is not 1.0)."""
    if has_nul(arguments):
        return "text must not contain NUL characters"
    properties = schema.get("properties", {}) if isinstance(schema, dict) else {}
    for key, value in arguments.items():
        if _has_lone_surrogate(key) or _has_lone_surrogate(value):
            return f"{key[:64]!r}: text must be valid Unicode (a lone surrogate was sent)"
        if isinstance(value, bool):  # the schema is looked at only for a boolean (rare): not on every call
            expected = _schema_types(properties.get(key)) - {"null"}
            if expected and "boolean" not in expected:
                return f"{key}: a {' or '.join(sorted(expected))} is required, not a boolean"
    return None


def _schema_types(schema: Any) -> set[str]:
    """The JSON types a property's schema allows (its `type`, or the types of its anyOf variants)."""
    if not isinstance(schema, dict):
        return set()
    found = schema.get("type")
    types = set(found) if isinstance(found, list) else {found} if isinstance(found, str) else set()
    for variant in schema.get("anyOf", []) or []:
        types |= _schema_types(variant)
    return types


def _has_lone_surrogate(value: Any, depth: int = 0) -> bool:
    if isinstance(value, str):
        if value.isascii():  # known from the string's own header: most text, no encoding to try
            return False
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if depth > 8:
        return False
    if isinstance(value, dict):
        return any(_has_lone_surrogate(k, depth + 1) or _has_lone_surrogate(v, depth + 1) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_lone_surrogate(item, depth + 1) for item in value)
    return False


def create_server(config: Config, *, agent_id: str | None = None, clock: Callable[[], datetime] = utc_now,
                  broker: Broker | BrokerFactory | None = None,
                  on_ready: Callable[[ServerState | None], None] | None = None,
                  open_in_background: bool = False,
                  **server_options: Any) -> TradewardenServer:
    """on_ready (HTTP wiring: health and metrics routes) is called with the state once the runtime is open,
    and with None when it closes. open_in_background (stdio): answer the handshake and tools/list while the
    runtime opens (its imports alone take ~0.3 s); requests that need it wait for it."""
    # Proposal state changes reach clients listening for `proposals://{id}` through this bus.
    if server_options.get("subscriptions") is None:
        server_options["subscriptions"] = ListenedBus()
    bus = server_options["subscriptions"]
    legacy_subscriptions = LegacySubscriptions()  # the same, for 2025 clients' resources/subscribe

    @asynccontextmanager
    async def running(state: ServerState) -> AsyncIterator[None]:
        from server.runtime import open_runtime

        async with (open_runtime(config, clock=clock, broker=broker) as runtime,
                    proposal_notifications(runtime.gate, bus or None, legacy_subscriptions)):
            state.opened(runtime)
            if on_ready is not None:
                on_ready(state)
            try:
                yield
            finally:
                if on_ready is not None:
                    on_ready(None)

    async def run_in_background(state: ServerState, stop: asyncio.Event) -> None:
        try:
            # The imports run in a worker thread so the event loop keeps answering meanwhile.
            await asyncio.to_thread(importlib.import_module, "server.runtime")
            async with running(state):
                await stop.wait()
        except Exception as error:
            gc.enable()  # no heap freeze will come (server/startup.py pause_collection_during_start_up)
            reason = _one_line_reason(error)
            log.error("runtime_failed_to_open", error=reason)
            state.opened(None, failure=reason)

    @asynccontextmanager
    async def lifespan(_: MCPServer[ServerState]) -> AsyncIterator[ServerState]:
        state = ServerState(fixed_agent=agent_id)
        if not open_in_background:
            async with running(state):
                yield state
            return
        stop = asyncio.Event()
        opening = asyncio.create_task(run_in_background(state, stop), name="tradewarden-runtime")
        try:
            yield state
        finally:
            stop.set()
            with contextlib.suppress(asyncio.CancelledError):
                await opening

    server = TradewardenServer(config.server.server_name, instructions=instructions(config), version=__version__,
                               lifespan=lifespan, **server_options)
    register_tools(server)
    register_resources(server)
    use_lean_sdk_path(server)  # two SDK steps done more cheaply, the same for clients (server/sdk_path.py)
    if bus:
        serve_legacy_subscriptions(server, legacy_subscriptions)
    guard_listen_subscriptions(server)  # proposals://{id} is listened to by its own agent only, on every era
    return server


def register_resources(server: MCPServer[Any]) -> None:
    server.resource(approval.PROPOSAL_URI, name="proposal", mime_type="application/json",
                    description="One of your proposals: order, status, approval, order outcome. "
                                "Updated notifications follow its state.")(approval.read_proposal)


def register_tools(server: MCPServer[Any], built: dict[str, dict[str, Any]] | None = None) -> None:
    """The seven tools, with their JSON schemas as built at build time (server/tool_schemas.py); built={}: every
    schema derived by the SDK at registration, as the SDK alone would."""
    from server import tool_schemas

    schemas = tool_schemas.load() if built is None else built
    for fn, description, hints in (
            (market_data.get_market_data, market_data.DESCRIPTION, READ_ONLY),
            (trading.propose_trade, trading.PROPOSE_DESCRIPTION, PROPOSE),
            (trading.execute_trade, trading.EXECUTE_DESCRIPTION, DESTRUCTIVE),
            (account.get_positions, account.POSITIONS_DESCRIPTION, READ_ONLY),
            (orders.get_orders, orders.ORDERS_DESCRIPTION, READ_ONLY),
            (orders.cancel_order, orders.CANCEL_DESCRIPTION, DESTRUCTIVE),
            (account.get_trading_status, account.STATUS_DESCRIPTION, READ_ONLY)):
        tool_schemas.add_tool(server, fn, description=description, annotations=hints, built=schemas)
