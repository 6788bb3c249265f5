"""``python -m sandbox up|down|status``: run the local stand-ins of the four vendors.

``up`` generates a dataset when none is given (``--dataset PATH`` loads your own,
in the layout documented in sandbox/generator.py), starts the supervisor
detached, waits until every stand-in answers and prints where ``env`` is.
``down`` stops the supervisor, which stops every server and PostgreSQL.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DIR = REPO / ".sandbox"


def process_alive(pid: int) -> bool:
    """True while ``pid`` runs; an exited child is reaped, and a zombie counts as gone."""
    try:
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our own exited child (`up` and `down` in one process)
    except ChildProcessError:
        pass
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _pid(root: Path) -> int | None:
    try:
        pid = int((root / "supervisor.pid").read_text())
    except (FileNotFoundError, ValueError):
        return None
    return pid if process_alive(pid) else None


def is_up(root: Path) -> bool:
    return bool(_pid(root)) and (root / "ready").exists()


def die_with_parent() -> None:
    """In a child, before exec: have the kernel send it SIGTERM when the process that started it dies,
    however that one ends (Ctrl-C, SIGTERM, SIGKILL, a CI timeout)."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def up(root: Path, dataset: Path | None, days: int, seed: int, bad_records: float, timeout: float,
       owned: bool = False, airflow: bool = True) -> int:
    """Start the sandbox.  ``owned``: it stops when the calling process ends, however it ends (the
    tests, the demo and the benchmarks); otherwise it runs until ``down`` (``make sandbox-up``).
    ``airflow``: prepare Airflow's metadata database too (the benchmarks run no DAG)."""
    root.mkdir(parents=True, exist_ok=True)
    if _pid(root):
        print(f"sandbox already up; env: {root / 'env'}")
        return 0
    if dataset is None:
        from sandbox.generator import generate

        dataset = root / "dataset"
        if not (dataset / "manifest.json").exists():
            manifest = generate(dataset, seed=seed, days=days, bad_share=bad_records)
            print(f"generated {days} days of synthetic data from {manifest['start']} into {dataset}")
    log = (root / "sandbox.log").open("ab")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "plugins"), str(REPO)]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "sandbox", "serve", "--dir", str(root), "--dataset", str(dataset)],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, env=env, cwd=REPO,
        preexec_fn=die_with_parent if owned else None,
    )
    (root / "supervisor.pid").write_text(str(proc.pid))
    deadline = time.monotonic() + timeout
    while not (root / "ready").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            if proc.poll() is None:
                proc.terminate()
            tail = (root / "sandbox.log").read_text(errors="replace")[-3000:]
            print(f"sandbox failed to start:\n{tail}", file=sys.stderr)
            return 1
        time.sleep(0.2)
    from sandbox.services import Airflow, read_env

    if not airflow:
        print(f"sandbox up; env: {root / 'env'}")
        return 0
    # the Airflow metadata database too, so `airflow dags test …` works straight from the env file
    try:
        Airflow(read_env(root / "env")).prepare(log=root / "airflow-prepare.log")
    except BaseException:
        down(root)  # a half-made sandbox is stopped, not left running
        raise
    print(f"sandbox up; env: {root / 'env'}  (set -a; . {root / 'env'})")
    return 0


def down(root: Path, timeout: float = 60) -> int:
    pid = _pid(root)
    if pid is None:
        print("sandbox not running")
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _pid(root) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _pid(root):
        os.killpg(pid, signal.SIGKILL)
    (root / "supervisor.pid").unlink(missing_ok=True)
    print("sandbox down")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sandbox", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    for name in ("up", "down", "status", "serve"):
        s = sub.add_parser(name)
        s.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="state directory (default .sandbox)")
        if name in ("up", "serve"):
            s.add_argument("--dataset", type=Path, default=None, help="dataset directory (default: generate one)")
        if name == "up":
            s.add_argument("--days", type=int, default=3)
            s.add_argument("--seed", type=int, default=7)
            s.add_argument("--bad-records", type=float, default=0.0)
            s.add_argument("--timeout", type=float, default=300)
    a = p.parse_args(argv)
    root = a.dir.resolve()
    if a.command == "up":
        return up(root, a.dataset, a.days, a.seed, a.bad_records, a.timeout)
    if a.command == "down":
        return down(root)
    if a.command == "status":
        pid = _pid(root)
        print(f"up (pid {pid}); env: {root / 'env'}" if is_up(root) else "down")
        return 0 if pid else 3
    from sandbox.stack import serve

    print(f"{dt.datetime.now(dt.timezone.utc):%H:%M:%S} starting sandbox in {root}", flush=True)
    serve(root, a.dataset)
    # Every server and PostgreSQL are stopped by now; skip interpreter finalisation, where the
    # embedded ClickHouse engine's global shutdown can stall for a minute on its thread pools.
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
