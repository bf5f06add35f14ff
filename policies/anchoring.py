"""Anchoring the audit chain outside the database: signed checkpoints of its head.

The hash chain alone cannot stop someone who can write the database and recompute every hash. A checkpoint
says "record SEQ of the chain has hash HASH", at TIME, signed with an Ed25519 key that is not in the database
(the idea of Certificate Transparency's signed tree heads and C2SP's signed checkpoints). Once a checkpoint is
written somewhere the database writer cannot reach, no rewrite of the records up to SEQ goes unnoticed.

Checkpoint file: `checkpoint_dir/checkpoints.jsonl`, append-only, one JSON object per line, fsync'd:

    {"v": 1, "seq": 1234, "hash": "<64 hex>", "time": "2026-11-30T01:02:03.456789+00:00",
     "key": "<key id>", "sig": "<base64 Ed25519 signature>"}

The signature covers the note text `tradewarden-audit-checkpoint/v1\\n<seq>\\n<hash>\\n<time>\\n` (UTF-8);
the key id is the first 16 hex digits of sha256(raw 32-byte public key). Several servers on one database
(replicas) sign the same chain, so checkpoints of several writers interleave in the file (each line is one
write under an exclusive lock): every one of them must match the chain. Verification reads every `*.jsonl`
file in the folder, so checkpoints copied from another host can sit next to the local ones.

Keys: the private key is a PKCS#8 PEM file with mode 0600 (`tradewarden audit keygen`); the public key is
its raw 32 bytes in base64, on one line in `<key file>.pub`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ledger.db import read
from ledger.models import AuditEvent, AuditHead
from policies.audit import GENESIS_HASH, ChainVerifier, hashed_time
from tradewarden.log import get_logger

log = get_logger("tradewarden.anchoring")

CHECKPOINT_FILE = "checkpoints.jsonl"
NOTE_HEADER = "tradewarden-audit-checkpoint/v1"
MAX_LINE = 1024  # a checkpoint line is ~250 bytes; anything longer is not one
# The signer checks link by link at most this many records since its last checkpoint (one interval's worth is
# a few thousand at most); beyond it only that the checkpointed record is unchanged.
EXTEND_CHECK_MAX = 50_000


class AnchorError(Exception):
    """Anchoring cannot be used or found the database behind its checkpoints; one line, safe to print."""


# --- keys ------------------------------------------------------------------------------------------------

def public_key_text(key: Ed25519PublicKey) -> str:
    return base64.b64encode(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)).decode()


def key_id(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_key_file(signing_key_file: Path) -> Path:
    return signing_key_file.with_name(signing_key_file.name + ".pub")


def generate_key(path: Path) -> Ed25519PublicKey:
    """Write a new private key to `path` (mode 0600, never over an existing file) and its public key to
    `<path>.pub`. The private key goes nowhere else: not to the database, not to a log, not to stdout."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise AnchorError(f"{path} exists: refusing to overwrite a signing key (checkpoints signed with it "
                          "could no longer be checked)") from None
    except OSError as error:
        raise AnchorError(f"cannot create {path}: {error.strerror}") from None
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
        out.flush()
        os.fsync(out.fileno())
    public = private.public_key()
    public_key_file(path).write_text(public_key_text(public) + "\n")
    return public


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise AnchorError(f"audit signing key {path} not found: create it with `tradewarden audit keygen`"
                          ) from None
    except OSError as error:
        raise AnchorError(f"audit signing key {path} unreadable: {error.strerror}") from None
    if os.name == "posix" and path.stat().st_mode & 0o077:
        raise AnchorError(f"audit signing key {path} is readable by other users (mode "
                          f"{path.stat().st_mode & 0o777:o}): chmod 600 it")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):  # the message never quotes the key
        raise AnchorError(f"audit signing key {path} is not an Ed25519 PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise AnchorError(f"audit signing key {path} is not an Ed25519 key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """A public key file: one line of base64 (as keygen writes it) or a PEM public key."""
    try:
        text = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as error:
        raise AnchorError(f"public key {path} unreadable: {getattr(error, 'strerror', None) or error}") from None
    try:
        if text.startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(text.encode())
            if not isinstance(key, Ed25519PublicKey):
                raise ValueError("not Ed25519")
            return key
        return Ed25519PublicKey.from_public_bytes(base64.b64decode(text, validate=True))
    except (ValueError, binascii.Error):
        raise AnchorError(f"public key {path} is not an Ed25519 public key") from None


def verifying_key(signing_key_file: Path) -> Ed25519PublicKey:
    """The public key of a deployment: from its private key if this user may read it, else `<file>.pub`."""
    try:
        return load_signing_key(signing_key_file).public_key()
    except AnchorError:
        pub = public_key_file(signing_key_file)
        if pub.exists():
            return load_public_key(pub)
        raise


# --- checkpoints (pure) ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Checkpoint:
    seq: int
    hash: str
    time: str  # ISO-8601 UTC, as signed
    key: str
    sig: str

    def line(self) -> str:
        return json.dumps({"v": 1, "seq": self.seq, "hash": self.hash, "time": self.time, "key": self.key,
                           "sig": self.sig}, separators=(",", ":"))


def signed_note(seq: int, head_hash: str, time: str) -> bytes:
    return f"{NOTE_HEADER}\n{seq}\n{head_hash}\n{time}\n".encode()


def sign_checkpoint(key: Ed25519PrivateKey, seq: int, head_hash: str, time: datetime) -> Checkpoint:
    stamp = time.isoformat()
    signature = key.sign(signed_note(seq, head_hash, stamp))
    return Checkpoint(seq=seq, hash=head_hash, time=stamp, key=key_id(key.public_key()),
                      sig=base64.b64encode(signature).decode())


def parse_checkpoint(value: str | dict[str, Any]) -> Checkpoint:
    """A checkpoint from its line (or its parsed object); ValueError with a short reason if it is not one."""
    if isinstance(value, str):
        if len(value) > MAX_LINE:
            raise ValueError("line too long")
        value = json.loads(value)
    if not isinstance(value, dict) or value.get("v") != 1:
        raise ValueError("not a version-1 checkpoint")
    seq, head_hash, time, key, sig = (value.get(k) for k in ("seq", "hash", "time", "key", "sig"))
    if not (isinstance(seq, int) and seq >= 0 and isinstance(head_hash, str) and len(head_hash) == 64
            and all(isinstance(x, str) for x in (time, key, sig))):
        raise ValueError("missing or malformed fields")
    return Checkpoint(seq=seq, hash=head_hash, time=str(time), key=str(key), sig=str(sig))


def signature_valid(checkpoint: Checkpoint, key: Ed25519PublicKey) -> bool:
    try:
        key.verify(base64.b64decode(checkpoint.sig, validate=True),
                   signed_note(checkpoint.seq, checkpoint.hash, checkpoint.time))
    except (InvalidSignature, ValueError, binascii.Error):
        return False
    return True


@dataclass
class CheckpointSet:
    """The valid checkpoints of one key, by sequence, and what was wrong with the others."""

    by_seq: dict[int, Checkpoint] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    count: int = 0  # valid checkpoints read (duplicates of one head by several replicas included)
    MAX_PROBLEMS = 20

    @property
    def latest(self) -> Checkpoint | None:
        return self.by_seq[max(self.by_seq)] if self.by_seq else None

    def add(self, checkpoint: Checkpoint, key: Ed25519PublicKey, where: str) -> None:
        if not signature_valid(checkpoint, key):
            self._problem(f"{where}: signature invalid (forged or signed with another key)")
            return
        known = self.by_seq.get(checkpoint.seq)
        if known is not None and known.hash != checkpoint.hash:
            # Two signed heads for one sequence: the chain was forked (a rewrite while a server kept signing).
            self._problem(f"{where}: conflicting checkpoints for record {checkpoint.seq} ({known.time} and "
                          f"{checkpoint.time}): the chain was rewritten")
            return
        self.count += 1
        if known is None:
            self.by_seq[checkpoint.seq] = checkpoint

    def _problem(self, message: str) -> None:
        if len(self.problems) < self.MAX_PROBLEMS:
            self.problems.append(message)


def _checkpoint_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.jsonl")) if directory.is_dir() else []


def read_checkpoint_lines(directory: Path) -> Iterator[tuple[str, str]]:
    """(where, line) for every non-empty line of every checkpoint file in `directory`."""
    for path in _checkpoint_files(directory):
        with path.open(encoding="utf-8", errors="replace") as lines:
            for number, line in enumerate(lines, 1):
                if line.strip():
                    yield f"{path.name}:{number}", line.strip()


def load_checkpoints(lines: Iterator[tuple[str, str]], key: Ed25519PublicKey) -> CheckpointSet:
    checkpoints = CheckpointSet()
    for where, line in lines:
        try:
            checkpoint = parse_checkpoint(line)
        except (ValueError, json.JSONDecodeError) as error:
            checkpoints._problem(f"{where}: not a checkpoint ({error})")
            continue
        checkpoints.add(checkpoint, key, where)
    return checkpoints


# --- the checkpoint file -----------------------------------------------------------------------------------

def append_checkpoint(directory: Path, checkpoint: Checkpoint) -> None:
    """Append one line, durably: O_APPEND plus an exclusive lock (several servers may share the folder),
    then fsync. The folder is created 0700 if missing."""
    created = not directory.exists()
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(directory / CHECKPOINT_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, (checkpoint.line() + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    if created:
        with contextlib.suppress(OSError):
            dir_fd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)


# --- the server's side: sign the head, refuse a database behind it --------------------------------------------

async def read_head(sessions: async_sessionmaker[AsyncSession]) -> tuple[int, str]:
    async with read(sessions) as connection:
        row = (await connection.execute(select(AuditHead.seq, AuditHead.hash).where(AuditHead.id == 1))).first()
    return (row.seq, row.hash) if row is not None else (0, GENESIS_HASH)


async def check_not_behind(sessions: async_sessionmaker[AsyncSession], checkpoints: CheckpointSet) -> None:
    """Raise AnchorError if the database is behind the newest checkpoint signed with this key (a restored
    older copy, a truncation, a wipe) or no longer holds the record it signed (a rewrite)."""
    latest = checkpoints.latest
    if latest is None:
        return
    head_seq, _ = await read_head(sessions)
    if head_seq < latest.seq:
        raise AnchorError(f"AUDIT_BEHIND_CHECKPOINT: the database's audit chain ends at record {head_seq} but a "
                          f"checkpoint signed at {latest.time} covers record {latest.seq}: records were removed "
                          "or an older copy was restored; refusing to start (run `tradewarden audit verify`)")
    async with read(sessions) as connection:
        stored = (await connection.execute(select(AuditEvent.hash).where(AuditEvent.seq == latest.seq))
                  ).scalar_one_or_none()
    if stored != latest.hash:
        raise AnchorError(f"AUDIT_CHECKPOINT_MISMATCH: record {latest.seq} no longer matches the checkpoint signed "
                          f"at {latest.time}: the chain was rewritten or an older copy was restored; refusing to "
                          "start (run `tradewarden audit verify`)")


class CheckpointSigner:
    """Signs the chain head every `interval` seconds when it moved, into the checkpoint folder.

    Like a Certificate Transparency log's consistency check, it signs a new head only if the chain still holds
    the head it signed last and the records since then extend it link by link: a chain rewritten under a
    running server is never signed (an error is logged instead), so its checkpoints stay evidence of the
    original. `last` starts at the newest checkpoint of the folder (checked at start by check_not_behind)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], key: Ed25519PrivateKey, directory: Path,
                 interval: float, clock: Callable[[], datetime], last: Checkpoint | None = None):
        self.sessions = sessions
        self.key = key
        self.directory = directory
        self.interval = interval
        self.clock = clock
        self.last: tuple[int, str] | None = (last.seq, last.hash) if last is not None else None
        self.refused: str | None = None  # why the current head was not signed (None while all is well)

    async def run(self) -> None:
        failed: str | None = None
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.step()
                failed = None
            except Exception as error:  # a full disk must not stop the server; the gap is visible in verify
                if f"{type(error).__name__}: {error}" != failed:  # once per distinct failure, not every second
                    log.warning("audit_checkpoint_failed", error=type(error).__name__, detail=str(error)[:200])
                failed = f"{type(error).__name__}: {error}"

    async def step(self) -> Checkpoint | None:
        """Sign and append the current head if it moved since the last checkpoint and extends it; the
        checkpoint or None."""
        head = await read_head(self.sessions)
        if head[0] == 0 or head == self.last:
            return None
        if self.last is not None:
            problem = await self._extends(self.last, head)
            if problem is not None:
                if problem != self.refused:
                    log.error("audit_chain_not_signed", problem=problem,
                              detail="the chain no longer extends the last checkpoint: run `tradewarden audit verify`")
                self.refused = problem
                return None
        checkpoint = sign_checkpoint(self.key, head[0], head[1], self.clock())
        await asyncio.to_thread(append_checkpoint, self.directory, checkpoint)
        self.last, self.refused = head, None
        return checkpoint

    async def _extends(self, last: tuple[int, str], head: tuple[int, str]) -> str | None:
        """Why the chain up to `head` does not extend the checkpointed `last` (None if it does)."""
        if head[0] < last[0]:
            return f"the head is record {head[0]}, behind the last checkpoint's record {last[0]}"
        async with read(self.sessions) as connection:
            signed = (await connection.execute(select(AuditEvent.hash).where(AuditEvent.seq == last[0]))
                      ).scalar_one_or_none()
            if signed != last[1]:
                return f"record {last[0]} no longer has the hash its checkpoint signed"
            if head[0] - last[0] > EXTEND_CHECK_MAX:
                # e.g. a replica back after a long stop: the links are left to `audit verify` rather than read
                # into memory on the event loop here
                return None
            rows = (await connection.execute(
                select(AuditEvent.seq, AuditEvent.event_id, AuditEvent.ts, AuditEvent.actor, AuditEvent.agent_id,
                       AuditEvent.kind, AuditEvent.tool, AuditEvent.payload, AuditEvent.prev_hash, AuditEvent.hash)
                .where(AuditEvent.seq > last[0], AuditEvent.seq <= head[0]).order_by(AuditEvent.seq))).all()
        verifier = ChainVerifier()
        verifier.prev_hash, verifier.expected_seq = last[1], last[0] + 1
        for seq, event_id, ts, actor, agent_id, kind, tool, payload, prev_hash, digest in rows:
            verifier.feed(seq, event_id, hashed_time(ts), actor, agent_id, kind, tool, payload, prev_hash, digest)
        report = verifier.finish(*head)
        if not report.ok:
            first = report.problems[0]
            return f"record {first.seq}: {first.message}"
        return None
