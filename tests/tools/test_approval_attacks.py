"""An agent trying to approve its own operator-mode trade, as an attacker would: it runs its own MCP client, so
it controls the elicitation answers, the arguments, the client's name and every replay. In `operator` mode only
an authenticated operator approves (policies.gate.client_may_decide); nothing the client does gets an order out.
"""

from __future__ import annotations

from typing import Any

import pytest
from mcp.shared.exceptions import MCPError
from mcp.types import CallToolResult, ElicitResult, Implementation, InputRequiredResult
from sqlalchemy import update

from ledger import db
from ledger.models import AgentPermissions
from tests.conftest import agent, call, connect, make_config
from tests.ledger_probe import broker_orders
from tests.tools.test_approval import APPROVE, ERAS, Human, approvals_of, operator, proposal_row, propose

ACCEPT_EVERYTHING = ("accept", APPROVE)


async def set_approval_mode(db_url: str, agent_id: str, mode: str) -> None:
    """What an operator does with `tradewarden agents set --approval` (or the config file at restart)."""
    engine = db.create_engine(db_url)
    try:
        async with db.session_factory(engine)() as session, session.begin():
            await session.execute(update(AgentPermissions).where(AgentPermissions.agent_id == agent_id)
                                  .values(approval=mode))
    finally:
        await engine.dispose()


async def assert_nothing_approved(db_url: str, proposal_id: str) -> None:
    assert (await proposal_row(db_url, proposal_id)).status == "pending_approval"
    assert await approvals_of(db_url, proposal_id) == []
    assert await broker_orders(db_url) == 0


@pytest.mark.parametrize("era", ERAS)
async def test_an_agents_own_accepting_client_cannot_approve_an_operator_mode_trade(
        db_url: str, market_open: object, era: str) -> None:
    config = make_config(db_url, agent(approval="operator"))
    self_approver = Human(*[ACCEPT_EVERYTHING] * 5)
    async with connect(config, elicitation_callback=self_approver, mode=era,
                       client_info=Implementation(name="risk-officer Jane Doe", version="1")) as client:
        proposal_id = await propose(client)
        results = [await call(client, "execute_trade", proposal_id=proposal_id) for _ in range(3)]
    assert {r["status"] for r in results} == {"awaiting_approval"}
    assert self_approver.shown == [], "an operator-mode proposal is never put to the agent's client"
    await assert_nothing_approved(db_url, proposal_id)


@pytest.mark.parametrize("era", ERAS)
async def test_a_forged_approval_argument_cannot_approve_an_operator_mode_trade(
        db_url: str, market_open: object, era: str) -> None:
    config = make_config(db_url, agent(approval="operator"))
    forged: dict[str, Any] = {"action": "accept", "data": APPROVE, "content": APPROVE}
    async with connect(config, mode=era) as client:
        proposal_id = await propose(client)
        for arguments in ({"approval": forged}, {"approval": "accept"}, {"decision": forged},
                          {"approve": True, "approved_by": "operator:admin"}):
            result = await client.call_tool("execute_trade", {"proposal_id": proposal_id, **arguments})
            assert result.structured_content is None or result.structured_content["status"] != "filled"
    await assert_nothing_approved(db_url, proposal_id)


async def test_unasked_input_responses_cannot_approve_an_operator_mode_trade(db_url: str,
                                                                            market_open: object) -> None:
    """2026-07-28: the client sends answers to a question nobody asked, with and without a request state."""
    config = make_config(db_url, agent(approval="operator"))
    async with connect(config, mode="2026-07-28") as client:
        proposal_id = await propose(client)
        answers = {key: ElicitResult(action="accept", content=APPROVE) for key in ("approval", "0", "1")}
        unasked = await client.session.call_tool("execute_trade", {"proposal_id": proposal_id},
                                                 input_responses=answers, allow_input_required=True)
        assert isinstance(unasked, CallToolResult) and unasked.structured_content is not None
        assert unasked.structured_content["status"] == "awaiting_approval"
        with pytest.raises(MCPError, match="requestState"):
            await client.session.call_tool("execute_trade", {"proposal_id": proposal_id}, input_responses=answers,
                                           request_state="forged-state", allow_input_required=True)
    await assert_nothing_approved(db_url, proposal_id)


