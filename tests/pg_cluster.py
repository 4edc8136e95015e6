"""A throwaway PostgreSQL cluster for the tests, and the store-location fixture body over both backends.

The server binaries come from ``/usr/lib/postgresql/<version>/bin`` (Debian's
``postgresql``, not on PATH) or PATH.  ``initdb`` refuses to run as root, so as root
``initdb`` and ``pg_ctl`` run as user ``postgres`` through ``runuser``, in a
``/tmp`` folder that user owns (a pytest tmp folder is 0700 root).  The server
listens on 127.0.0.1 only, on a free port, with its socket in that folder, and trusts
local connections, except for one role that must give its password (scram), for the
tests that prove a password never shows.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

REQUIRE_ENV = "RCA_REQUIRE_POSTGRES"
PASSWORD_ROLE = "rca_pw"
PASSWORD = "pw-Very-Secret-7f3a"


def server_bin() -> Path | None:
    """The folder of the newest installed server's binaries, or ``None``."""
    found = [p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/initdb")]
    found.sort(key=lambda b: int(b.parent.name) if b.parent.name.isdigit() else 0)
    if found:
        return found[-1]
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresCluster:
    """One running cluster; :meth:`new_database` hands each test a database of its own."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.as_root = os.geteuid() == 0
        self.base = Path(tempfile.mkdtemp(prefix="rca-pg-", dir="/tmp"))
        self.data = self.base / "data"
        self.log = self.base / "server.log"
        self.port = _free_port()
        self._names = itertools.count(1)
        self.started = False
        if self.as_root:
            user = pwd.getpwnam("postgres")
            os.chown(self.base, user.pw_uid, user.pw_gid)

    def _run(self, *argv: str) -> None:
        command = [str(self.bindir / argv[0]), *argv[1:]]
        if self.as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, cwd=self.base, capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{argv[0]} failed ({result.returncode}): {result.stderr[-2000:]}\n{log}")

    def start(self) -> "PostgresCluster":
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C",
                  "--no-sync")
        hba = self.data / "pg_hba.conf"
        # First match wins: this role must authenticate, everyone else on loopback is trusted.
        hba.write_text(f"host all {PASSWORD_ROLE} 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
        options = (f"-k {self.base} -p {self.port} -h 127.0.0.1 -c fsync=off -c full_page_writes=off "
                   "-c synchronous_commit=off -c max_connections=200")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "-o", options, "start")
        self.started = True
        self.admin(f"CREATE ROLE {PASSWORD_ROLE} LOGIN PASSWORD '{PASSWORD}'")
        return self

    def stop(self) -> None:
        try:
            if self.started:
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.base, ignore_errors=True)

    def url(self, database: str = "postgres", user: str = "postgres", password: str | None = None) -> str:
        secret = f":{password}" if password else ""
        return f"postgresql://{user}{secret}@127.0.0.1:{self.port}/{database}"

    def admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(sql)

    def new_database(self, owner: str = "postgres") -> str:
        """A new empty database; its URL (as ``owner``, without a password)."""
        name = f"rca_{os.getpid()}_{next(self._names)}"
        self.admin(f"CREATE DATABASE {name} OWNER {owner}")
        return self.url(name, owner)


def start_cluster() -> PostgresCluster | None:
    """The session's cluster, or ``None`` (skip) when no server is installed and none is required."""
    bindir = server_bin()
    if bindir is None:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{REQUIRE_ENV}=1 but no PostgreSQL server binaries (install Debian's postgresql)")
        return None
    cluster = PostgresCluster(bindir)
    try:
        return cluster.start()
    except BaseException:
        cluster.stop()
        raise


BACKENDS = ["sqlite", "postgresql"]


def store_location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The body of a ``params=BACKENDS`` fixture: a path for a new SQLite store, or the URL of a new empty
    PostgreSQL database (the session's cluster starts on first use; skipped if the server is missing)."""
    if request.param == "sqlite":
        return str(tmp_path / "store" / "rca.sqlite")
    cluster = request.getfixturevalue("postgres_server")
    return str(cluster.new_database())
