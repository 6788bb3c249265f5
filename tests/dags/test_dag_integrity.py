"""DAG integrity: every DAG imports cleanly, is documented, retried, tagged, and cheap to parse."""

from __future__ import annotations

import copy
import datetime as dt
import json

import pytest

from tests.support.sandbox import REPO, run_python

DAG_FILES = sorted((REPO / "dags").glob("*.py"))
#: Connections stubbed the Astronomer way, so parsing needs no sandbox and no secrets.
STUB_CONNECTIONS = {
    "AIRFLOW_CONN_CHAT_WAREHOUSE": "postgresql://user:stub@127.0.0.1:1/chat_ingest",
    "AIRFLOW_CONN_BOTSLOVERS_CLICKHOUSE": "clickhouse://user:stub@127.0.0.1:1/default",
    "AIRFLOW_CONN_A8_TIMESCALE": "postgresql://user:stub@127.0.0.1:1/a8",
    "AIRFLOW_CONN_ULTIMATE_EXPORT": "http://:stub@127.0.0.1:1/http",
    "AIRFLOW_CONN_UNLESS_S3": "aws://key:stub@/?endpoint_url=http%3A%2F%2F127.0.0.1%3A1",
}


@pytest.fixture(scope="module")
def dagbag(tmp_path_factory):
    import os

    from airflow.dag_processing.dagbag import DagBag

    saved = dict(os.environ)
    os.environ.update(STUB_CONNECTIONS)
    os.environ["AIRFLOW_HOME"] = str(tmp_path_factory.mktemp("airflow_home"))
    os.environ.pop("CHAT_INGEST_CONFIG", None)
    try:
        yield DagBag(dag_folder=str(REPO / "dags"))
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_dag_files_exist():
    assert {"botslovers_ingest.py", "a8_ingest.py"} <= {p.name for p in DAG_FILES}


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}
    assert len(dagbag.dags) == len(DAG_FILES)


def test_every_dag_is_owned_retried_tagged_documented(dagbag):
    for dag_id, dag in dagbag.dags.items():
        assert dag.doc_md and len(dag.doc_md) > 200, dag_id
        assert "chat-ingest" in dag.tags, dag_id
        assert dag.max_active_runs == 1, dag_id
        for task in dag.tasks:
            assert task.owner == "chat-ingest", (dag_id, task.task_id)
            assert task.retries >= 2, (dag_id, task.task_id)


def test_ingestion_dags_cover_the_previous_utc_day_and_name_their_runs_after_it(dagbag):
    from airflow.serialization.serialized_objects import DagSerialization
    from airflow.timetables.base import DataInterval, TimeRestriction
    from airflow.utils.types import DagRunType

    from chat_ingest.dag_factory import START_DATE
    from chat_ingest.timetables import DayNamedDataIntervalTimetable

    for dag_id, dag in dagbag.dags.items():
        if not dag_id.endswith("_ingest"):
            continue
        # what the scheduler makes of the same definition: the serialized DAG, read back
        timetable = DagSerialization.from_dict(DagSerialization.to_dict(dag)).timetable
        assert isinstance(timetable, DayNamedDataIntervalTimetable), (dag_id, timetable)
        after = dt.datetime(2026, 11, 20, 0, 30, tzinfo=dt.timezone.utc)
        interval = timetable.infer_manual_data_interval(run_after=after)
        assert interval.start == dt.datetime(2026, 11, 19, tzinfo=dt.timezone.utc), dag_id
        assert interval.end - interval.start == dt.timedelta(days=1), dag_id
        for run_type in (DagRunType.SCHEDULED, DagRunType.BACKFILL_JOB):
            assert timetable.generate_run_id(run_type=run_type, run_after=interval.end, data_interval=interval) \
                == f"{run_type.value}__2026-11-19"
        assert {"date", "tenants"} <= set(dag.params), dag_id
        assert dag.catchup is False
        # a scheduled run lands the day before its own again (recheck_days 1): rows a vendor wrote late, an
        # Ultimate file it completed late; Unless finds its rewritten objects by itself
        rechecked = 0 if dag_id == "unless_ingest" else 1
        assert list(dag.get_task("resolve_window").op_args) == [rechecked], dag_id
        # the day 2026-11-19 is loaded once it has settled: at 01:00 the next day (settle_minutes 60)
        restriction = TimeRestriction(earliest=START_DATE, latest=None, catchup=True)
        previous = DataInterval(interval.start - dt.timedelta(days=1), interval.start)
        scheduled = timetable.next_dagrun_info(last_automated_data_interval=previous, restriction=restriction)
        assert (scheduled.data_interval, scheduled.run_after) == (interval, interval.end + dt.timedelta(hours=1))


