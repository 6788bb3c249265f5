"""``make bench``: throughput and peak memory of the project's paths against raw baselines.

Each measured run is a fresh process (``bench.worker``) so its peak RSS is its
own; every benchmark reports the median of several runs and is compared with a
raw baseline measured in the same session, because ratios survive noisy machines
where absolute figures do not.  Results: printed and written to bench/results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from sandbox.__main__ import down, up
from sandbox.demo import read_env
from sandbox.generator import generate

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
DAY = "2026-11-10"
COMPANY_ROWS = {"bench1m": 1_000_000, "bench3m": 3_000_000}


def fill_botslovers(env: dict[str, str], company: str, rows: int) -> None:
    """``rows`` realistic messages (≈300 bytes of text, the seed's columns) spread over one day."""
    import clickhouse_connect

    from chat_ingest.sources.botslovers import MESSAGES
    from sandbox.stack import clickhouse_ddl

    port = int(env["SANDBOX_CLICKHOUSE_URL"].rsplit(":", 1)[1])
    client = clickhouse_connect.get_client(host="127.0.0.1", port=port, username="admin",
                                           password=env["SANDBOX_CLICKHOUSE_ADMIN_PASSWORD"],
                                           send_receive_timeout=1800)
    table = f"messages_{company}"
    client.command(f"DROP TABLE IF EXISTS {table}")
    client.command(clickhouse_ddl(MESSAGES, table))
    client.command(
        f"INSERT INTO {table} SELECT "
        "concat('user-', toString(number % 50000)), "
        "['user', 'bot', 'human', 'system'][number % 4 + 1], "
        "generateUUIDv4(number), "
        f"toDateTime('{DAY} 00:00:00', 'UTC') + intDiv(number * 86400, {rows}), "
        "['web', 'whatsapp'][number % 2 + 1], "
        "concat('session-', toString(intDiv(number, 12))), "
        "['inbound', 'outbound'][number % 2 + 1], ['inbound', 'outbound'][number % 2 + 1], "
        "concat('Hi, my order #', toString(number % 99991), ' has not arrived; mail me at user', "
        "toString(number % 997), '@example.com or call +34 600 ', toString(number % 999), ' 123. ', "
        "randomPrintableASCII(200)), "
        "['es', 'en'][number % 2 + 1] "
        f"FROM numbers({rows})"
    )


def measure(kind: str, env: dict[str, str], company: str, runs: int) -> dict:
    results = []
    for _ in range(runs):
        proc = subprocess.run([sys.executable, "-m", "bench.worker", kind, "--company", company, "--day", DAY],
                              env={**os.environ, **env, "PYTHONPATH": f"{REPO / 'plugins'}:{REPO}"},
                              capture_output=True, text=True, cwd=REPO, timeout=3600)
        if proc.returncode:
            raise RuntimeError(f"{kind} failed:\n{proc.stderr[-3000:]}")
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    seconds = statistics.median(r["seconds"] for r in results)
    rows = results[0]["rows"]
    return {"rows": rows, "seconds": seconds, "rows_per_s": round(rows / seconds),
            "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in results), "runs": results}


def reset_staging(env: dict[str, str]) -> None:
    import psycopg

    with psycopg.connect(env["CHAT_INGEST_WAREHOUSE_DSN"], autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS staging.botslovers_messages")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="100k rows instead of 1M/3M (smoke run)")
    a = p.parse_args(argv)
    sizes = {"bench100k": 100_000} if a.quick else COMPANY_ROWS
    root = BENCH_DIR / ".work"
    dataset = root / "dataset"
    if not (dataset / "manifest.json").exists():
        generate(dataset, days=1, per_day=2)
    if up(root, dataset, 1, seed=7, bad_records=0.0, timeout=300):
        return 1
    try:
        env = read_env(root / "env")
        env["AIRFLOW_HOME"] = str(root / "airflow")
        os.environ.update(env)
        results = {}
        for company, rows in sizes.items():
            print(f"filling {rows:,} Botslovers messages ...", flush=True)
            fill_botslovers(env, company, rows)
            reset_staging(env)
            baseline = measure("botslovers-baseline", env, company, a.runs)
            project = []
            for _ in range(a.runs):  # every run lands the day into an empty table, like a first load
                reset_staging(env)
                project.append(measure("botslovers-project", env, company, 1))
            proj = {"rows": project[0]["rows"], "seconds": statistics.median(r["seconds"] for r in project),
                    "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in project)}
            proj["rows_per_s"] = round(proj["rows"] / proj["seconds"])
            results[f"botslovers_messages_{rows // 1000}k"] = {
                **proj, "baseline": {k: baseline[k] for k in ("rows", "seconds", "rows_per_s", "peak_rss_mb")},
                "ratio": round(proj["rows_per_s"] / baseline["rows_per_s"], 3),
            }
        keys = list(results)
        if len(keys) == 2:
            small, large = results[keys[0]], results[keys[1]]
            results["botslovers_scaling"] = {
                "rss_ratio": round(large["peak_rss_mb"] / small["peak_rss_mb"], 3),
                "time_ratio": round(large["seconds"] / small["seconds"], 3),
                "targets": {"rss_ratio": "<= 1.2", "time_ratio": "<= 3.3"},
            }
        results["_meta"] = {"runs": a.runs, "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                            "cpus": os.cpu_count()}
        (BENCH_DIR / "results.json").write_text(json.dumps(results, indent=2))
        print(f"\n{'benchmark':32} {'rows':>9} {'s':>7} {'rows/s':>9} {'RSS MB':>7} {'base rows/s':>11} {'ratio':>6}")
        for name, r in results.items():
            if "baseline" in r:
                print(f"{name:32} {r['rows']:>9} {r['seconds']:>7.1f} {r['rows_per_s']:>9} {r['peak_rss_mb']:>7.0f} "
                      f"{r['baseline']['rows_per_s']:>11} {r['ratio']:>6.2f}")
        if "botslovers_scaling" in results:
            print("3M vs 1M:", results["botslovers_scaling"])
        return 0
    finally:
        down(root)


if __name__ == "__main__":
    sys.exit(main())
