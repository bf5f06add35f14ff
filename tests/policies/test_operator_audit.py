"""The audit log as operators read it (policies/operator_audit.py): search newest first with filters and paging,
the head, and verification with its verdict remembered for the overview."""

from __future__ import annotations

import json

from policies import operator_audit
from policies.operator import Operator
from policies.operator_audit import AuditQuery, search
from policies.operators import OperatorIdentity, Role
from server.runtime import open_runtime
from tests.conftest import agent, make_config

VIEWER = OperatorIdentity("vera", Role.VIEWER)


async def test_search_filters_pages_and_verifies(db_url: str) -> None:
    config = make_config(db_url, agent("one"), agent("two"))
    async with open_runtime(config, reconcile=False) as runtime:
        admin = Operator(runtime.gate, OperatorIdentity("adam", Role.ADMIN))
        await admin.halt("one", "first <b>reason</b>")
        await admin.resume("one")
        await admin.halt("two", "second reason")
        viewer = Operator(runtime.gate, VIEWER)
        newest = await search(viewer, AuditQuery(limit=3))
        assert [r.seq for r in newest] == sorted((r.seq for r in newest), reverse=True)
        assert [r.agent_id for r in await search(viewer, AuditQuery(kind="trading_state.", agent_id="one"))] == [
            "one", "one"]
        [found] = await search(viewer, AuditQuery(text="SECOND REASON"))
        assert found.agent_id == "two" and found.payload["reason"] == "second reason"
        assert {r.actor for r in await search(viewer, AuditQuery(actor="operator:adam"))} == {"operator:adam"}
        older = await search(viewer, AuditQuery(before=newest[-1].seq, limit=500))
        assert all(r.seq < newest[-1].seq for r in older)
        assert len(await search(viewer, AuditQuery(limit=10**6))) <= operator_audit.MAX_RECORDS
        seq, head_hash = await operator_audit.head(viewer)
        assert seq == newest[0].seq and head_hash == newest[0].hash
        verdict = await operator_audit.verify(viewer)
        assert verdict.ok and verdict.report.records == seq and "anchoring is off" in verdict.anchoring
        last = operator_audit.last_verify()
        assert last is not None and (last.ok, last.records, last.by) == (True, seq, "operator:vera")
        assert json.dumps(found.payload)  # payloads come back as JSON values, not text