def test_the_tenants_param_is_an_optional_pick_list_of_the_configured_tenants(dagbag):
    """The trigger form offers the configured tenants to pick from (a multi-select in the UI), lets the
    field be cleared (all tenants) and refuses a name that is not configured before any run exists."""
    from airflow.sdk.exceptions import ParamValidationError

    from chat_ingest.config import source_config

    tenant_keys = {"botslovers_ingest": ("botslovers", "companies"), "a8_ingest": ("a8", "bots"),
                   "ultimate_ingest": ("ultimate", "bots"), "unless_ingest": ("unless", "websites")}
    for dag_id, (source, key) in tenant_keys.items():
        params = dagbag.dags[dag_id].params
        offered = params.get_param("tenants").schema["examples"]
        assert offered == source_config(source)[key] and offered, dag_id
        for value in ([], None, offered[:1], offered):
            trigger_form = copy.deepcopy(params)
            trigger_form["tenants"] = value
            assert trigger_form.validate()["tenants"] == value, dag_id
        with pytest.raises(ParamValidationError):
            copy.deepcopy(params)["tenants"] = ["not-a-configured-tenant"]


def test_validation_tasks_emit_one_asset_per_staging_table(dagbag):
    dag = dagbag.dags["botslovers_ingest"]
    outlets = {t.task_id: [a.name for a in t.outlets] for t in dag.tasks if t.task_id.startswith("validate_")}
    assert outlets == {
        "validate_messages": ["staging.botslovers_messages"],
        "validate_chat_agent_log": ["staging.botslovers_chat_agent_log"],
        "validate_agent_status_logs": ["staging.botslovers_agent_status_logs"],
    }
    for dag_id, dag in dagbag.dags.items():
        if dag_id.endswith("_ingest"):
            source = dag_id.removesuffix("_ingest")
            loads = [t for t in dag.tasks if t.task_id == "load" or t.task_id.startswith("load_")]
            validations = [t for t in dag.tasks if t.task_id.startswith("validate_")]
            # one load per table, or one load of a document source that lands all its tables
            assert loads and len(loads) in (1, len(validations)), dag_id
            assert all(set(loads) & set(v.upstream_list) for v in validations), dag_id
            assert all(t.pool == f"{source}_vendor" for t in loads), dag_id
            assert all(len(t.outlets) == 1 and t.outlets[0].name.startswith(f"staging.{source}_")
                       for t in validations), dag_id


@pytest.mark.parametrize("dag_file", DAG_FILES, ids=lambda p: p.name)
def test_parsing_does_no_heavy_imports_or_io(dag_file):
    heavy = ["great_expectations", "pyarrow", "pandas", "psycopg", "clickhouse_connect", "boto3", "chdb", "aiohttp"]
    code = (
        "import runpy, socket, sys\n"
        "def refuse(*a, **k): raise AssertionError('network access while parsing a DAG file')\n"
        "socket.socket.connect = refuse\n"
        f"runpy.run_path({str(dag_file)!r})\n"
        f"print(__import__('json').dumps([m for m in {heavy!r} if m in sys.modules]))\n"
    )
    res = run_python(code, env={**STUB_CONNECTIONS, "AIRFLOW__CORE__UNIT_TEST_MODE": "False"})
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads(res.stdout.strip().splitlines()[-1]) == []


