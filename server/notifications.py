"""Resource-updated notifications for `proposals://{id}` when a proposal changes state.

Changes made by this process (the gate calls its proposal listeners) are published at once on the SDK's
subscriptions bus, which serves 2026-07-28 clients' `subscriptions/listen` streams. Changes made by other
processes (`tradewarden approvals approve` on the command line, another replica) are found by a light poll
of the live proposals (pending or approved), run only while someone is listening.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import structlog
from mcp.server.subscriptions import InMemorySubscriptionBus, ResourceUpdated, ServerEvent, SubscriptionBus
from sqlalchemy import select

from ledger.models import TradeProposal
from policies.gate import Gate
from tools.approval import proposal_uri

log = structlog.get_logger("tradewarden.notifications")

POLL_SECONDS = 1.0
LIVE_PROPOSAL_STATES = ("pending_approval", "approved")


class ListenedBus(InMemorySubscriptionBus):
    """The SDK's in-process bus, counting its listeners (open listen streams) so polling runs only when
    somebody would hear the result."""

    def __init__(self) -> None:
        super().__init__()
        self.listeners = 0

    def subscribe(self, listener: Callable[[ServerEvent], None]) -> Callable[[], None]:
        unsubscribe = super().subscribe(listener)
        self.listeners += 1
        done = False

        def counted_unsubscribe() -> None:
            nonlocal done
            if not done:
                done = True
                self.listeners -= 1
            unsubscribe()

        return counted_unsubscribe


class ProposalEvents:
    def __init__(self, bus: SubscriptionBus):
        self.bus = bus

    async def changed(self, proposal_id: str) -> None:
        await self.bus.publish(ResourceUpdated(uri=proposal_uri(proposal_id)))

    @property
    def anyone_listening(self) -> bool:
        # A custom (e.g. cross-replica) bus cannot tell: assume someone listens.
        return self.bus.listeners > 0 if isinstance(self.bus, ListenedBus) else True

    async def watch(self, gate: Gate, interval: float = POLL_SECONDS) -> None:
        """Notify changes made elsewhere: a live proposal that left its state (approved, declined, expired,
        executed) or changed (updated_at) since the last look."""
        seen: dict[str, tuple[str, object]] | None = None
        while True:
            await asyncio.sleep(interval)
            if not self.anyone_listening:
                seen = None
                continue
            try:
                async with gate.sessions() as session:
                    rows = (await session.execute(
                        select(TradeProposal.id, TradeProposal.status, TradeProposal.updated_at)
                        .where(TradeProposal.status.in_(LIVE_PROPOSAL_STATES)))).all()
            except Exception as error:  # the database is briefly unavailable: try again next time
                log.warning("proposal_watch_failed", error=type(error).__name__)
                continue
            now_live = {row.id: (row.status, row.updated_at) for row in rows}
            if seen is not None:
                for proposal_id, before in seen.items():
                    if now_live.get(proposal_id) != before:
                        await self.changed(proposal_id)
            seen = now_live


@contextlib.asynccontextmanager
async def proposal_notifications(gate: Gate, bus: SubscriptionBus | None) -> AsyncIterator[None]:
    """Wire the gate's proposal changes to the bus for the life of a server."""
    if bus is None:
        yield
        return
    events = ProposalEvents(bus)
    gate.on_proposal_change(events.changed)
    watcher = asyncio.create_task(events.watch(gate), name="tradewarden-proposal-watch")
    try:
        yield
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
