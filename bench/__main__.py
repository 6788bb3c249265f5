"""``make bench``: throughput and peak memory of the project's paths against raw baselines.

Each measured run is a fresh process (``bench.worker``) so its peak RSS is its
own; every benchmark reports the median of several runs and is compared with a
raw baseline measured in the same session, because ratios survive noisy machines
where absolute figures do not.  Results: printed and written to bench/results.json,
each with its target and whether the run met it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bench.volumes import fill_a8, fill_botslovers, fill_ultimate, fill_unless, run_sql
from bench.worker import A8_TABLES
from chat_ingest.sources import a8, botslovers, ultimate, unless
from sandbox.__main__ import down, up
from sandbox.generator import generate
from sandbox.services import read_env

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
BENCHMARKS = ("botslovers", "a8", "ultimate", "unless", "reporting", "orchestration", "backfill")
TODAY = dt.datetime.now(dt.timezone.utc).date()
#: The day the row benchmarks load: yesterday, the newest day Ultimate exports.
DAY = TODAY - dt.timedelta(days=1)
A8_BOT, ULTIMATE_BOT, UNLESS_WEBSITE = "bench-a8", "bench-ult", "bench-web"
#: Conversations per tenant per day of the reporting benchmark's smaller dataset (the larger has twice).
REPORTING_PER_DAY, REPORTING_DAYS = 40, 30
#: Every source's peak RSS in a run, imports included (issue #22: flat, and no more than this).
MAX_RSS_MB = 300
#: Runs of each size of the Botslovers scaling pair at least (``--runs`` if more).
SCALING_RUNS = 5


# -- measuring -----------------------------------------------------------------------------------

def run_worker(kind: str, env: dict[str, str], *, tenant: str = "", start: dt.date = DAY,
               end: dt.date = TODAY) -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.worker", kind, "--tenant", tenant, "--start", str(start), "--end", str(end)],
        env={**os.environ, **env, "PYTHONPATH": f"{REPO / 'plugins'}:{REPO}"},
        capture_output=True, text=True, cwd=REPO, timeout=3600)
    if proc.returncode:
        raise RuntimeError(f"{kind} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def settle(env: dict[str, str]) -> None:
    """Start a run from the same quiet machine as every other run, project and baseline alike.

    Background work wakes up on its own clock: left alone, autovacuum works through the millions
    of rows an earlier run (or benchmark) wrote, and ClickHouse merges the parts of a large fill,
    while a later run is being timed on a machine of two cores (it cost one Ultimate median a
    third of its speed).  So autovacuum is switched off on the bench's own server and its work done
    here instead, untimed: the databases are vacuumed and analyzed, a checkpoint writes the dirty
    buffers, the kernel writes the dirty pages of the page cache to disk (the sandbox runs with
    ``fsync=off``, so an earlier run's gigabytes were still being written back during the next),
    and the run waits until the CPUs are idle.  (A 30-second run otherwise met autovacuum
    of the very rows it was loading, and a 10-second one did not: time ×3.7 from 1M to 3M rows.)
    """
    run_sql(env["CHAT_INGEST_WAREHOUSE_DSN"], "ALTER SYSTEM SET autovacuum = off")
    run_sql(env["CHAT_INGEST_WAREHOUSE_DSN"], "SELECT pg_reload_conf()")
    for dsn in (env["CHAT_INGEST_WAREHOUSE_DSN"], env["AIRFLOW_CONN_A8_TIMESCALE"]):
        run_sql(dsn, "VACUUM (ANALYZE)")
    run_sql(env["CHAT_INGEST_WAREHOUSE_DSN"], "CHECKPOINT")
    os.sync()
    wait_for_idle_cpus()


def wait_for_idle_cpus(busy_below: float = 0.15, timeout_seconds: float = 60.0) -> None:
    """Wait until the machine's CPUs are busy less than ``busy_below`` over a second (Linux's
    ``/proc/stat``), or ``timeout_seconds`` passed (then say so: that run may be slower)."""
    def ticks() -> tuple[int, int]:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = values[3] + values[4]  # idle + iowait
        return sum(values) - idle, sum(values)

    deadline = time.monotonic() + timeout_seconds
    busy, total = ticks()
    while time.monotonic() < deadline:
        time.sleep(1.0)
        busy_now, total_now = ticks()
        share = (busy_now - busy) / max(total_now - total, 1)
        if share < busy_below:
            return
        busy, total = busy_now, total_now
    print(f"the machine stayed busy for {timeout_seconds:.0f} s; timing the run anyway", flush=True)


def measure(kind: str, env: dict[str, str], runs: int, before: Callable[[], None] | None = None, **kw) -> dict:
    """Median seconds and peak RSS of ``runs`` fresh-process runs (``before`` runs ahead of each,
    then :func:`settle`)."""
    return measure_in_turn(env, runs, [(kind, kw)], before)[0]


def measure_in_turn(env: dict[str, str], runs: int, variants: list[tuple],
                    before: Callable[[], None] | None = None) -> list[dict]:
    """:func:`measure` of several runs (worker kind and keywords, and a sandbox's env of its own if it
    has one) taken in turn: round after round, each once, so the runs a ratio compares meet the same
    machine (a shared machine's speed drifts over minutes: measured minutes apart, 1M and 3M rows
    moved their time ratio by a tenth)."""
    found: list[list[dict]] = [[] for _ in variants]
    for _ in range(runs):
        for results, (kind, kw, *own_env) in zip(found, variants, strict=True):
            run_env = own_env[0] if own_env else env
            if before:
                before()
            settle(run_env)
            results.append(run_worker(kind, run_env, **kw))
    return [_medians(results) for results in found]


def _medians(results: list[dict]) -> dict:
    seconds = statistics.median(r["seconds"] for r in results)
    return {"rows": results[0]["rows"], "seconds": seconds, "rows_per_s": round(results[0]["rows"] / seconds),
            "import_seconds": statistics.median(r["import_seconds"] for r in results),
            "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in results),
            "runs_seconds": [r["seconds"] for r in results]}


def baseline_and_project(source: str, env: dict[str, str], runs: int, before: Callable[[], None],
                         **kw) -> tuple[dict, dict]:
    """A source's baseline and project runs, measured in turn (see :func:`measure_in_turn`);
    ``before`` makes each project run a first load."""
    baseline, project = measure_in_turn(env, runs, [(f"{source}-baseline", kw), (f"{source}-project", kw)],
                                        before)
    return baseline, project


def against_baseline(project: dict, baseline: dict, min_ratio: float, max_rss_mb: float | None = None) -> dict:
    ratio = round(project["rows_per_s"] / baseline["rows_per_s"], 3)
    target = {"ratio": f">= {min_ratio}"}
    met = ratio >= min_ratio
    if max_rss_mb is not None:
        target["peak_rss_mb"] = f"<= {max_rss_mb}"
        met = met and project["peak_rss_mb"] <= max_rss_mb
    return {**project, "baseline": baseline, "ratio": ratio, "target": target, "met": met}


def sql(env: dict[str, str], statement: str, params=()):
    return run_sql(env["CHAT_INGEST_WAREHOUSE_DSN"], statement, params)


def drop_staging(env: dict[str, str], *specs) -> Callable[[], None]:
    """A reset that makes the next project run a first load: its staging tables and its watermarks gone."""
    def reset() -> None:
        for spec in specs:
            for table in filter(None, (spec.staging_table, spec.days_table)):
                sql(env, f"DROP TABLE IF EXISTS staging.{table}")
        if sql(env, "SELECT to_regclass('audit.watermarks') IS NOT NULL")[0][0]:  # none before a first load
            sql(env, "DELETE FROM audit.watermarks WHERE source = ANY(%s)", ([spec.source for spec in specs],))
    return reset


def last_load(env: dict[str, str], source: str, table: str) -> dict:
    """What the newest load of a table did (the rerun check: nothing landed, nothing deleted)."""
    row = sql(env, "SELECT rows_extracted, rows_landed, rows_unchanged, rows_deleted FROM audit.load_log "
                   "WHERE source = %s AND table_name = %s ORDER BY load_id DESC LIMIT 1", (source, table))[0]
    return dict(zip(("rows_extracted", "rows_landed", "rows_unchanged", "rows_deleted"), row, strict=True))


def rerun(first: dict, again: dict, load: dict) -> dict:
    ratio = round(again["seconds"] / first["seconds"], 3)
    rewritten = load["rows_landed"] + load["rows_deleted"]
    return {"first_seconds": first["seconds"], "rerun_seconds": again["seconds"], "time_ratio": ratio,
            "rerun_load": load, "target": {"time_ratio": "<= 0.5", "rows_rewritten": 0},
            "met": ratio <= 0.5 and rewritten == 0}


# -- the benchmarks ------------------------------------------------------------------------------

def bench_botslovers(env: dict[str, str], runs: int, quick: bool) -> dict:
    """1M and 3M messages and their baselines, measured in turn (their ratios are the targets), then
    a rerun of the 1M day.  A ratio of two medians is noisier than either, so the pair gets at least
    :data:`SCALING_RUNS` runs."""
    results = {}
    sizes = {"bench20k": 20_000} if quick else {"bench3m": 3_000_000, "bench1m": 1_000_000}
    for company, rows in sizes.items():
        print(f"botslovers: filling {rows:,} messages ...", flush=True)
        fill_botslovers(env, company, rows, DAY)
    reset = drop_staging(env, botslovers.TABLES["messages"])
    reset()
    pair_runs = runs if quick else max(runs, SCALING_RUNS)
    # each size's baseline right before its project run, the smallest size last in every round:
    # its day is the one loaded for the rerun
    measured = iter(measure_in_turn(env, pair_runs, [(f"botslovers-{kind}", {"tenant": company}) for company in sizes
                                                     for kind in ("baseline", "project")], before=reset))
    for rows, baseline, project in zip(sizes.values(), measured, measured, strict=True):
        results[f"botslovers_messages_{rows // 1000}k"] = against_baseline(project, baseline, 0.5, MAX_RSS_MB)
    smallest = list(sizes)[-1]
    again = measure("botslovers-project", env, runs, tenant=smallest)
    first = results[f"botslovers_messages_{sizes[smallest] // 1000}k"]
    results["botslovers_rerun"] = rerun(first, again, last_load(env, "botslovers", "messages"))
    if not quick:
        small, large = results["botslovers_messages_1000k"], results["botslovers_messages_3000k"]
        rss, seconds = large["peak_rss_mb"] / small["peak_rss_mb"], large["seconds"] / small["seconds"]
        results["botslovers_scaling"] = {"rss_ratio": round(rss, 3), "time_ratio": round(seconds, 3),
                                         "runs": pair_runs,
                                         "target": {"rss_ratio": "<= 1.2", "time_ratio": "<= 3.3"},
                                         "met": rss <= 1.2 and seconds <= 3.3}
    return results


def bench_a8(env: dict[str, str], runs: int, quick: bool) -> dict:
    rows = 20_000 if quick else 1_000_000
    print(f"a8: filling {rows:,} messages and chat states ...", flush=True)
    fill_a8(env, A8_BOT, rows, DAY)
    baseline, project = baseline_and_project("a8", env, runs, drop_staging(env, *(a8.TABLES[t] for t in A8_TABLES)),
                                             tenant=A8_BOT)
    again = measure("a8-project", env, runs, tenant=A8_BOT)  # the same day again: staging holds it
    loads = [last_load(env, "a8", table) for table in A8_TABLES]
    return {f"a8_messages_chat_state_{rows // 1000}k": against_baseline(project, baseline, 0.6, MAX_RSS_MB),
            "a8_rerun": rerun(project, again, {key: sum(load[key] for load in loads) for key in loads[0]})}


def bench_ultimate(env: dict[str, str], runs: int, quick: bool) -> dict:
    conversations = 5_000 if quick else 200_000
    print(f"ultimate: writing a day of {conversations:,} conversations ...", flush=True)
    size_mb = fill_ultimate(env, ULTIMATE_BOT, conversations, DAY).stat().st_size / 1e6
    baseline, project = baseline_and_project("ultimate", env, runs, drop_staging(env, *ultimate.TABLES.values()),
                                             tenant=ULTIMATE_BOT)
    return {f"ultimate_{conversations // 1000}k_conversations": {
        **against_baseline(project, baseline, 0.6, MAX_RSS_MB), "file_mb": round(size_mb, 1)}}


def bench_unless(env: dict[str, str], runs: int, quick: bool) -> dict:
    from chat_ingest.config import load_config  # CHAT_INGEST_CONFIG: the bench sandbox's

    objects = 1_000 if quick else 20_000
    print(f"unless: uploading {objects:,} objects ...", flush=True)
    fill_unless(env, load_config()["unless"]["account"], UNLESS_WEBSITE, objects)
    tomorrow = TODAY + dt.timedelta(days=1)
    window = {"tenant": UNLESS_WEBSITE, "start": TODAY, "end": tomorrow}  # the objects were written today
    baseline, project = baseline_and_project("unless", env, runs, drop_staging(env, *unless.TABLES.values()),
                                             **window)
    again = measure("unless-project", env, runs, **window)
    return {f"unless_{objects // 1000}k_objects": against_baseline(project, baseline, 0.5, MAX_RSS_MB),
            "unless_rerun": rerun(project, again, last_load(env, "unless", "conversations"))}


def bench_reporting(runs: int, quick: bool, work: Path) -> dict:
    """Rebuild 30 days of every source at one volume and at twice that volume: two sandboxes up side
    by side, their rebuilds measured in turn.  (Measured one sandbox after the other, minutes apart,
    two runs of the same reporting SQL gave ×1.66 and ×2.58: the machine's drift, not the SQL.)"""
    days = 3 if quick else REPORTING_DAYS
    sandboxes: dict[int, tuple[Path, dict[str, str], dict[str, dt.date]]] = {}
    try:
        for scale in (1, 2):
            root = work / f"reporting-{scale}x"
            shutil.rmtree(root, ignore_errors=True)  # a fresh warehouse and dataset each run
            dataset = root / "dataset"
            generate(dataset, days=days, per_day=REPORTING_PER_DAY * scale)
            if up(root, dataset, days, seed=7, bad_records=0.0, timeout=600, owned=True, airflow=False):
                raise RuntimeError(f"the reporting sandbox ({scale}x) did not start")
            env = {**read_env(root / "env"), "AIRFLOW_HOME": str(root / "airflow")}
            first = dt.date.fromisoformat(env["SANDBOX_DATASET_START"])
            span = {"start": first, "end": dt.date.fromisoformat(env["SANDBOX_DATASET_END"]) + dt.timedelta(days=1)}
            sandboxes[scale] = root, env, span
            print(f"reporting {scale}x: landing {days} days of every source ...", flush=True)
            run_worker("land-all", env, **span)
        for _, env, _ in sandboxes.values():  # both servers quiet (autovacuum off) before either is timed
            settle(env)
        one, two = measure_in_turn(sandboxes[1][1], runs, [("reporting-rebuild", span, env)
                                                           for _, env, span in sandboxes.values()])
    finally:
        for root, _, _ in sandboxes.values():
            down(root)
    ratio = round(two["seconds"] / one["seconds"], 3)
    return {"reporting_rebuild_30_days": {
        "days": days, "sources": 4, "conversations": {"1x": one["rows"], "2x": two["rows"]},
        "seconds": {"1x": one["seconds"], "2x": two["seconds"]},
        "runs_seconds": {"1x": one["runs_seconds"], "2x": two["runs_seconds"]},
        "peak_rss_mb": {"1x": one["peak_rss_mb"], "2x": two["peak_rss_mb"]},
        "time_ratio": ratio, "target": {"time_ratio": "<= 2.2"}, "met": ratio <= 2.2}}


def print_table(results: dict) -> None:
    print(f"\n{'benchmark':34} {'rows':>9} {'s':>7} {'rows/s':>9} {'RSS MB':>7} {'base rows/s':>11} "
          f"{'ratio':>6}  target met")
    for name, r in results.items():
        if name.startswith("_"):
            continue
        if "baseline" in r:
            print(f"{name:34} {r['rows']:>9} {r['seconds']:>7.1f} {r['rows_per_s']:>9} {r['peak_rss_mb']:>7.0f} "
                  f"{r['baseline']['rows_per_s']:>11} {r['ratio']:>6.2f}  {'yes' if r.get('met') else 'NO'}")
        else:
            figures = {k: v for k, v in r.items() if k.endswith(("ratio", "seconds", "per_tenant"))}
            print(f"{name:34} {json.dumps(figures)}  {'yes' if r.get('met') else 'NO'}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="small volumes: proves every benchmark runs (smoke run)")
    p.add_argument("--only", nargs="+", choices=BENCHMARKS, default=list(BENCHMARKS))
    p.add_argument("--work", type=Path, default=BENCH_DIR / ".work", help="the sandboxes' folder")
    p.add_argument("--out", type=Path, default=BENCH_DIR / "results.json", help="where the results go")
    a = p.parse_args(argv)
    root = a.work.resolve()
    dataset = root / "dataset"
    if not (dataset / "manifest.json").exists():
        generate(dataset, days=1, per_day=2)
    results_path = a.out
    results = json.loads(results_path.read_text()) if results_path.exists() and a.only != list(BENCHMARKS) else {}

    def save(found: dict) -> None:
        """Write results.json after every benchmark, so a failure later keeps what was measured."""
        results.update(found)
        results["_meta"] = {"runs": a.runs, "quick": a.quick, "cpus": os.cpu_count(),
                            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                            "all_targets_met": all(r.get("met", False) for k, r in results.items()
                                                   if not k.startswith("_"))}
        results_path.write_text(json.dumps(results, indent=2))
        print_table(found)

    if "reporting" in a.only:  # its own two sandboxes, first: the longest setup fails early if it fails
        save(bench_reporting(a.runs, a.quick, root))
    # whole days through the real scheduler (fresh sandboxes, minutes): a --quick smoke run skips them
    # unless asked for by name
    if "orchestration" in a.only and (not a.quick or a.only != list(BENCHMARKS)):
        from bench.orchestration import bench_orchestration

        save(bench_orchestration(root))
    if "backfill" in a.only and (not a.quick or a.only != list(BENCHMARKS)):
        from bench.orchestration import BACKFILL_DAYS, bench_backfill

        save(bench_backfill(root, days=3 if a.quick else BACKFILL_DAYS))
    row_benchmarks = [b for b in a.only if b not in ("reporting", "orchestration", "backfill")]
    if row_benchmarks:
        if up(root, dataset, 1, seed=7, bad_records=0.0, timeout=300, owned=True, airflow=False):
            return 1
        try:
            env = {**read_env(root / "env"), "AIRFLOW_HOME": str(root / "airflow")}
            os.environ.update(env)
            for name in row_benchmarks:
                save(globals()[f"bench_{name}"](env, a.runs, a.quick))
        finally:
            down(root)
    print("\nall benchmarks:")
    print_table(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
