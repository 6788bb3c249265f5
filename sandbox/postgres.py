"""An embedded PostgreSQL 16 for the sandbox, from the ``pgserver`` wheel.

``pgserver.get_server`` only listens on a unix socket with trust auth. The
sandbox wants what a deployment has — TCP on 127.0.0.1 and password
(scram) authentication — so it drives the same bundled binaries itself,
reusing pgserver's helpers for running as root (a dedicated system user owns
the data directory, as PostgreSQL refuses to run as root).
"""

from __future__ import annotations

import os
import pwd
import secrets
import subprocess
import tempfile
import time
from pathlib import Path

from pgserver._commands import POSTGRES_BIN_PATH
from pgserver.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists

SYSTEM_USER = "pgserver"
SUPERUSER = "postgres"


def _run_as_owner(args: list[str], check: bool = True) -> subprocess.CompletedProcess:
    """Run a PostgreSQL binary as the data directory's owner (they all refuse root)."""
    user = SYSTEM_USER if os.geteuid() == 0 else None
    return subprocess.run(args, check=check, capture_output=True, text=True, user=user)


class EmbeddedPostgres:
    """A cluster in ``pgdata`` on 127.0.0.1:``port``, run by the binaries in ``bin_path`` (pgserver's by
    default; the tests also run a distribution's server, which has contrib modules such as pgcrypto)."""

    def __init__(self, pgdata: Path, port: int, bin_path: Path = POSTGRES_BIN_PATH) -> None:
        self.pgdata = pgdata
        self.port = port
        self.bin_path = bin_path
        self.password_file = pgdata.parent / "pg-superuser-password"

    @property
    def password(self) -> str:
        return self.password_file.read_text().strip()

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}:{self.password}@127.0.0.1:{self.port}/{database}"

    def _prepare_permissions(self) -> None:
        if os.geteuid() != 0:
            return
        ensure_user_exists(SYSTEM_USER)
        ensure_prefix_permissions(self.pgdata)
        if self.bin_path == POSTGRES_BIN_PATH:  # the wheel's files are the installing user's only
            ensure_prefix_permissions(POSTGRES_BIN_PATH)
            ensure_folder_permissions(POSTGRES_BIN_PATH, 0o055)
            ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", 0o044)
        owner = pwd.getpwnam(SYSTEM_USER)
        os.chown(self.pgdata, owner.pw_uid, owner.pw_gid)

    def init(self) -> None:
        """Create the cluster once; later starts reuse it (the Airflow metadata lives there)."""
        self.pgdata.mkdir(parents=True, exist_ok=True)
        self._prepare_permissions()
        if (self.pgdata / "PG_VERSION").exists():
            return
        if not self.password_file.exists():
            self.password_file.write_text(secrets.token_urlsafe(18))
            self.password_file.chmod(0o600)
        with tempfile.NamedTemporaryFile("w", delete=False) as pw:
            pw.write(self.password)
        os.chmod(pw.name, 0o644)
        try:
            _run_as_owner([
                str(self.bin_path / "initdb"), "-D", str(self.pgdata), "-U", SUPERUSER, f"--pwfile={pw.name}",
                "--auth-local=scram-sha-256", "--auth-host=scram-sha-256", "--encoding=UTF8", "--locale=C",
            ])
        finally:
            os.unlink(pw.name)

    def start(self) -> None:
        """Start the server, or keep the one running -- but not one still stopping (the demo's last
        ``down`` returns before its server has shut down: a start then saw it running, returned,
        and the next connection was refused): that one is waited for, then started again."""
        self.init()
        if self.running() and self._up_or_stopped():
            return
        log = self.pgdata / "server.log"
        options = (
            f"-h 127.0.0.1 -p {self.port} -c unix_socket_directories='' -c TimeZone=UTC "
            "-c max_connections=200 -c shared_buffers=256MB -c fsync=off -c synchronous_commit=off "
            "-c full_page_writes=off -c max_wal_size=4GB"
        )
        try:
            _run_as_owner([str(self.bin_path / "pg_ctl"), "-D", str(self.pgdata), "-w", "-t", "60",
                           "-l", str(log), "-o", options, "start"])
        except subprocess.CalledProcessError as exc:
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"PostgreSQL did not start: {exc.stderr}\n{tail}") from exc
        self._wait_ready()

    def _wait_ready(self, timeout: float = 60) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            try:
                psycopg.connect(self.dsn(), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)

    def _up_or_stopped(self, timeout: float = 120) -> bool:
        """Wait until a running server accepts connections (True) or has stopped (False)."""
        deadline = time.monotonic() + timeout
        while self.running():
            ready = _run_as_owner([str(self.bin_path / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port),
                                   "-t", "2"], check=False)
            if ready.returncode == 0:
                return True
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL in {self.pgdata} neither accepts connections nor stops "
                                   f"(pg_isready: {ready.stdout.strip() or ready.returncode})")
            time.sleep(0.3)
        return False

    def running(self) -> bool:
        if not (self.pgdata / "postmaster.pid").exists():
            return False
        status = _run_as_owner([str(self.bin_path / "pg_ctl"), "-D", str(self.pgdata), "status"], check=False)
        return status.returncode == 0

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``mode`` as pg_ctl's: ``immediate`` is a crash, for recovery tests)."""
        if self.running():
            _run_as_owner([str(self.bin_path / "pg_ctl"), "-D", str(self.pgdata), "-w", "-t", "60",
                           "-m", mode, "stop"])
