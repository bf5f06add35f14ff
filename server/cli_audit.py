"""`tradewarden audit keygen|verify|export`: the audit chain, checked against its signed checkpoints.

verify streams the records (flat memory) and reports progress on stderr on long runs; every problem is one
line on stdout (at most MAX_PROBLEMS of each kind), the verdict one line on stderr, exit 1 if anything is wrong.
`verify --export FILE --public-key FILE` checks an export on another machine, without the database.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import click

from policies import anchoring
from policies.audit import MAX_PROBLEMS, VerifyReport
from server.config import Config


def fail(message: str, code: int = 1) -> None:
    click.echo(f"tradewarden: {message}", err=True)
    sys.exit(code)


PROGRESS_EVERY = 2.0  # seconds between progress lines on stderr


class _Progress:
    """Progress lines on stderr, only for runs long enough to need them."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.started = self.last = time.monotonic()

    def __call__(self, count: int) -> None:
        if count % 10_000:
            return
        now = time.monotonic()
        if now - self.last >= PROGRESS_EVERY:
            self.last = now
            rate = count / max(now - self.started, 1e-9)
            click.echo(f"tradewarden: {self.what}: {count:,} records ({rate:,.0f}/s)", err=True)


def _checkpoints(config: Any) -> anchoring.CheckpointSet | None:
    """The deployment's valid checkpoints (None without [audit]); exit 2 if its key cannot be read."""
    if config.audit is None:
        return None
    try:
        key = anchoring.verifying_key(config.audit.signing_key_file)
    except anchoring.AnchorError as error:
        fail(str(error), 2)
        raise  # unreachable
    return anchoring.load_checkpoints(anchoring.read_checkpoint_lines(config.audit.checkpoint_dir), key)


def _report(report: VerifyReport, checkpoints: anchoring.CheckpointSet | None, extra: list[str],
            legacy: int, where: str) -> None:
    """Print the problems (stdout) and the verdict; exit 1 if anything is wrong."""
    for problem in report.problems:
        click.echo(f"record {problem.seq}: {problem.message}")
    for line in (checkpoints.problems if checkpoints else []) + extra:
        click.echo(line)
    failures = len(report.problems) + len(checkpoints.problems if checkpoints else []) + len(extra)
    if legacy:
        click.echo(f"note: {legacy} rows from before rows were bound to audit records (never executed)")
    if failures:
        first = f", first at record {report.problems[0].seq}" if report.problems else ""
        fail(f"audit chain BROKEN ({where}): {failures} problem(s){first}")
    click.echo(f"audit chain OK ({where}): {report.records} records, head {report.head_hash[:16]}…")
    if checkpoints is None:
        click.echo("anchoring is off ([audit] not configured): a database writer who recomputes every hash "
                   "would not be detected")
    elif checkpoints.latest is None:
        click.echo("WARNING: anchoring is on but there are no checkpoints: none written yet (only a running "
                   "server writes them), or the checkpoint folder was moved or emptied; nothing is anchored")
    else:
        latest = checkpoints.latest
        click.echo(f"anchored: {checkpoints.count} signed checkpoints match; the newest covers record {latest.seq} "
                   f"(signed {latest.time}); {max(report.head_seq - latest.seq, 0)} newer records not yet "
                   "checkpointed")


def verify_database(config: Config) -> None:
    """Verify the deployment's database without opening a runtime (no broker, no gate: memory stays low)."""
    import asyncio

    from ledger import db
    from ledger.audit_rows import sqlite_head, sqlite_records
    from policies import audit, bindings

    checkpoints = _checkpoints(config)
    by_seq = checkpoints.by_seq if checkpoints else None
    url = config.server.database_url
    path = db.sqlite_path(url)
    if path is not None and not Path(path).exists():
        fail(f"no database at {path}: nothing to verify")
    where = path or "database"

    async def with_engine() -> tuple[VerifyReport | None, list[str], int]:
        engine = db.create_engine(url)
        try:
            await db.upgrade(engine)  # an older database gets the binding columns (its rows marked legacy)
            sessions = db.session_factory(engine)
            async with sessions() as session:
                report = None if path is not None else await audit.verify(
                    session, by_seq, progress=_Progress("verifying"))
                unbound, legacy = await bindings.unbound_rows(session, MAX_PROBLEMS)
            return report, unbound, legacy
        finally:
            await engine.dispose()

    try:
        report, unbound, legacy = asyncio.run(with_engine())
        if path is not None:  # SQLite: a plain cursor, one row at a time (ledger/audit_rows.py)
            report = audit.verify_records(sqlite_records(path), sqlite_head(path), by_seq,
                                          progress=_Progress("verifying"))
    except Exception as error:  # the database cannot be read: one line, never a traceback
        fail(f"cannot read the database {where}: {type(error).__name__}: {str(error).splitlines()[0][:200]}")
        raise  # unreachable
    assert report is not None
    _report(report, checkpoints, unbound, legacy, where)


def preflight_anchoring(config: Config) -> None:
    """`serve` with [audit]: exit 2 if the key cannot be used, 1 if the database is behind its checkpoints."""
    import asyncio

    from ledger import db
    from server.runtime import check_anchoring

    assert config.audit is not None
    try:
        anchoring.load_signing_key(config.audit.signing_key_file)
    except anchoring.AnchorError as error:
        fail(str(error), 2)

    async def check() -> None:
        engine = db.create_engine(config.server.database_url)
        try:
            await check_anchoring(config, engine, db.session_factory(engine))
        finally:
            await engine.dispose()

    try:
        asyncio.run(check())
    except anchoring.AnchorError as error:
        fail(str(error))
    except Exception:  # the database cannot be read: the server's own start reports that, in one line
        pass


# --- export ----------------------------------------------------------------------------------------------------

