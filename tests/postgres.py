"""A real, throw-away PostgreSQL server for the tests.

`PostgresServer.start()` runs Debian's binaries (/usr/lib/postgresql/<v>/bin: initdb, pg_ctl) on a
temporary data directory, listening on 127.0.0.1 at a free port, as an unprivileged user (PostgreSQL
refuses to run as root: when the tests run as root, the server runs as the `postgres` system user, or a
`twtest` user created for it, and the temporary directory belongs to that user). Durability is switched
off (fsync, synchronous_commit, full_page_writes): the data is thrown away at the end anyway.

`create_database()` gives each test its own empty database (CREATE DATABASE is cheap).

When the binaries are missing the PostgreSQL tests are skipped with the reason, unless
TRADEWARDEN_REQUIRE_POSTGRES=1 (set by .ci/run), in which case they fail.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

REQUIRE_ENV = "TRADEWARDEN_REQUIRE_POSTGRES"
PREFERRED_VERSION = "15"
SUPERUSER = "postgres"


class PostgresUnavailable(Exception):
    """No PostgreSQL binaries (or they would not start); the message says why."""


def find_bin_dir() -> Path | None:
    """Debian's layout first (the preferred version, else the newest), then initdb on PATH."""
    override = os.environ.get("TRADEWARDEN_PG_BIN")
    if override:
        return Path(override) if (Path(override) / "pg_ctl").exists() else None
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
                        key=lambda p: (Path(p).parent.parent.name != PREFERRED_VERSION,
                                       -int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit()
                                       else 0))
    if candidates:
        return Path(candidates[0]).parent
    on_path = shutil.which("pg_ctl")
    return Path(on_path).parent if on_path and shutil.which("initdb") else None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run_as_user() -> str | None:
    """The user to run the server as when we are root (None: run as ourselves)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "twtest"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    try:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "twtest"],
                       check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as error:
        raise PostgresUnavailable(f"running as root and no unprivileged user to run PostgreSQL as: {error}") from None
    return "twtest"


@dataclass
class PostgresServer:
    bin_dir: Path
    root: Path
    port: int
    user: str | None
    log_file: Path = field(init=False)
    _counter: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def __post_init__(self) -> None:
        self.log_file = self.root / "postgres.log"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def _cmd(self, *args: str) -> list[str]:
        return ["runuser", "-u", self.user, "--", *args] if self.user else list(args)

    def _run(self, *args: str, timeout: float = 60) -> None:
        try:
            result = subprocess.run(self._cmd(*args), capture_output=True, text=True, timeout=timeout,
                                    cwd=self.root)
        except (OSError, subprocess.TimeoutExpired) as error:  # e.g. no runuser on this system
            raise PostgresUnavailable(f"{Path(args[0]).name} could not run: {error}") from None
        if result.returncode != 0:
            log = self.log_file.read_text()[-2000:] if self.log_file.exists() else ""
            raise PostgresUnavailable(f"{Path(args[0]).name} failed ({result.returncode}): "
                                      f"{result.stderr.strip()[-1000:]} {log}")

    @classmethod
    def start(cls) -> PostgresServer:
        bin_dir = find_bin_dir()
        if bin_dir is None:
            raise PostgresUnavailable("PostgreSQL binaries not found (/usr/lib/postgresql/*/bin); "
                                      "install the Debian package `postgresql`")
        user = _run_as_user()
        root = Path(tempfile.mkdtemp(prefix="tw-pg-"))
        if user:
            entry = pwd.getpwnam(user)
            os.chown(root, entry.pw_uid, entry.pw_gid)
        root.chmod(0o700)
        last_error: Exception | None = None
        for _attempt in range(3):  # the free port may be taken between probing and binding
            server = cls(bin_dir=bin_dir, root=root, port=free_port(), user=user)
            try:
                server._init_and_start()
                return server
            except PostgresUnavailable as error:
                last_error = error
                server.stop(remove=False)
                shutil.rmtree(server.data_dir, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)
        raise PostgresUnavailable(str(last_error))

    def _init_and_start(self) -> None:
        self._run(str(self.bin_dir / "initdb"), "-D", str(self.data_dir), "-U", SUPERUSER, "--auth=trust",
                  "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions")
        options = " ".join([
            f"-p {self.port}", "-c listen_addresses=127.0.0.1", f"-c unix_socket_directories={self.root}",
            "-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off", "-c max_connections=400",
            "-c shared_buffers=64MB", "-c log_min_messages=warning", "-c deadlock_timeout=200ms",
            "-c timezone=UTC",
        ])
        self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log_file), "-o", options,
                  "-w", "-t", "60", "start", timeout=90)

    def stop(self, remove: bool = True) -> None:
        if self.data_dir.exists():
            subprocess.run(self._cmd(str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", "immediate",
                                     "-w", "stop"), capture_output=True, timeout=60, cwd=self.root)
        if remove:
            shutil.rmtree(self.root, ignore_errors=True)

    # --- databases ---------------------------------------------------------------------------------

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def url(self, database: str) -> str:
        """The SQLAlchemy URL tradewarden is configured with."""
        return f"postgresql+asyncpg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, prefix: str = "tw") -> str:
        """A fresh empty database; returns its SQLAlchemy URL."""
        name = f"{prefix}_{os.getpid()}_{next(self._counter)}"
        self._client("createdb", "-T", "template0", name)
        return self.url(name)

    def drop_database(self, url: str) -> None:
        self._client("dropdb", "--if-exists", "--force", url.rsplit("/", 1)[1])

    def _client(self, tool: str, *args: str) -> None:
        result = subprocess.run([str(self.bin_dir / tool), "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER,
                                 *args], capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            raise PostgresUnavailable(f"{tool} failed: {result.stderr.strip()}")


def postgres_required() -> bool:
    return os.environ.get(REQUIRE_ENV) == "1"
