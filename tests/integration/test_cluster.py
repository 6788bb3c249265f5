"""Scale-out on Airflow's own engine: the sandbox on the CeleryExecutor with a real Redis and two
Celery workers (``make cluster``), one of them lost (SIGKILL of it and all it runs) in the middle of
a load.  Every run succeeds unaided, both workers ran tasks, the lost load was retried on the
survivor, and staging and reporting equal what a single process loading the same days produces.
Three of the four sources run there (see ``CLUSTERED``)."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import signal
import time

import psycopg
import pytest
import yaml

from sandbox.__main__ import down, up
from sandbox.debian import apt_install
from sandbox.demo import REPORTING_DAG, run_reporting, wait_for_runs, wait_until_every_run_ended
from sandbox.services import (
    COMPONENTS,
    REDIS_SERVER,
    Airflow,
    Supervisor,
    celery_cluster,
    free_port,
    read_env,
    session_processes,
    signal_all,
    ui_env,
)
from tests.support.reporting import REPORTING_TABLES
from tests.support.sandbox import (
    DAG_IDS,
    SANDBOX_ENV_PREFIXES,
    TEST_START,
    newcomer_env,
    outside_the_session_sandbox,
    staging_checksum,
)

pytestmark = pytest.mark.integration
DAYS = 1  # a backfill of one day, beside the daily run unpausing makes: enough runs to lose a worker in
#: The sources run on the cluster: a table-per-task source with a load per tenant (Botslovers), the
#: API source and the document source.  A8's eleven tables add task instances, not another way of running
#: them (its DAG runs end to end in test_a8, test_lineage and test_reliability, by `airflow dags test`).
CLUSTERED = ("botslovers", "ultimate", "unless")
CLUSTERED_DAGS = tuple(f"{source}_ingest" for source in CLUSTERED)


def checksums(env: dict[str, str]) -> dict[str, tuple]:
    """Staging of the clustered sources without lineage columns, and reporting, table by table."""
    from chat_ingest.sources import TABLES_BY_SOURCE

    class Warehouse:  # what staging_checksum needs of a sandbox
        def warehouse(self):
            return psycopg.connect(env["CHAT_INGEST_WAREHOUSE_DSN"], autocommit=True)

    sums: dict[str, tuple] = {spec.staging_table: staging_checksum(Warehouse(), spec)
            for source in CLUSTERED for spec in TABLES_BY_SOURCE[source].values()}
    with psycopg.connect(env["CHAT_INGEST_WAREHOUSE_DSN"]) as conn:
        for table in REPORTING_TABLES:
            sums[f"reporting.{table}"] = conn.execute(
                f"SELECT count(*), coalesce(md5(string_agg(r::text, '|' ORDER BY r::text)), '') "
                f"FROM reporting.{table} r").fetchone()
    return sums


def running_loads_on_worker_1(airflow: Airflow) -> list[tuple]:
    with psycopg.connect(airflow.metadata_dsn) as conn:
        return conn.execute("SELECT dag_id, run_id, task_id, map_index FROM task_instance WHERE state = 'running' "
                            "AND hostname = 'worker-1' AND task_id LIKE 'load%%'").fetchall()


@contextlib.contextmanager
def frozen(leader: int):
    """Every process of a component stopped (SIGSTOP) for the time, then let go on (SIGCONT)."""
    processes = session_processes(leader)
    signal_all(processes, signal.SIGSTOP)
    try:
        yield
    finally:
        signal_all(processes, signal.SIGCONT)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    reason = apt_install(["redis-server"], needed=[REDIS_SERVER])
    if reason:
        pytest.skip(reason)
    from sandbox.generator import generate

    root = tmp_path_factory.mktemp("cluster")
    generate(root / "dataset", seed=11, days=DAYS, start=TEST_START, per_day=12)
    with outside_the_session_sandbox():  # a sandbox of its own
        assert up(root, root / "dataset", DAYS, seed=11, bad_records=0.0, timeout=300, owned=True) == 0
    # The lost load is found when its heartbeats stop for the timeout, and retried after the first retry
    # delay: a minute or two each in the sandbox, seconds here (the test waits for both).
    config = yaml.safe_load((root / "sources.yaml").read_text())
    config["retries"] = {**config.get("retries", {}), "first_delay_seconds": 5}
    (root / "sources.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    env = ui_env({**newcomer_env(), **read_env(root / "env"),
                  "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "60"}, free_port())
    env, components, component_env = celery_cluster(env, root, workers=2)
    started = dt.datetime.now(dt.timezone.utc)
    supervisor = Supervisor(env, root / "logs", components, component_env).start()
    airflow = Airflow(env)
    try:
        deadline = time.monotonic() + 300
        while not airflow.parsed_since(list(DAG_IDS), started):
            assert time.monotonic() < deadline, supervisor.log_of("dag-processor").read_text()[-2000:]
            time.sleep(2)
        yield root, env, airflow, supervisor
    finally:
        supervisor.stop()
        down(root)


def test_a_backfill_spreads_over_two_celery_workers_and_survives_losing_one(cluster, monkeypatch):
    root, env, airflow, supervisor = cluster
    assert set(supervisor.components) == {*COMPONENTS, "redis", "worker-1", "worker-2"}
    first = dt.date.fromisoformat(env["SANDBOX_DATASET_START"])
    days = [first + dt.timedelta(days=i) for i in range(DAYS)]
    for dag_id in (*CLUSTERED_DAGS, REPORTING_DAG):
        airflow.run("dags", "unpause", dag_id)
    for dag_id in CLUSTERED_DAGS:
        airflow.backfill(dag_id, days[0], days[-1])

    deadline, lost = time.monotonic() + 600, None
    while lost is None:  # lose worker-1 in the middle of a load
        assert time.monotonic() < deadline, "worker-1 ran no load"
        if running_loads_on_worker_1(airflow):
            # freeze the worker first: a load that ends between seeing it and killing the worker would be
            # a load that was not lost; a frozen worker can no longer report one ended
            with frozen(supervisor.pid("worker-1")):
                time.sleep(2)  # an end already on its way to the api-server lands
                lost = next(iter(running_loads_on_worker_1(airflow)), None)
                if lost is not None:
                    supervisor.lose("worker-1")
        time.sleep(0.5)

    try:
        for dag_id in CLUSTERED_DAGS:
            wait_for_runs(airflow, dag_id, days, timeout=1500)
        states = wait_until_every_run_ended(airflow, CLUSTERED_DAGS, timeout=900)
        run_reporting(airflow, env["CHAT_INGEST_WAREHOUSE_DSN"], timeout=900)
    finally:
        for dag_id in DAG_IDS:
            airflow.run("dags", "pause", dag_id, check=False)
    assert all(found and set(found) == {"success"} for found in states.values()), states
    with psycopg.connect(airflow.metadata_dsn) as conn:
        hosts = {h for (h,) in conn.execute("SELECT DISTINCT hostname FROM task_instance WHERE state = 'success'")}
        retried = conn.execute("SELECT try_number, hostname, state FROM task_instance WHERE dag_id = %s "
                               "AND run_id = %s AND task_id = %s AND map_index = %s", lost).fetchone()
        slots = dict(conn.execute("SELECT pool, slots FROM slot_pool").fetchall())
        used = conn.execute("SELECT pool, start_date, end_date FROM task_instance WHERE pool LIKE '%%_vendor' "
                            "AND start_date IS NOT NULL AND end_date IS NOT NULL").fetchall()
        # unpausing also made each ingestion DAG's daily run (yesterday): the single process loads it too
        loaded = sorted({d for (d,) in conn.execute(
            "SELECT DISTINCT data_interval_start::date FROM dag_run WHERE dag_id = ANY(%s)", (list(CLUSTERED_DAGS),))})
    assert hosts == {"worker-1", "worker-2"}  # both ran tasks; none ran anywhere else
    validate_logs = [p.read_text()
                     for p in (root / "airflow" / "logs").glob("dag_id=*/run_id=*/task_id=validate_*/*.log")]
    assert any("Great Expectations: already imported" in log for log in validate_logs)
    assert not any("Great Expectations: importing it in this task" in log for log in validate_logs)
    assert retried[0] >= 2 and retried[1:] == ("worker-2", "success"), (lost, retried)
    assert set(days) <= set(loaded)
    for pool in {p for p, _, _ in used}:  # the vendor pools capped loads across both workers
        edges = sorted([(start, 1) for p, start, _ in used if p == pool]
                       + [(end, -1) for p, _, end in used if p == pool])
        running = [0]
        for _, step in edges:
            running.append(running[-1] + step)
        assert max(running) <= slots[pool], pool
    clustered = checksums(env)

    # the same days, landed and reported by one process
    from tests.support.reporting import build, land_day
    from tests.support.sandbox import Sandbox

    sandbox_env = read_env(root / "env")  # with the connections (the services read them from the database)
    for key, value in sandbox_env.items():
        if key.startswith(SANDBOX_ENV_PREFIXES):
            monkeypatch.setenv(key, value)
    sandbox = Sandbox(root, sandbox_env, root / "dataset",
                      json.loads((root / "dataset" / "manifest.json").read_text()))
    with sandbox.warehouse() as conn:
        conn.execute("DROP SCHEMA staging, audit, reporting CASCADE")
    for day in loaded:
        land_day(sandbox, day, CLUSTERED)
    build(sandbox, key=json.loads(sandbox_env["AIRFLOW_CONN_REPORTING_PII"])["password"])
    assert checksums(env) == clustered
