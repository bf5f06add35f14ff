"""`tradewarden events tail` and `tradewarden webhooks list|test`: the event stream and its webhooks from the
command line. Events are read from the database a running server uses (the audit log is their source)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import click

from policies.text import inert
from server.cli_common import config_option, fail, json_option, load, operate
from server.config import Config, ConfigError, WebhookConfig, webhook_secrets

T = TypeVar("T")

FOLLOW_POLL_SECONDS = 0.25
TAIL_DEFAULT = 20


def _with(ctx: click.Context, action: Callable[[Any], Awaitable[T]], config: Config | None = None) -> T:
    """Run `action(operator)` on the deployment's database as the command line's operator (who must be allowed
    to read); these commands never need the broker."""
    from policies.operators import Action

    async def as_operator(operator: Any) -> T:
        operator.require(Action.READ)
        return await action(operator)

    return operate(ctx, as_operator, config=config)


def human_line(envelope: dict[str, Any]) -> str:
    from policies.events import Event
    from policies.webhooks import summary

    event = Event(event_id=envelope["event_id"], message_type=envelope["message_type"],
                  agent_id=envelope["agent_id"], timestamp=datetime.now(UTC), payload=envelope["payload"])
    return inert(f"#{envelope['event_id']:<6} {envelope['timestamp']} {envelope['message_type']:24} "
                 f"{summary(event)}")


@click.group("events")
def events_group() -> None:
    """The event stream (a view of the audit log): trades, orders, positions, risk alerts, approvals.

    Example: tradewarden events tail --follow --type agent.risk.alert
    """


@events_group.command("tail")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new events as they are committed.")
@click.option("--type", "types", multiple=True, help="Only this event type (repeatable; a,b also works).")
@click.option("--agent", "agent_id", default=None, help="Only this agent's events.")
@click.option("--since", type=click.IntRange(min=0), default=None,
              help="Every event after this event id (default: the last 20).")
@click.option("--json", "as_json", is_flag=True, help="One JSON envelope per line.")
@config_option
@click.pass_context
def events_tail(ctx: click.Context, follow: bool, types: tuple[str, ...], agent_id: str | None, since: int | None,
                as_json: bool) -> None:
    """Print events (then, with --follow, new ones within a second of their commit; Ctrl-C stops).

    Example: tradewarden events tail --follow --agent momentum-1
    Example: tradewarden events tail --since 1200 --json
    """
    from policies.events import EventFilter

    only = EventFilter.of([t for value in types for t in value.split(",")], agent_id)
    if only.unknown_types():
        fail(f"INVALID_ARGUMENT: unknown event type {only.unknown_types()[0]!r}", 2)

    def show(envelope: dict[str, Any]) -> None:
        click.echo(json.dumps(envelope, ensure_ascii=True) if as_json else human_line(envelope))

    async def action(operator: Any) -> None:
        from ledger.db import read
        from policies.event_log import events_after, head_seq

        async with read(operator.gate.sessions) as connection:
            head = await head_seq(connection)
            if since is None:  # the last few: read back from the head until there are enough
                window, found = 200, list[Any]()
                while True:
                    start = max(0, head - window)
                    found, _ = await _all_after(events_after, connection, start, head, only)
                    if len(found) >= TAIL_DEFAULT or start == 0:
                        break
                    window *= 4
                cursor = head
                for event in found[-TAIL_DEFAULT:]:
                    show(event.envelope())
            else:
                cursor = since
        while True:
            async with read(operator.gate.sessions) as connection:
                while True:
                    events, cursor = await events_after(connection, cursor, only=only)
                    for event in events:
                        show(event.envelope())
                    if not events:
                        break
            if not follow:
                return
            await asyncio.sleep(FOLLOW_POLL_SECONDS)

    try:
        _with(ctx, action)
    except KeyboardInterrupt:
        return


async def _all_after(events_after: Any, connection: Any, start: int, head: int, only: Any) -> tuple[list[Any], int]:
    found: list[Any] = []
    cursor = start
    while cursor < head:
        events, moved = await events_after(connection, cursor, only=only)
        found.extend(e for e in events if e.event_id <= head)
        if moved == cursor:
            break
        cursor = moved
    return found, cursor


@click.group("webhooks")
def webhooks_group() -> None:
    """The [[webhooks]] of the configuration: where delivery stands, and a test message.

    Example: tradewarden webhooks list
    """


@webhooks_group.command("list")
@json_option
@config_option
@click.pass_context
def webhooks_list(ctx: click.Context, as_json: bool) -> None:
    """Each configured endpoint: what it receives, how far delivery has come, failures.

    Example: tradewarden webhooks list --json
    """
    config = load(ctx)

    async def action(operator: Any) -> dict[str, Any]:
        from server.webhooks import delivery_states

        return await delivery_states(operator.gate.sessions)

    states = _with(ctx, action, config) if config.webhooks else {}
    rows = []
    for hook in config.webhooks:
        state = states.get(hook.key)
        rows.append({"name": hook.name, "url": _origin(hook.url), "events": hook.events, "format": hook.format,
                     "secret_env": hook.secret_env,
                     "delivered_up_to": state.cursor if state else None,
                     "delivered": state.delivered if state else 0, "failures": state.failures if state else 0,
                     "failing_attempts": state.attempts if state else 0,
                     "dropped": state.dropped if state else 0,
                     "next_attempt_at": state.next_attempt_at.isoformat() if state and state.next_attempt_at
                     else None, "last_error": state.last_error if state else None})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no [[webhooks]] in the configuration")
        return
    hook_events = [hook.events for hook in config.webhooks]
    for i, row in enumerate(rows):
        status = (f"FAILING ({row['failing_attempts']} attempts, last: {row['last_error']}, next "
                  f"{row['next_attempt_at']})" if row["failing_attempts"] else "ok")
        click.echo(f"{row['name'] or '-':16} {row['url']}  [{row['format']}] events={','.join(hook_events[i])}  "
                   f"delivered={row['delivered']} up to #{row['delivered_up_to']} failures={row['failures']} "
                   f"dropped={row['dropped']}  {status}")


def _origin(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}/…"


def _find(hooks: list[WebhookConfig], name_or_url: str) -> WebhookConfig:
    for hook in hooks:
        if name_or_url in (hook.name, hook.url):
            return hook
    fail(f"no webhook named {name_or_url!r} in the configuration (see `tradewarden webhooks list`)")


@webhooks_group.command("test")
@click.argument("name_or_url")
@config_option
@click.pass_context
def webhooks_test(ctx: click.Context, name_or_url: str) -> None:
    """Send one signed test event (message_type "webhook.test", event_id 0) to the endpoint now.

    Example: tradewarden webhooks test pager
    """
    from policies.events import Event
    from policies.operators import CLI_OPERATOR
    from server.webhooks import Endpoint, send_test

    config = load(ctx)
    hook = _find(config.webhooks, name_or_url)
    try:
        secret = webhook_secrets(config.model_copy(update={"webhooks": [hook]}))[hook.key]
    except ConfigError as error:
        fail(str(error), 2)
    event = Event(event_id=0, message_type="webhook.test", agent_id=None, timestamp=datetime.now(UTC),
                  payload={"message": "a test from tradewarden webhooks test", "by": CLI_OPERATOR.actor})

    async def action(operator: Any) -> Any:
        attempt = await send_test(Endpoint(config=hook, secret=secret), event)
        await operator.webhook_tested(hook.shown, attempt.ok, attempt.status, attempt.error)
        return attempt

    attempt = _with(ctx, action, config)
    if not attempt.ok:
        fail(f"webhook {hook.shown}: test not delivered: {attempt.error}")
    click.echo(f"webhook {hook.shown}: test delivered (HTTP {attempt.status})")
