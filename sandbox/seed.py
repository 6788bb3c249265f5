"""Seed stand-in servers reachable over the network -- docker compose's ClickHouse server, TimescaleDB
and MinIO -- with a generated dataset, by the same loaders that fill the sandbox's own stand-ins
(``sandbox/stack.py``): the same ``<table>_<company>`` ClickHouse tables, the same A8 tables, the same
bucket layout.  The Ultimate stand-in serves the dataset's export files as they are.

    python -m sandbox.seed --dataset /opt/airflow/dataset --clickhouse-dataset dataset

generates the dataset first when the folder has none (the sandbox's default: 3 days ending yesterday),
so the scheduled daily run of every ingestion DAG lands rows.  Servers and secrets come from the
environment (compose passes its own): ``SEED_CLICKHOUSE_URL``, ``SEED_CLICKHOUSE_USER``,
``SEED_CLICKHOUSE_PASSWORD``, ``SEED_A8_DSN``, ``SEED_S3_ENDPOINT``, ``SEED_S3_ACCESS_KEY``,
``SEED_S3_SECRET_KEY``.  Rerunning it loads the dataset again (tables replaced, objects rewritten).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import requests

from sandbox.generator import generate
from sandbox.stack import load_a8, load_botslovers, load_unless


class ClickHouseServer:
    """A ClickHouse server's HTTP interface, as :func:`~sandbox.stack.load_botslovers` uses a backend."""

    def __init__(self, url: str, user: str, password: str) -> None:
        self.url, self.auth = url.rstrip("/") + "/", (user, password)

    def execute(self, query: str) -> bytes:
        response = requests.post(self.url, data=query.encode(), auth=self.auth, timeout=600)
        if not response.ok:
            raise RuntimeError(f"ClickHouse refused {query[:80]!r}: {response.status_code} {response.text[:500]}")
        return response.content


def seed(dataset: Path, env: dict[str, str], clickhouse_dataset: str | None = None) -> dict[str, int]:
    """Load ``dataset`` into the stand-ins ``env`` names (the ``SEED_*`` variables); the row and object
    counts per table."""
    clickhouse = ClickHouseServer(env["SEED_CLICKHOUSE_URL"], env["SEED_CLICKHOUSE_USER"],
                                  env["SEED_CLICKHOUSE_PASSWORD"])
    counts = load_botslovers(clickhouse, dataset, clickhouse_dataset)
    counts.update({f"a8.{table}": n for table, n in load_a8(env["SEED_A8_DSN"], dataset).items()})
    counts["unless_objects"] = load_unless(env["SEED_S3_ENDPOINT"], env["SEED_S3_ACCESS_KEY"],
                                           env["SEED_S3_SECRET_KEY"], dataset, backdate=False)
    return counts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", type=Path, required=True)
    p.add_argument("--clickhouse-dataset", default=None,
                   help="the dataset's path as the ClickHouse server sees it (relative: to its user_files)")
    p.add_argument("--days", type=int, default=3, help="days to generate when the dataset folder has none")
    a = p.parse_args(argv)
    if not (a.dataset / "manifest.json").exists():
        manifest = generate(a.dataset, days=a.days)
        print(f"generated {a.days} days from {manifest['start']} into {a.dataset}", flush=True)
    counts = seed(a.dataset, dict(os.environ), a.clickhouse_dataset)
    print(json.dumps(counts, indent=2))
    return 0 if counts else 1


if __name__ == "__main__":
    sys.exit(main())
