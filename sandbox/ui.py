"""``make ui [PORT=8080] [HOST=127.0.0.1]``: the Airflow UI over the sandbox's metadata database;
``make cluster [WORKERS=2]``: the same on Airflow's CeleryExecutor, with a Redis server and Celery
workers on this machine (``--executor celery``).

Starts the sandbox unless it is up already (then it stops it again on exit: what ``make ui``
started, it stops; a sandbox from ``make sandbox-up`` stays).  Runs the api-server with a scheduler,
dag-processor and triggerer under a supervisor (a component that dies is restarted, whatever it left
behind killed first), so runs can be triggered and backfilled from the UI.  Listens on 127.0.0.1
unless ``--host`` says otherwise, and asks for a login: the user and password it prints.  Ctrl-C or
SIGTERM stops all of it.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path

from sandbox.__main__ import DEFAULT_DIR, down, is_up, up
from sandbox.debian import apt_install
from sandbox.services import (
    COMPONENTS,
    LOCALHOST,
    REDIS_SERVER,
    Airflow,
    Supervisor,
    celery_cluster,
    login,
    read_env,
    ui_env,
)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--host", default=LOCALHOST, help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--dataset", type=Path, default=None, help="the sandbox's dataset, if this starts it")
    p.add_argument("--executor", choices=("local", "celery"), default="local")
    p.add_argument("--workers", type=int, default=2, help="Celery workers (with --executor celery)")
    a = p.parse_args(argv)
    stop = threading.Event()
    # Ctrl-C or a plain kill stop everything, also when started where SIGINT is ignored (in the background).
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: stop.set())
    root = a.dir.resolve()
    ours = not is_up(root)
    if ours and up(root, a.dataset, days=3, seed=7, bad_records=0.0, timeout=300, owned=True):
        return 1
    try:
        env = ui_env({**os.environ, **read_env(root / "env")}, a.port, a.host)
        if not ours:  # a sandbox started earlier: bring its metadata database and connections up to date
            Airflow(env).prepare(log=root / "airflow-prepare.log")
        user, password = login(env)
        components, component_env = COMPONENTS, {}
        if a.executor == "celery":
            reason = apt_install(["redis-server"], needed=[REDIS_SERVER])
            if reason:
                raise SystemExit(f"make cluster needs a Redis server: {reason}")
            env, components, component_env = celery_cluster(env, root, a.workers)
        with Supervisor(env, root / "logs", components, component_env) as services:
            print(f"Airflow UI on {env['AIRFLOW__API__BASE_URL']}  login: {user} / {password}\n"
                  f"(Ctrl-C stops it{' and the sandbox' if ours else ''}; the services' logs: {services.logs})",
                  flush=True)
            while not stop.wait(2):
                if not is_up(root):  # `make sandbox-down` stops this too
                    print("the sandbox stopped: stopping Airflow", flush=True)
                    break
    finally:
        if ours:
            down(root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