def _record_line(row: Any) -> str:
    """A record as JSON; its payload as an object (readable), or as `payload_text` when it is not JSON (an
    edited record: exported as stored, for the verifier to find)."""
    seq, event_id, ts, actor, agent_id, kind, tool, payload, prev_hash, digest = row
    try:
        content: dict[str, Any] = {"payload": json.loads(payload)}
    except ValueError:
        content = {"payload_text": payload}
    return json.dumps({"seq": seq, "event_id": event_id, "ts": ts.isoformat(), "actor": actor, "agent_id": agent_id,
                       "kind": kind, "tool": tool, **content, "prev_hash": prev_hash, "hash": digest},
                      ensure_ascii=False)


def export(config: Config, output: str | None) -> None:
    """Checkpoint lines first (so a verifier streams the records against them), then every record, then the
    head: JSON lines. Streamed in batches, on a plain engine (no runtime: nothing else is started)."""
    import asyncio

    from sqlalchemy import select

    from ledger import db
    from ledger.models import AuditHead
    from policies.audit import RECORDS_AFTER, VERIFY_BATCH

    path = db.sqlite_path(config.server.database_url)
    if path is not None and not Path(path).exists():
        fail(f"no database at {path}: nothing to export")

    async def write(out: IO[str]) -> None:
        if config.audit is not None:
            for _, line in anchoring.read_checkpoint_lines(config.audit.checkpoint_dir):
                try:
                    out.write(json.dumps({"checkpoint": json.loads(line)}) + "\n")
                except ValueError:
                    continue  # not a checkpoint: verify of the folder reports it
        engine = db.create_engine(config.server.database_url)
        try:
            async with db.session_factory(engine)() as session:
                after = 0
                while True:
                    rows = (await db.execute(session, RECORDS_AFTER, {"after": after, "batch": VERIFY_BATCH})).all()
                    out.writelines(_record_line(row) + "\n" for row in rows)
                    if len(rows) < VERIFY_BATCH:
                        break
                    after = rows[-1][0]
                head = (await session.execute(select(AuditHead.seq, AuditHead.hash).where(AuditHead.id == 1))
                        ).first()
        finally:
            await engine.dispose()
        out.write(json.dumps({"head": {"seq": head.seq if head else 0,
                                       "hash": head.hash if head else "0" * 64}}) + "\n")

    try:
        if output:
            with open(output, "w", encoding="utf-8") as out:
                asyncio.run(write(out))
        else:
            asyncio.run(write(sys.stdout))
    except OSError as error:
        fail(f"cannot write the export: {error.strerror}")
    except Exception as error:  # the database cannot be read: one line, never a traceback
        fail(f"cannot read the database {path or 'database'}: {type(error).__name__}")


# --- verify an export ----------------------------------------------------------------------------------------

def _export_lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        handle = path.open(encoding="utf-8")
    except OSError as error:
        fail(f"export {path} unreadable: {error.strerror}", 2)
        raise  # unreachable
    with handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except ValueError:
                value = None
            if not isinstance(value, dict):
                fail(f"export {path} line {number} is not a JSON object: not an `audit export` file", 2)
            yield number, value


def verify_export(path: Path, public_key: Path) -> None:
    from policies.audit import ChainVerifier, canonical_json

    try:
        key = anchoring.load_public_key(public_key)
    except anchoring.AnchorError as error:
        fail(str(error), 2)
        raise  # unreachable
    checkpoints = anchoring.CheckpointSet()
    verifier: ChainVerifier | None = None
    head: dict[str, Any] | None = None
    extra: list[str] = []
    progress = _Progress("verifying export")
    for number, value in _export_lines(path):
        if "checkpoint" in value:
            if verifier is not None:
                extra.append(f"line {number}: checkpoint after records: not an `audit export` file")
                continue
            try:
                checkpoints.add(anchoring.parse_checkpoint(value["checkpoint"]), key, f"line {number}")
            except ValueError as error:
                checkpoints._problem(f"line {number}: not a checkpoint ({error})")
        elif "head" in value:
            head = value["head"]
        else:
            if verifier is None:
                verifier = ChainVerifier(checkpoints.by_seq)
            if verifier.full:
                continue
            try:
                payload = value["payload_text"] if "payload_text" in value else canonical_json(value["payload"])
                verifier.feed(value["seq"], value["event_id"], value["ts"], value["actor"], value["agent_id"],
                              value["kind"], value["tool"], payload, value["prev_hash"], value["hash"])
            except (KeyError, TypeError):
                verifier.problem(None, f"line {number} is not a record")
            if verifier.count % 100_000 == 0:
                progress(verifier.count)
    if verifier is None:
        verifier = ChainVerifier(checkpoints.by_seq)
    if head is None:
        extra.append("the export has no head line: it was cut short")
        head = {"seq": verifier.expected_seq - 1, "hash": verifier.prev_hash}
    report = verifier.finish(int(head.get("seq", -1)), str(head.get("hash", "")))
    _report(report, checkpoints, extra, 0, str(path))


# --- keygen ------------------------------------------------------------------------------------------------

def keygen(config: Config | None, output: str | None) -> None:
    if output:
        path = Path(output)
    else:
        if config is None or config.audit is None:
            fail("no [audit] signing_key_file in the config: pass --output FILE", 2)
            raise AssertionError("unreachable")
        path = config.audit.signing_key_file
    try:
        public = anchoring.generate_key(path)
    except anchoring.AnchorError as error:
        fail(str(error))
        raise  # unreachable
    click.echo(f"private key written to {path} (mode 0600; keep it out of the database's and backups' reach)")
    click.echo(f"public key written to {anchoring.public_key_file(path)}; key id {anchoring.key_id(public)}")
    click.echo(anchoring.public_key_text(public))
