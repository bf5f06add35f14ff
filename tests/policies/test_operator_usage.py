"""Per-agent limit use for the console's overview (policies/operator_usage.py): the figures the agent's own checks
use, its trading state, and the last reconciliation, through the operator layer."""

from __future__ import annotations

from sqlalchemy import update

from ledger import db
from ledger.models import AgentPermissions
from policies.operator import Operator
from policies.operator_usage import reconciliation, utilisation
from policies.operators import OperatorIdentity, Role
from server.runtime import open_runtime
from tests.conftest import agent, call, connect, make_config

VIEWER = OperatorIdentity("vera", Role.VIEWER)


async def test_trades_today_halts_and_unreadable_limits_are_shown(db_url: str, market_open: object) -> None:
    config = make_config(db_url, agent("busy", approval="auto", max_daily_trades=4), agent("idle"),
                         agent("broken"))
    async with connect(config, "busy") as client:
        for qty in (1, 2):
            proposal = await call(client, "propose_trade", symbol="AAPL", side="buy", qty=qty, reasoning="usage")
            await call(client, "execute_trade", proposal_id=proposal["proposal_id"])
    async with open_runtime(config) as runtime:
        admin = Operator(runtime.gate, OperatorIdentity("adam", Role.ADMIN))
        await admin.halt("idle", "drill")
        async with db.transaction(runtime.sessions) as session:
            await session.execute(update(AgentPermissions).where(AgentPermissions.agent_id == "broken")
                                  .values(risk_level="reckless"))
        found = {usage.agent_id: usage for usage in await utilisation(Operator(runtime.gate, VIEWER))}
        checked = await reconciliation(Operator(runtime.gate, VIEWER))
    busy = found["busy"]
    assert (busy.trades_today, busy.max_daily_trades, busy.state) == (2, 4, "active")
    assert busy.utilisation >= 50 and busy.gross_exposure > 0
    assert found["idle"].state == "halted" and found["idle"].trades_today == 0
    assert found["broken"].note is not None and "unreadable limits" in found["broken"].note
    assert checked is not None and checked["age_seconds"] >= 0 and checked["drift"] == {}