def test_the_project_plugin_loads_once_and_registers_the_deadline_reference(tmp_path):
    """Airflow loads the plugin from its entry point, exactly once, and skips the package files."""
    code = (
        "import json, sys\n"
        "from airflow import plugins_manager\n"
        "plugins, errors = plugins_manager._get_plugins()\n"
        "print(json.dumps({'plugins': [p.name for p in plugins], 'errors': {k: str(v) for k, v in errors.items()},\n"
        "                  'references': sorted(plugins_manager.get_deadline_references_plugins()),\n"
        "                  'package_files_as_modules': [m for m in ('staging', 'load', 'a8') if m in sys.modules]}))\n"
    )
    res = run_python(code, env={"AIRFLOW_HOME": str(tmp_path), "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins")})
    assert res.returncode == 0, res.stderr[-2000:]
    loaded = json.loads(res.stdout.strip().splitlines()[-1])
    assert loaded["plugins"].count("chat_ingest") == 1 and loaded["errors"] == {}
    assert loaded["references"] == ["chat_ingest.deadlines.ScheduledDayEnd"]
    assert loaded["package_files_as_modules"] == []


def test_a_deadline_alert_only_when_landed_by_and_a_target_are_set(tmp_path, monkeypatch):
    import yaml

    from chat_ingest import alerts
    from chat_ingest.config import DEFAULT_CONFIG

    config = yaml.safe_load(DEFAULT_CONFIG.read_text())
    path = tmp_path / "sources.yaml"
    monkeypatch.setenv("CHAT_INGEST_CONFIG", str(path))

    def with_alerts(**values):
        path.write_text(yaml.safe_dump({**config, "alerts": {**config["alerts"], **values}}))
        return alerts.landing_deadline()

    assert with_alerts() is None  # the defaults: landed_by 06:00 but nowhere to send it
    deadline = with_alerts(http_conn_id="chat_alerts")
    assert deadline.interval == dt.timedelta(hours=6)
    assert deadline.callback.kwargs["http_conn_id"] == "chat_alerts"
    assert with_alerts(http_conn_id="chat_alerts", landed_by=None) is None
    with pytest.raises(ValueError, match="HH:MM"):
        with_alerts(http_conn_id="chat_alerts", landed_by="6am")
    with pytest.raises(ValueError, match="email_to"):
        with_alerts(smtp_conn_id="mail")


def test_the_floor_runs_the_same_shapes_with_tasks_that_do_nothing(dagbag, tmp_path):
    """``make bench``'s airflow_floor: Airflow, given the floor's local settings on its path (and only
    then: production code knows nothing of it), parses the same task ids, dependencies, mapping, pools
    and outlets, with validations that do nothing, loads that only note their window's days (the
    integration test of reporting runs one) and reporting rebuilds that do nothing."""
    import os
    import subprocess
    import sys

    from bench.floor import SETTINGS

    def shape(dag) -> dict:
        return {t.task_id: [getattr(t, "operator_class", type(t)).__name__, sorted(t.downstream_task_ids), t.pool,
                            hasattr(t, "expand_input"), [a.name for a in t.outlets]] for t in dag.tasks}

    probe = """
import json
from airflow.dag_processing.dagbag import DagBag
from airflow.sdk.execution_time.context import set_current_context
from bench import floor
bag = DagBag(dag_folder="dags")
def shape(dag):
    return {t.task_id: [getattr(t, "operator_class", type(t)).__name__, sorted(t.downstream_task_ids), t.pool,
                        hasattr(t, "expand_input"), [a.name for a in t.outlets]] for t in dag.tasks}
worked = {}
for dag_id, dag in bag.dags.items():
    for task in dag.tasks:
        cls = getattr(task, "operator_class", type(task))
        if task.task_id.startswith("validate"):
            worked[task.task_id] = cls.execute(task, {}) is None and cls.execute is not cls.__mro__[1].execute
        elif task.task_id.startswith("load"):
            worked[task.task_id] = cls.land is floor._note_window_days
with set_current_context({}):  # with the stub warehouse, a real rebuild would fail to connect
    rebuilt = bag.dags["reporting"].get_task("rebuild").python_callable({"source": "a8", "day": "2026-01-01"})
print(json.dumps({"errors": list(bag.import_errors), "shapes": {i: shape(d) for i, d in bag.dags.items()},
                  "noop": worked, "rebuilt": rebuilt}))
"""
    env = {**os.environ, **STUB_CONNECTIONS, "AIRFLOW_HOME": str(tmp_path),
           "PYTHONPATH": os.pathsep.join([str(SETTINGS), str(REPO / "plugins"), str(REPO)])}
    env.pop("CHAT_INGEST_CONFIG", None)
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, env=env,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    floor = json.loads(done.stdout.strip().splitlines()[-1])
    assert floor["errors"] == [] and floor["shapes"] == {dag_id: shape(dag) for dag_id, dag in dagbag.dags.items()}
    assert floor["noop"] and all(floor["noop"].values()), floor["noop"]
    assert floor["rebuilt"] == 0
    # the same DAGs parsed without the floor's settings do their work
    rebuild = dagbag.dags["reporting"].get_task("rebuild").python_callable
    assert rebuild.__module__ != "bench.floor"


