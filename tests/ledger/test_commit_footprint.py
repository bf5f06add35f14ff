"""What one proposal's COMMIT writes on a SQLite file: WAL frames (pages), a regression guard.

With synchronous=FULL every COMMIT syncs the WAL, and each page it writes costs about 5 us of CPU and its share
of the sync. Measured 2026-11-30: 13.1 pages a proposal here, 16.9 with an auto-approving agent (bench/): its
audit records, their event_id and agent_id indexes, the proposal and its three indexes, (the approval and its
index,) audit_head, a page or so of B-tree interiors and the file's header when it grows. A new index on one of
those tables adds a page to every proposal: make it a conscious choice, then move the bound.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from ledger import checkpoint
from tests.conftest import call, connect, make_config

PAGES_PER_PROPOSAL_MAX = 15


def _wal_frames(path: str) -> tuple[int, int]:
    """(valid frames, commit frames) of the WAL's current generation."""
    data = Path(f"{path}-wal").read_bytes()
    page_size = struct.unpack(">I", data[8:12])[0]
    salts = data[16:24]
    frames = commits = 0
    offset = 32
    while offset + 24 + page_size <= len(data) and data[offset + 8:offset + 16] == salts:
        frames += 1
        commits += struct.unpack(">I", data[offset + 4:offset + 8])[0] != 0  # a commit frame names the db size
        offset += 24 + page_size
    return frames, commits


async def test_a_proposals_commit_writes_at_most_15_pages(
        db_url: str, market_open: object, monkeypatch: pytest.MonkeyPatch) -> None:
    async def no_round(self: checkpoint.Checkpointer) -> None:
        return None  # no checkpoint: the WAL keeps every frame the proposals write

    monkeypatch.setattr(checkpoint.Checkpointer, "round", no_round)
    path = db_url.removeprefix("sqlite+aiosqlite:///")
    async with connect(make_config(db_url)) as client:
        for _ in range(5):  # tables and indexes past their first pages
            await call(client, "propose_trade", symbol="AAPL", side="buy", qty=1, reasoning="warm-up")
        frames, commits = _wal_frames(path)
        for _ in range(40):
            await call(client, "propose_trade", symbol="AAPL", side="buy", qty=1, reasoning="measured")
        frames_after, commits_after = _wal_frames(path)
    assert commits_after - commits == 40  # one COMMIT a proposal (group commit, one agent)
    assert (frames_after - frames) / 40 <= PAGES_PER_PROPOSAL_MAX
