"""Airflow over the sandbox: the ``airflow`` CLI, and its long-running services under a supervisor.

Used by ``make ui``, ``make demo`` and the tests alike, so what the tests prove is what a user runs.

* **Locked.** The api-server listens on 127.0.0.1 (``--host`` exposes it on purpose) and needs a
  login: SimpleAuthManager with the user ``admin`` and a password generated into the sandbox's
  state (``login()`` tells it).  The JWT secret is generated too, so no anonymous admin token
  exists.  The scheduler and triggerer run without their log servers (which would listen on every
  address): with the LocalExecutor every task log is a local file the api-server reads itself.
* **Owned.** A component gets SIGTERM from the kernel when the process supervising it dies, however
  it dies (Ctrl-C, SIGTERM, SIGKILL, a CI timeout): nothing outlives the command that started it.
* **Supervised.** Each component runs in its own session.  When one exits (killed, or the metadata
  database went away), every process of its session goes too -- a LocalExecutor's task processes
  and their database connections included, which would otherwise keep row locks the next scheduler
  waits on -- and it is started again, with a growing pause while it keeps failing.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from sandbox.__main__ import die_with_parent

REPO = Path(__file__).resolve().parents[1]
AIRFLOW_BIN = Path(sys.executable).parent / "airflow"
LOCALHOST = "127.0.0.1"
#: The sandbox's login (SimpleAuthManager); the password is in the sandbox's state.
ADMIN_USER = "admin"
#: Every component the UI needs: its ``airflow`` command, with the arguments that keep it on loopback.
COMPONENTS: dict[str, tuple[str, ...]] = {
    "scheduler": ("scheduler", "--skip-serve-logs"),
    "dag-processor": ("dag-processor",),
    "triggerer": ("triggerer", "--skip-serve-logs"),
    "api-server": ("api-server",),
}


#: Debian's Redis server (``make cluster`` installs the package when it is missing).
REDIS_SERVER = "/usr/bin/redis-server"


def celery_cluster(env: dict[str, str], root: Path, workers: int = 2
                   ) -> tuple[dict[str, str], dict[str, tuple[str, ...]], dict[str, dict[str, str]]]:
    """The services of a CeleryExecutor cluster on this machine: the environment, the components
    (those of ``make ui``, a Redis server with a password on 127.0.0.1, ``workers`` Celery workers) and
    each worker's own environment (its name, which the UI shows as the task's host)."""
    from urllib.parse import quote

    from chat_ingest.project import TASK_PRELOAD_MODULES
    from sandbox.stack import SandboxState

    state = SandboxState(root)
    port, password = state.ports["redis"], state.secrets["redis_password"]
    (root / "redis").mkdir(exist_ok=True)
    cluster_env = {
        **env,
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CELERY__BROKER_URL": f"redis://:{quote(password)}@{LOCALHOST}:{port}/0",
        "AIRFLOW__CELERY__RESULT_BACKEND": env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].replace(
            "postgresql+psycopg2://", "db+postgresql://", 1),
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": "chat_ingest.project.host_name",
        # each worker imports what its tasks would, once, before it forks its pool
        "AIRFLOW__CELERY__EXTRA_CELERY_CONFIG": json.dumps({"imports": list(TASK_PRELOAD_MODULES)}),
    }
    redis = (REDIS_SERVER, "--bind", LOCALHOST, "--port", str(port), "--requirepass", password, "--save", "",
             "--appendonly", "no", "--protected-mode", "yes", "--dir", str(root / "redis"))
    celery = celery_workers(workers)
    return (cluster_env, {"redis": redis, **COMPONENTS, **celery},
            {name: {"CHAT_INGEST_HOST_NAME": name} for name in celery})


def celery_workers(count: int, concurrency: int = 2) -> dict[str, tuple[str, ...]]:
    """``count`` Celery workers on this machine, each with its own name (no log server: the api-server
    reads the task logs from the shared disk)."""
    return {f"worker-{i}": ("celery", "worker", "--celery-hostname", f"worker-{i}@%h", "--concurrency",
                            str(concurrency), "--skip-serve-logs") for i in range(1, count + 1)}


def port_free(port: int) -> bool:
    """Whether a server could bind ``port`` on 127.0.0.1 now."""
    with socket.socket() as s:
        try:
            s.bind((LOCALHOST, port))
            return True
        except OSError:
            return False


def ephemeral_ports() -> range:
    """The ports the kernel hands out to outgoing connections (and to ``bind`` on port 0)."""
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999  # Linux's default
    return range(low, high + 1)


def free_port(taken: Iterable[int] = ()) -> int:
    """A free port below the kernel's ephemeral range, none of ``taken``, for a server that binds it later.

    Every server of a sandbox binds its port seconds after the port is chosen (Postgres after
    ``initdb``, the stand-ins after loading their data).  A port from the ephemeral range can be
    taken in between by any outgoing connection on the machine -- a fresh-clone ``make test`` failed
    with ``Address already in use`` that way -- while no connection is ever given one below it.
    Drawn with ``secrets``: ``random`` may be seeded alike in two processes (the generator seeds it).
    """
    ephemeral, taken = ephemeral_ports(), set(taken)
    below = range(10000 if ephemeral.start > 20000 else 1024, ephemeral.start)
    for port in (secrets.choice(below) for _ in range(100 if below else 0)):
        if port not in taken and port_free(port):
            return port
    with socket.socket() as s:  # no room below the range: the kernel's choice
        s.bind((LOCALHOST, 0))
        return s.getsockname()[1]


def read_env(path: Path) -> dict[str, str]:
    """Parse the sandbox's env file (``export K='v'`` lines) without a shell."""
    env = {}
    for line in path.read_text().splitlines():
        if line.startswith("export "):
            key, _, value = line[len("export "):].partition("=")
            env[key] = shlex.split(value)[0] if value else ""
    return env


