"""``make ui``: the Airflow UI on http://localhost:8080 over the sandbox's metadata database.

Runs the api-server in the foreground and a scheduler, dag-processor and
triggerer beside it, so runs can be triggered and backfilled from the UI too.
Ctrl-C stops all four.
"""

from __future__ import annotations

import argparse
import signal
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
    log = root / "airflow-services.log"
    services = [airflow.start(name, log=log) for name in ("scheduler", "dag-processor", "triggerer")]
    api = airflow.start("api-server", "--port", str(a.port), log=log)
    services.append(api)
    print(f"Airflow UI on http://localhost:{a.port} (Ctrl-C stops it; services log: {log})")
    try:
        return api.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        Airflow.stop(services)


if __name__ == "__main__":
    sys.exit(main())