def test_every_task_backs_off_exponentially_between_retries_as_the_scheduler_computes_it(dagbag):
    """Each retry waits at least twice the base delay of the one before, up to ``max_retry_delay``: a
    vendor's outage is not hammered every minute.  The delays are the scheduler's own
    (``TaskInstance.next_retry_datetime`` of the serialized task, which adds up to one base delay of
    jitter), so a change in how Airflow reads the arguments shows here: Airflow 3 reads
    ``retry_exponential_backoff`` as a multiplier, where 1 is a constant delay."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.serialization.serialized_objects import DagSerialization

    ended = dt.datetime(2026, 11, 20, 3, 0, tzinfo=dt.timezone.utc)
    for dag_id, dag in dagbag.dags.items():
        scheduled = DagSerialization.from_dict(DagSerialization.to_dict(dag))
        for task in scheduled.tasks:
            for try_number in range(1, task.retries + 1):
                ti = TaskInstance(task=task, dag_version_id=None, run_id="scheduled__2026-11-20")
                ti.try_number, ti.end_date = try_number, ended
                delay = ti.next_retry_datetime() - ended
                least = min(task.retry_delay * 2 ** (try_number - 1), task.max_retry_delay)
                assert least <= delay <= task.max_retry_delay, (dag_id, task.task_id, try_number, delay)


def test_retries_follow_sources_yaml_and_a_bad_value_fails_the_parse_naming_it(tmp_path, monkeypatch):
    import yaml
    from airflow.dag_processing.dagbag import DagBag

    from chat_ingest.config import DEFAULT_CONFIG

    config = yaml.safe_load(DEFAULT_CONFIG.read_text())
    path = tmp_path / "sources.yaml"
    monkeypatch.setenv("CHAT_INGEST_CONFIG", str(path))
    for key, value in STUB_CONNECTIONS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))

    def parsed(retries) -> DagBag:
        path.write_text(yaml.safe_dump({**config, "retries": retries}))
        return DagBag(dag_folder=str(REPO / "dags"))

    quick = parsed({"attempts": 5, "first_delay_seconds": 2, "max_delay_minutes": 1})
    assert quick.import_errors == {} and quick.dags
    for dag_id, dag in quick.dags.items():
        for task in dag.tasks:
            assert (task.retries, task.retry_delay, task.max_retry_delay) == (
                5, dt.timedelta(seconds=2), dt.timedelta(minutes=1)), (dag_id, task.task_id)
    for retries, named in (({"attempts": 2.5}, "retries.attempts"), ({"first_delay_seconds": "1m"},
                           "retries.first_delay_seconds"), ({"delay": 5}, "unknown keys ['delay']"),
                           ([3], "expected a mapping"),
                           # Airflow would not cap the waits at all, or would cut the first one short:
                           ({"max_delay_minutes": 0}, "retries.max_delay_minutes"),
                           ({"first_delay_seconds": 3600, "max_delay_minutes": 30}, "retries.max_delay_minutes")):
        errors = parsed(retries).import_errors
        assert len(errors) == len(DAG_FILES) and all(named in error for error in errors.values()), errors