def api_env(port: int, host: str = LOCALHOST) -> dict[str, str]:
    """Where the api-server listens, and where tasks and the UI reach it (one port for both)."""
    address = "localhost" if host in (LOCALHOST, "0.0.0.0") else host
    return {"AIRFLOW__API__HOST": host, "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__BASE_URL": f"http://{address}:{port}",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://{address}:{port}/execution/"}


def ui_env(sandbox_env: dict[str, str], port: int, host: str = LOCALHOST) -> dict[str, str]:
    """The services' environment: the sandbox's, listening on ``host:port``, and without the
    ``AIRFLOW_CONN_*`` variables, so tasks read the connections from the metadata database (which
    ``prepare`` fills from the same values) and an edit in Admin → Connections takes effect."""
    kept = {k: v for k, v in sandbox_env.items() if not k.startswith("AIRFLOW_CONN_")}
    return {**kept, **api_env(port, host)}


def login(env: dict[str, str]) -> tuple[str, str]:
    """The sandbox's UI user and password."""
    passwords = json.loads(Path(env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]).read_text())
    return ADMIN_USER, passwords[ADMIN_USER]


def api_token(url: str, user: str, password: str) -> str:
    """A bearer token for the REST API of the api-server at ``url``, from its own login."""
    import requests

    response = requests.post(f"{url}/auth/token", json={"username": user, "password": password}, timeout=60)
    response.raise_for_status()
    return response.json()["access_token"]


