"""What a run costs beyond its data: the daily run through the real scheduler against Airflow's own floor.

``airflow_floor`` and ``daily_run`` operate the sandbox as ``make demo`` does (api-server, scheduler,
dag-processor, triggerer on the LocalExecutor; unpausing the DAGs makes the scheduler start
yesterday's daily run of every ingestion DAG, whose passed validations trigger the reporting DAG),
each in a fresh sandbox of the default dataset.  The floor runs the same DAGs with no task working on
data (:mod:`bench.floor`, a task policy of the floor's services alone; same task ids, mapping, pools,
outlets): validations and reporting rebuilds do nothing, and landings only note their window's days as
changed, so the reporting runs map a ``rebuild`` per partition as the real runs' do.  That is what
Airflow itself costs on this machine for the real shape.  ``validate_table`` compares the task
instances of the two runs: ``validate_messages`` of the A8 run, cleared after the run and run again
alone by the scheduler (three times, the median), against its no-op twin run alone the same way (in
the daily run eighteen validations start together on two cores, and their medians are reported too).
``dag_parse`` times each
DAG file's parse with 2, 20 and 200 tenants per source, and ``tenants_scaling`` runs the Botslovers
floor with that many tenants configured.  ``backfill_30_days`` (``--only backfill``; about an hour on two
cores) loads a month of the default dataset the way ``make demo`` loads its days, against the floor.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import yaml

from bench.floor import SETTINGS as FLOOR_SETTINGS
from sandbox.__main__ import down, up
from sandbox.demo import INGESTION_DAGS, REPORTING_DAG, reporting_busy
from sandbox.services import Airflow, Supervisor, api_token, free_port, login, read_env, ui_env

REPO = Path(__file__).resolve().parents[1]
DAG_FILES = {dag_id: REPO / "dags" / f"{dag_id}.py" for dag_id in (*INGESTION_DAGS, REPORTING_DAG)}
TENANT_COUNTS = (2, 20, 200)
#: Where each source's tenants are listed in sources.yaml.
TENANT_KEYS = {"botslovers": "companies", "a8": "bots", "ultimate": "bots", "unless": "websites"}


def _wait(what: str, done, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not within {timeout:.0f}s")
        time.sleep(2)


def daily_run(root: Path, *, noop: bool, ingestion: tuple[str, ...] = INGESTION_DAGS, reporting: bool = True,
              tenants: int | None = None, days: int = 1, timeout: float = 3600) -> dict:
    """Yesterday's scheduled run of the ``ingestion`` DAGs (and the reporting runs they trigger), in a
    fresh sandbox: wall seconds from unpausing to the last run's end, and every task instance.
    ``tenants``: configure that many tenants per source instead of the dataset's (no-op runs only:
    the stand-ins hold the dataset's).  ``days`` > 1: a dataset of that many days, the days before
    yesterday loaded as ``make demo`` does, by ``airflow backfill create`` (one run of a DAG at a time,
    in order; the four DAGs side by side)."""
    if root.exists():  # a previous run's metadata database already holds yesterday's runs: nothing would run
        down(root)
        shutil.rmtree(root)
    if up(root, None, days, seed=7, bad_records=0.0, timeout=300, owned=True):
        raise RuntimeError(f"the sandbox in {root} did not start")
    try:
        env = ui_env({**os.environ, **read_env(root / "env")}, free_port())
        if noop:  # the floor's task policy, in every Airflow process of this run (bench.floor)
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(FLOOR_SETTINGS), str(REPO), env.get("PYTHONPATH")]))
        if tenants:
            env["CHAT_INGEST_CONFIG"] = str(scaled_config(Path(env["CHAT_INGEST_CONFIG"]), tenants, root))
        airflow = Airflow(env)
        dag_ids = [*ingestion, *([REPORTING_DAG] if reporting else [])]
        since = dt.datetime.now(dt.timezone.utc)
        with Supervisor(env, root / "logs"):
            _wait("the DAGs parsed", lambda: airflow.parsed_since(dag_ids, since), 600)
            for dag_id in dag_ids:
                airflow.run("dags", "unpause", dag_id)
            if days > 1:
                first, last = (dt.date.fromisoformat(env[f"SANDBOX_DATASET_{edge}"]) for edge in ("START", "END"))
                for dag_id in ingestion:  # the day that has its scheduled run is skipped
                    airflow.backfill(dag_id, first, last)

            def ended() -> bool:
                with psycopg.connect(airflow.metadata_dsn) as conn:
                    states = conn.execute("SELECT dag_id, state FROM dag_run WHERE dag_id = ANY(%s)",
                                          (list(ingestion),)).fetchall()
                    busy = reporting_busy(conn)
                    reported = conn.execute("SELECT EXISTS (SELECT FROM dag_run WHERE dag_id = %s)",
                                            (REPORTING_DAG,)).fetchone()[0]
                return (len(states) == len(ingestion) * days and all(s in ("success", "failed") for _, s in states)
                        and not busy and (reported or not reporting))

            _wait("the daily runs and their reporting runs ended", ended, timeout)
            with psycopg.connect(airflow.metadata_dsn) as conn:
                # the database's clock throughout: this process's may run at another rate
                runs = conn.execute("SELECT dag_id, state, queued_at, end_date FROM dag_run ORDER BY id").fetchall()
                tasks = conn.execute(
                    "SELECT dag_id, task_id, map_index, state, extract(epoch FROM end_date - start_date) "
                    "FROM task_instance WHERE end_date IS NOT NULL").fetchall()
                mapping = conn.execute(  # per DAG run: its batches known to its first load queued
                    "SELECT max(d) FROM (SELECT extract(epoch FROM min(l.queued_dttm) - max(b.end_date)) AS d "
                    "FROM task_instance l JOIN task_instance b ON b.dag_id = l.dag_id AND b.run_id = l.run_id "
                    "WHERE b.task_id = 'batch_tenants' AND l.task_id LIKE 'load%%' GROUP BY l.dag_id, l.run_id) r"
                ).fetchone()[0]
            # then one validate task alone (its success triggers the reporting DAG again: not counted)
            solo = solo_task_seconds(airflow, "a8_ingest", "validate_messages") \
                if "a8_ingest" in ingestion and days == 1 else None
            with psycopg.connect(env["CHAT_INGEST_WAREHOUSE_DSN"]) as conn:
                landing = [float(s) for (s,) in conn.execute(
                    "SELECT sum(duration_seconds) FROM audit.load_log WHERE source = 'botslovers' GROUP BY tenant"
                )] if not noop else []
    finally:
        down(root)
    failed = [(dag_id, state) for dag_id, state, *_ in runs if state != "success"]
    if failed:
        raise RuntimeError(f"runs did not succeed: {failed}; logs in {root / 'logs'}")
    took = max(end for *_, end in runs) - min(queued for _, _, queued, _ in runs)
    return {"seconds": round(took.total_seconds(), 1),
            "dag_runs": len(runs), "task_instances": len(tasks),
            "seconds_to_map_loads": round(float(mapping), 1) if mapping is not None else None,
            "solo_validate_task_seconds": solo,
            "botslovers_landing_seconds_per_tenant": _summary(landing) if landing else None,
            "task_seconds": {kind: _summary([s for _, task_id, _, _, s in tasks if _kind(task_id) == kind])
                             for kind in ("load", "validate", "other")}}


def scaled_config(sources_yaml: Path, tenants: int, folder: Path) -> Path:
    """A copy of ``sources_yaml`` with ``tenants`` made-up tenants per source."""
    config = yaml.safe_load(sources_yaml.read_text())
    for source, key in TENANT_KEYS.items():
        config[source][key] = [f"{source}-tenant-{i:03d}" for i in range(tenants)]
    path = folder / f"sources-{tenants}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def solo_task_seconds(airflow: Airflow, dag_id: str, task_id: str, repeats: int = 3, timeout: float = 600) -> float:
    """One task of the ended daily run cleared (as the UI's Clear does, through the REST API) and run
    again by the scheduler on its own, nothing else running, ``repeats`` times: the median of its
    durations, in seconds (one run of a one-second task is mostly noise)."""
    import requests

    def attempt(run_id: str) -> tuple:
        with psycopg.connect(airflow.metadata_dsn) as conn:
            return conn.execute("SELECT state, try_number, extract(epoch FROM end_date - start_date) "
                                "FROM task_instance WHERE dag_id = %s AND run_id = %s AND task_id = %s",
                                (dag_id, run_id, task_id)).fetchone()

    with psycopg.connect(airflow.metadata_dsn) as conn:
        run_id = conn.execute("SELECT run_id FROM dag_run WHERE dag_id = %s ORDER BY id DESC LIMIT 1",
                              (dag_id,)).fetchone()[0]
    base = airflow.env["AIRFLOW__API__BASE_URL"]
    token = api_token(base, *login(airflow.env))

    def idle() -> bool:  # the reporting run the previous attempt triggered has ended too
        with psycopg.connect(airflow.metadata_dsn) as conn:
            return not conn.execute("SELECT 1 FROM dag_run WHERE state IN ('queued', 'running')").fetchone()

    durations: list[float] = []
    for _ in range(repeats):
        _wait("every DAG run ended", idle, timeout)
        tried = attempt(run_id)[1]
        cleared = requests.post(f"{base}/api/v2/dags/{dag_id}/clearTaskInstances", timeout=60,
                                headers={"Authorization": f"Bearer {token}"},
                                json={"dag_run_id": run_id, "task_ids": [task_id], "dry_run": False,
                                      "only_failed": False, "reset_dag_runs": True})
        if not cleared.ok:
            raise RuntimeError(f"clearing {dag_id}.{task_id}: {cleared.status_code} {cleared.text[:300]}")
        found: list[float] = []

        def done(tried: int = tried, found: list[float] = found) -> bool:
            state, tries, seconds = attempt(run_id)
            if state == "success" and tries > tried and seconds is not None:
                found.append(float(seconds))
            return bool(found)

        _wait(f"{dag_id}.{task_id} cleared and run again", done, timeout)
        durations.append(found[0])
    return round(statistics.median(durations), 2)


def _kind(task_id: str) -> str:
    return "load" if task_id.startswith("load") else "validate" if task_id.startswith("validate") else "other"


def _summary(seconds: list) -> dict:
    seconds = [float(s) for s in seconds]  # PostgreSQL's numeric arrives as Decimal
    return {"count": len(seconds), "median": round(statistics.median(seconds), 2) if seconds else None,
            "max": round(max(seconds), 2) if seconds else None}


def dag_parse_seconds(sources_yaml: Path, work: Path) -> dict:
    """Seconds to parse each DAG file (Airflow's SDK already imported, as in the dag-processor) with 2,
    20 and 200 tenants per source, each in a fresh process."""
    out: dict[str, dict[int, float]] = {}
    for count in TENANT_COUNTS:
        probe = ("import json, runpy, sys, time\nimport airflow.sdk\nfound = {}\n"
                 "for dag_id, path in json.loads(sys.argv[1]).items():\n"
                 "    t = time.perf_counter(); runpy.run_path(path); found[dag_id] = time.perf_counter() - t\n"
                 "print(json.dumps(found))")
        done = subprocess.run([sys.executable, "-c", probe, json.dumps({k: str(v) for k, v in DAG_FILES.items()})],
                              env={**os.environ, "CHAT_INGEST_CONFIG": str(scaled_config(sources_yaml, count, work)),
                                   "PYTHONPATH": f"{REPO / 'plugins'}{os.pathsep}{REPO}"},
                              capture_output=True, text=True, check=True, cwd=REPO)
        for dag_id, seconds in json.loads(done.stdout.strip().splitlines()[-1]).items():
            out.setdefault(dag_id, {})[count] = round(seconds, 3)
    return out


def tenants_scaling(work: Path, landing_per_tenant: float) -> dict:
    """The Botslovers daily run's floor with 2, 20 and 200 tenants: wall seconds, task instances and
    seconds to map the loads; the per-tenant slope next to a tenant's data landing time."""
    runs = {count: daily_run(work / f"orchestration-tenants-{count}", noop=True, ingestion=("botslovers_ingest",),
                             reporting=False, tenants=count) for count in TENANT_COUNTS}
    low, high = min(TENANT_COUNTS), max(TENANT_COUNTS)
    slope = (runs[high]["seconds"] - runs[low]["seconds"]) / (high - low)
    mid = TENANT_COUNTS[1]
    middle = (runs[mid]["seconds"] - runs[low]["seconds"]) / (mid - low)
    # linear: the slope over 2..20 and over 2..200 agree within a factor of 2 (or both under a second)
    linear = slope <= max(2 * middle, 1.0)
    return {"runs": {str(count): {k: r[k] for k in ("seconds", "task_instances", "seconds_to_map_loads")}
                     for count, r in runs.items()},
            "seconds_per_tenant": round(slope, 3), "landing_seconds_per_tenant": landing_per_tenant,
            "target": {"seconds_per_tenant": "<= landing_seconds_per_tenant", "growth": "linear"},
            "met": linear and slope <= landing_per_tenant}


#: Days of the backfill benchmark: a month loaded after an outage.
BACKFILL_DAYS = 30


def bench_backfill(work: Path, days: int = BACKFILL_DAYS) -> dict:
    """``days`` days of the default dataset (2 tenants per source) through ``airflow backfill create``,
    every ingestion DAG and the reporting runs they trigger, against the same runs of the floor."""
    floor = daily_run(work / "orchestration-backfill-floor", noop=True, days=days, timeout=6 * 3600)
    real = daily_run(work / "orchestration-backfill", noop=False, days=days, timeout=6 * 3600)
    ratio = round(real["seconds"] / floor["seconds"], 3)
    return {f"backfill_{days}_days": {
        "days": days, "dag_runs": real["dag_runs"], "task_instances": real["task_instances"],
        "seconds": real["seconds"], "minutes": round(real["seconds"] / 60, 1),
        "floor": {k: floor[k] for k in ("seconds", "dag_runs", "task_instances")},
        "floor_minutes": round(floor["seconds"] / 60, 1), "task_seconds": real["task_seconds"],
        "time_ratio": ratio, "target": {"time_ratio": "<= 1.5"}, "met": ratio <= 1.5}}


def bench_orchestration(work: Path) -> dict:
    floor = daily_run(work / "orchestration-floor", noop=True)
    real = daily_run(work / "orchestration-daily", noop=False)
    ratio = round(real["seconds"] / floor["seconds"], 3)
    validate, noop = real["solo_validate_task_seconds"], floor["solo_validate_task_seconds"]
    validate_ratio = round(validate / noop, 3)
    parse = dag_parse_seconds(work / "orchestration-daily" / "sources.yaml", work)
    slowest = max(seconds[max(TENANT_COUNTS)] for seconds in parse.values())
    return {
        "airflow_floor": {**floor, "met": True, "target": "the floor itself (no target)"},
        "daily_run": {**real, "floor_seconds": floor["seconds"], "time_ratio": ratio,
                      "target": {"time_ratio": "<= 1.5"}, "met": ratio <= 1.5},
        "validate_table": {"validate_task_seconds": validate, "noop_task_seconds": noop, "time_ratio": validate_ratio,
                           "target": {"time_ratio": "<= 2"}, "met": validate_ratio <= 2},
        "dag_parse": {"seconds": parse, "target": {"seconds_at_200_tenants": "<= 2"}, "met": slowest <= 2},
        "tenants_scaling": tenants_scaling(work, real["botslovers_landing_seconds_per_tenant"]["median"]),
    }
