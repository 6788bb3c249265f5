"""``make ui``: the Airflow UI on http://localhost:8080 over the sandbox's metadata database.

Runs the api-server in the foreground and a scheduler, dag-processor and
triggerer beside it, so runs can be triggered and backfilled from the UI too.
Ctrl-C stops all four.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
from pathlib import Path

from sandbox.__main__ import DEFAULT_DIR
from sandbox.demo import REPO, Airflow, read_env


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    p.add_argument("--port", type=int, default=8080)
    a = p.parse_args(argv)
    # Ctrl-C or a plain kill stop all four, also when started where SIGINT is ignored (e.g. in the background).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    root = a.dir.resolve()
    airflow = Airflow(read_env(root / "env"))
    airflow.run("db", "migrate")
    airflow.run("pools", "import", str(REPO / "include" / "config" / "pools.json"))
    exe = str(Path(sys.executable).parent / "airflow")
    log = (root / "airflow-services.log").open("ab")
    services = [subprocess.Popen([exe, *args], env=airflow.env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
                for args in (["scheduler"], ["dag-processor"], ["triggerer"])]
    api = subprocess.Popen([exe, "api-server", "--port", str(a.port)], env=airflow.env, cwd=REPO)
    services.append(api)
    print(f"Airflow UI on http://localhost:{a.port} (scheduler, dag-processor, triggerer log: {log.name})")
    try:
        return api.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        for proc in services:
            proc.terminate()
        for proc in services:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    sys.exit(main())