class Airflow:
    """The ``airflow`` CLI of this virtualenv, pointed at the sandbox."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = {**os.environ, **env, "PATH": f"{AIRFLOW_BIN.parent}{os.pathsep}{os.environ['PATH']}"}
        self.metadata_dsn = env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].replace("+psycopg2", "")

    def run(self, *args: str, timeout: float = 900, log: Path | None = None, check: bool = True) -> int:
        out = log.open("ab") if log else subprocess.DEVNULL
        proc = subprocess.run([str(AIRFLOW_BIN), *args], env=self.env, stdout=out,
                              stderr=subprocess.STDOUT, timeout=timeout, cwd=REPO)
        if check and proc.returncode:
            raise RuntimeError(f"airflow {' '.join(args)} exited {proc.returncode}" + (f"; log: {log}" if log else ""))
        return proc.returncode

    def prepare(self, log: Path | None = None) -> None:
        """The metadata database migrated, the vendor pools and the sandbox's connections in it (so
        Admin → Connections lists them, each with its Test button)."""
        self.run("db", "migrate", log=log)
        self.run("pools", "import", str(REPO / "include" / "config" / "pools.json"), log=log)
        connections = Path(self.env["SANDBOX_DIR"]) / "connections.json"
        if connections.exists():
            self.run("connections", "import", "--overwrite", str(connections), log=log)

    def parsed_since(self, dag_ids: list[str], since: dt.datetime) -> bool:
        """Whether a dag-processor started at ``since`` (with this configuration) parsed all of ``dag_ids``."""
        with psycopg.connect(self.metadata_dsn) as conn:
            found = {d for (d,) in conn.execute(
                "SELECT dag_id FROM dag WHERE dag_id = ANY(%s) AND last_parsed_time > %s", (list(dag_ids), since))}
        return found == set(dag_ids)

    def last_run_state(self, dag_id: str) -> tuple[str, str]:
        with psycopg.connect(self.metadata_dsn) as conn:
            row = conn.execute("SELECT run_id, state FROM dag_run WHERE dag_id = %s ORDER BY id DESC LIMIT 1",
                               (dag_id,)).fetchone()
        return row if row else ("", "missing")

    def trigger(self, dag_id: str, conf: dict, log: Path) -> str:
        """One real DAG run in-process (``airflow dags test``), recorded in the metadata database."""
        self.run("dags", "test", dag_id, "-c", json.dumps(conf), log=log, check=False)
        run_id, state = self.last_run_state(dag_id)
        if state != "success":
            raise RuntimeError(f"{dag_id} {conf}: run {run_id} ended {state}; log: {log}")
        return run_id

    def trigger_day(self, dag_id: str, day, log: Path) -> str:
        return self.trigger(dag_id, {"date": day.isoformat()}, log)

    def backfill(self, dag_id: str, first: dt.date, last: dt.date, log: Path | None = None) -> None:
        """``airflow backfill create`` of ``[first, last]``, one run at a time and in order, as a user loads
        days after an outage; a day that already has a run is skipped (the scheduler then runs them)."""
        self.run("backfill", "create", "--dag-id", dag_id, "--from-date", first.isoformat(),
                 "--to-date", last.isoformat(), "--max-active-runs", "1", log=log)


def session_processes(sid: int) -> list[int]:
    """Every live process of session ``sid`` (a component and whatever it started)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue
            if int(fields[3]) == sid and fields[0] != "Z":
                pids.append(int(entry.name))
    return pids