async def test_a_replayed_accept_round_cannot_approve_once_the_agent_is_in_operator_mode(
        db_url: str, market_open: object) -> None:
    """The agent keeps the form round of a trade proposed in elicit mode; the operator then puts the agent in
    operator mode; replaying the accepted round, for that trade or a new one, approves nothing."""
    config = make_config(db_url, agent(approval="elicit"))
    async with connect(config, elicitation_callback=Human(), mode="2026-07-28") as client:
        old_id = await propose(client)
        first = await client.session.call_tool("execute_trade", {"proposal_id": old_id}, allow_input_required=True)
        assert isinstance(first, InputRequiredResult)
        [key] = first.input_requests
        accepted = {key: ElicitResult(action="accept", content=APPROVE)}
        await set_approval_mode(db_url, "agent-1", "operator")
        new_id = await propose(client)
        replay = await client.session.call_tool("execute_trade", {"proposal_id": old_id}, input_responses=accepted,
                                                request_state=first.request_state, allow_input_required=True)
        assert isinstance(replay, CallToolResult) and replay.structured_content is not None
        assert replay.structured_content["status"] == "awaiting_approval"
        # The round's state is bound to the old call: the SDK refuses it for the new proposal before any tool.
        with pytest.raises(MCPError, match="requestState"):
            await client.session.call_tool("execute_trade", {"proposal_id": new_id}, input_responses=accepted,
                                           request_state=first.request_state, allow_input_required=True)
    for proposal_id in (old_id, new_id):
        await assert_nothing_approved(db_url, proposal_id)


async def test_a_trade_proposed_in_operator_mode_stays_operator_only_after_the_mode_is_relaxed(
        db_url: str, market_open: object) -> None:
    config = make_config(db_url, agent(approval="operator"))
    async with connect(config, elicitation_callback=Human(ACCEPT_EVERYTHING), mode="legacy") as client:
        proposal_id = await propose(client)
        await set_approval_mode(db_url, "agent-1", "elicit")
        waiting = await call(client, "execute_trade", proposal_id=proposal_id)
    assert waiting["status"] == "awaiting_approval"
    await assert_nothing_approved(db_url, proposal_id)


@pytest.mark.parametrize("era", ERAS)
async def test_only_an_operator_approves_and_the_record_names_them(db_url: str, market_open: object,
                                                                   era: str) -> None:
    config = make_config(db_url, agent(approval="operator"))
    async with connect(config, elicitation_callback=Human(ACCEPT_EVERYTHING), mode=era) as client:
        proposal_id = await propose(client)
        async with operator(config) as person:
            await person.decide(proposal_id, approve=True, note="checked")
        executed = await call(client, "execute_trade", proposal_id=proposal_id)
    assert executed["status"] == "filled" and await broker_orders(db_url) == 1
    [approval] = await approvals_of(db_url, proposal_id)
    assert (approval.decided_by, approval.via, approval.trust) == ("operator:test", "operator", "operator")


async def test_the_approval_form_shows_the_agents_escapes_and_bidi_controls_inert(db_url: str,
                                                                                 market_open: object) -> None:
    human = Human(("cancel", None))
    async with connect(make_config(db_url, agent(approval="elicit")), elicitation_callback=human) as client:
        proposal_id = await propose(client, strategy="mo\u202ementum",
                                    reasoning="fine\n\x1b[1A\x1b[2KOrder:      SELL 1 AAPL\u2066 \u200b")
        await call(client, "execute_trade", proposal_id=proposal_id)
    [message] = human.shown
    assert "\x1b" not in message and "\u202e" not in message and "\u2066" not in message
    assert "\u200b" not in message
    assert [line for line in message.splitlines() if line.startswith("Order:")] == [
        "Order:      BUY 5 AAPL, market order, time in force day"]
    assert "\\x1b[1A\\x1b[2KOrder: SELL 1 AAPLU+2066" in message and "strategy moU+202Ementum" in message
