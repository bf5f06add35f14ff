"""Signed checkpoints of the audit chain's head: format, signatures, the append-only file, the signer."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ledger import db
from policies import anchoring, audit
from policies.audit import ChainVerifier

T0 = datetime(2026, 11, 30, 1, 0, tzinfo=UTC)


@pytest.fixture
async def sessions(db_url: str) -> async_sessionmaker[AsyncSession]:
    engine = db.create_engine(db_url)
    await db.upgrade(engine)
    return db.session_factory(engine)


async def append(sessions: async_sessionmaker[AsyncSession], count: int) -> None:
    async with db.transaction(sessions) as session:
        for i in range(count):
            await audit.append(session, ts=T0, actor="system", kind="test", payload={"i": i})


def test_a_checkpoint_verifies_with_its_key_only() -> None:
    key = Ed25519PrivateKey.generate()
    checkpoint = anchoring.sign_checkpoint(key, 7, "a" * 64, T0)
    assert anchoring.signature_valid(checkpoint, key.public_key())
    assert not anchoring.signature_valid(checkpoint, Ed25519PrivateKey.generate().public_key())


def test_changing_any_signed_field_breaks_the_signature() -> None:
    key = Ed25519PrivateKey.generate()
    checkpoint = anchoring.sign_checkpoint(key, 7, "a" * 64, T0)
    for changed in ({"seq": 8}, {"hash": "b" * 64}, {"time": T0.replace(hour=2).isoformat()}):
        forged = anchoring.parse_checkpoint({**json.loads(checkpoint.line()), **changed})
        assert not anchoring.signature_valid(forged, key.public_key())


def test_a_line_round_trips() -> None:
    checkpoint = anchoring.sign_checkpoint(Ed25519PrivateKey.generate(), 3, "c" * 64, T0)
    assert anchoring.parse_checkpoint(checkpoint.line()) == checkpoint


@pytest.mark.parametrize("line", ['{"v":2}', "[1]", '{"v":1,"seq":-1,"hash":"x","time":"t","key":"k","sig":"s"}',
                                  "x" * 2000])
def test_malformed_lines_are_refused(line: str) -> None:
    with pytest.raises(ValueError):
        anchoring.parse_checkpoint(line)


def test_two_different_heads_signed_for_one_sequence_are_a_fork() -> None:
    key = Ed25519PrivateKey.generate()
    lines = iter([("f:1", anchoring.sign_checkpoint(key, 5, "a" * 64, T0).line()),
                  ("f:2", anchoring.sign_checkpoint(key, 5, "a" * 64, T0).line()),  # a replica, same head
                  ("f:3", anchoring.sign_checkpoint(key, 5, "b" * 64, T0).line())])
    checkpoints = anchoring.load_checkpoints(lines, key.public_key())
    assert checkpoints.count == 2
    assert len(checkpoints.problems) == 1 and "conflicting checkpoints for record 5" in checkpoints.problems[0]


def test_appends_are_one_line_each_and_the_folder_is_private(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    folder = tmp_path / "checkpoints"
    for seq in (1, 2, 3):
        anchoring.append_checkpoint(folder, anchoring.sign_checkpoint(key, seq, "d" * 64, T0))
    lines = (folder / anchoring.CHECKPOINT_FILE).read_text().splitlines()
    assert [json.loads(line)["seq"] for line in lines] == [1, 2, 3]
    assert folder.stat().st_mode & 0o777 == 0o700
    assert (folder / anchoring.CHECKPOINT_FILE).stat().st_mode & 0o777 == 0o600


def test_a_private_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "audit.key"
    anchoring.generate_key(path)
    path.chmod(0o644)
    with pytest.raises(anchoring.AnchorError, match="chmod 600"):
        anchoring.load_signing_key(path)


def test_the_public_key_file_matches_the_private_key(tmp_path: Path) -> None:
    path = tmp_path / "audit.key"
    public = anchoring.generate_key(path)
    loaded = anchoring.load_public_key(anchoring.public_key_file(path))
    assert anchoring.key_id(loaded) == anchoring.key_id(public) == anchoring.key_id(
        anchoring.load_signing_key(path).public_key())


async def test_the_signer_signs_only_when_the_head_moved(sessions: async_sessionmaker[AsyncSession],
                                                         tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    signer = anchoring.CheckpointSigner(sessions, key, tmp_path / "cp", 1.0, lambda: T0)
    assert await signer.step() is None  # an empty chain: nothing to sign
    await append(sessions, 3)
    first = await signer.step()
    assert first is not None and first.seq == 3
    assert await signer.step() is None
    await append(sessions, 1)
    second = await signer.step()
    assert second is not None and second.seq == 4
    head = await anchoring.read_head(sessions)
    assert second.hash == head[1]


async def test_a_database_behind_its_newest_checkpoint_is_refused(sessions: async_sessionmaker[AsyncSession]
                                                                  ) -> None:
    key = Ed25519PrivateKey.generate()
    await append(sessions, 2)
    lines = iter([("f:1", anchoring.sign_checkpoint(key, 5, "e" * 64, T0).line())])
    with pytest.raises(anchoring.AnchorError, match="AUDIT_BEHIND_CHECKPOINT"):
        await anchoring.check_not_behind(sessions, anchoring.load_checkpoints(lines, key.public_key()))


async def test_a_rewritten_record_under_the_newest_checkpoint_is_refused(
        sessions: async_sessionmaker[AsyncSession]) -> None:
    key = Ed25519PrivateKey.generate()
    await append(sessions, 3)
    lines = iter([("f:1", anchoring.sign_checkpoint(key, 2, "f" * 64, T0).line())])
    with pytest.raises(anchoring.AnchorError, match="AUDIT_CHECKPOINT_MISMATCH"):
        await anchoring.check_not_behind(sessions, anchoring.load_checkpoints(lines, key.public_key()))


async def test_verify_streams_in_batches_and_reports_progress(sessions: async_sessionmaker[AsyncSession]) -> None:
    await append(sessions, 25)
    seen: list[int] = []
    async with sessions() as session:
        report = await audit.verify(session, progress=seen.append, batch=10)
    assert report.ok and report.records == 25
    assert seen == [10, 20]


def test_a_checkpoint_beyond_the_chain_end_is_a_truncation() -> None:
    key = Ed25519PrivateKey.generate()
    checkpoint = anchoring.sign_checkpoint(key, 9, "a" * 64, T0)
    report = ChainVerifier({9: checkpoint}).finish(0, audit.GENESIS_HASH)
    assert not report.ok and "covers record 9" in report.problems[0].message


async def _rewrite_from(sessions: async_sessionmaker[AsyncSession], seq: int) -> None:
    """An attacker edits record `seq` and recomputes every hash after it, and the head."""
    from sqlalchemy import text

    async with db.transaction(sessions) as session:
        rows = (await session.execute(text("SELECT * FROM audit_events ORDER BY seq"))).mappings().all()
        prev = audit.GENESIS_HASH
        for row in rows:
            payload = '{"i":1000}' if row["seq"] == seq else row["payload"]
            ts = datetime.fromisoformat(str(row["ts"])).replace(tzinfo=UTC)
            digest = audit.record_hash(prev, seq=row["seq"], event_id=row["event_id"], ts=ts, actor=row["actor"],
                                       agent_id=row["agent_id"], kind=row["kind"], tool=row["tool"], payload=payload)
            await session.execute(text("UPDATE audit_events SET payload = :p, prev_hash = :prev, hash = :h "
                                       "WHERE seq = :s"), {"p": payload, "prev": prev, "h": digest, "s": row["seq"]})
            prev = digest
        await session.execute(text("UPDATE audit_head SET hash = :h WHERE id = 1"), {"h": prev})


async def test_the_signer_never_signs_a_chain_rewritten_under_it(sessions: async_sessionmaker[AsyncSession],
                                                                tmp_path: Path) -> None:
    signer = anchoring.CheckpointSigner(sessions, Ed25519PrivateKey.generate(), tmp_path / "cp", 1.0, lambda: T0)
    await append(sessions, 3)
    assert await signer.step() is not None
    await _rewrite_from(sessions, 2)
    await append(sessions, 2)
    assert await signer.step() is None
    assert signer.refused is not None and "record 3" in signer.refused
    assert len((tmp_path / "cp" / anchoring.CHECKPOINT_FILE).read_text().splitlines()) == 1


async def test_the_signer_picks_up_from_the_newest_checkpoint_at_start(sessions: async_sessionmaker[AsyncSession],
                                                                       tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    await append(sessions, 2)
    first = await anchoring.CheckpointSigner(sessions, key, tmp_path / "cp", 1.0, lambda: T0).step()
    await _rewrite_from(sessions, 1)  # while no server ran
    await append(sessions, 1)
    restarted = anchoring.CheckpointSigner(sessions, key, tmp_path / "cp", 1.0, lambda: T0, last=first)
    assert await restarted.step() is None and restarted.refused is not None