def signal_all(pids: list[int], sig: int) -> None:
    """Send ``sig`` to each of ``pids`` still alive."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def kill_session(sid: int, grace: float = 20) -> None:
    """SIGTERM every process of session ``sid``, then SIGKILL those still there after ``grace``."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10)):
        signal_all(session_processes(sid), sig)
        deadline = time.monotonic() + wait
        while session_processes(sid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if not session_processes(sid):
            return


@dataclass
class Component:
    name: str
    argv: tuple[str, ...]
    env: dict[str, str]
    proc: subprocess.Popen | None = None
    supervised: bool = True
    restarts: int = 0
    next_start: float = 0.0
    failures_in_a_row: int = 0
    started_at: float = field(default=0.0)


class Supervisor:
    """Runs Airflow components, each in its own session; restarts one that exits, its session first.

    ``env`` is the components' whole environment (see ``ui_env``), ``logs`` the folder of their logs
    (one file each); ``components`` maps a name to its ``airflow`` arguments, or to a full command
    line when it starts with ``/`` (e.g. a Redis server).  A component's own environment (on top of
    ``env``) is ``component_env[name]``; a worker's ``CHAT_INGEST_HOST_NAME`` names it in the UI.
    """

    #: A component that ran this long before exiting is restarted at once; one that keeps failing
    #: sooner waits 2, 4, ... up to 30 seconds (e.g. while the metadata database restarts).
    HEALTHY_AFTER = 60.0

    def __init__(self, env: dict[str, str], logs: Path, components: dict[str, tuple[str, ...]] = COMPONENTS,
                 component_env: dict[str, dict[str, str]] | None = None) -> None:
        self.env = {**env, "PATH": f"{AIRFLOW_BIN.parent}{os.pathsep}{env.get('PATH', os.environ['PATH'])}"}
        self.logs = logs
        self.components = {
            name: Component(name, argv if argv[0].startswith("/") else (str(AIRFLOW_BIN), *argv),
                            (component_env or {}).get(name, {}))
            for name, argv in components.items()}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._watcher: threading.Thread | None = None

    def log_of(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def pid(self, name: str) -> int | None:
        proc = self.components[name].proc
        return proc.pid if proc and proc.poll() is None else None

    def restarts(self, name: str) -> int:
        return self.components[name].restarts

    def _start(self, component: Component) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        with self.log_of(component.name).open("ab") as out:
            component.proc = subprocess.Popen(list(component.argv), env={**self.env, **component.env},
                                              cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                              stdin=subprocess.DEVNULL, start_new_session=True,
                                              preexec_fn=die_with_parent)
        component.started_at = time.monotonic()

    def start(self) -> Supervisor:
        for component in self.components.values():
            self._start(component)
        self._watcher = threading.Thread(target=self._watch, name="airflow-supervisor", daemon=True)
        self._watcher.start()
        return self

    def _watch(self) -> None:
        while not self._stop.wait(1.0):
            with self._lock:
                for component in self.components.values():
                    self._revive(component)

    def lose(self, name: str) -> int:
        """Kill a component as a lost machine would go (SIGKILL, everything it started with it) and stop
        supervising it; its pid."""
        with self._lock:
            component = self.components[name]
            component.supervised = False
            pid = component.proc.pid
            signal_all(session_processes(pid), signal.SIGKILL)
            component.proc.wait()
        return pid

    def _revive(self, component: Component) -> None:
        proc = component.proc
        if not component.supervised or proc is None or proc.poll() is None:
            if proc is None and time.monotonic() >= component.next_start:
                self._start(component)
            return
        kill_session(proc.pid)  # what it left behind: task processes, their database sessions
        ran = time.monotonic() - component.started_at
        component.failures_in_a_row = 0 if ran >= self.HEALTHY_AFTER else component.failures_in_a_row + 1
        pause = min(2.0 ** component.failures_in_a_row, 30.0) if component.failures_in_a_row else 0.0
        with self.log_of(component.name).open("a") as out:
            out.write(f"\n[supervisor] {component.name} exited {proc.returncode} after {ran:.0f}s; "
                      f"restarting in {pause:.0f}s\n")
        component.proc, component.restarts = None, component.restarts + 1
        component.next_start = time.monotonic() + pause

    def stop(self) -> None:
        """Stop every component and everything it started."""
        self._stop.set()
        if self._watcher:
            self._watcher.join(timeout=10)
        with self._lock:
            running = [c.proc for c in self.components.values() if c.proc is not None]
            for proc in running:
                if proc.poll() is None:
                    proc.terminate()
            for proc in running:
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    pass
                kill_session(proc.pid, grace=5)
                proc.poll()

    def __enter__(self) -> Supervisor:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
