"""Airflow around the pipeline, as an operator meets it: locked, on loopback, and recovering unaided.

The services are the ones ``make ui`` runs (``sandbox.services``: supervised, SimpleAuthManager with
the sandbox's generated password, api-server on 127.0.0.1, no log servers).  The tests attack them as
an operator's bad day would: anonymous calls, a ``kill -9`` of the scheduler mid-run, the metadata
database crashing for 30 seconds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import psycopg
import pytest
import requests

from sandbox.services import free_port, session_processes
from tests.support.sandbox import REPO, newcomer_env, outside_the_session_sandbox

pytestmark = pytest.mark.integration
LOOPBACK = {"127.0.0.1", "::1"}


def api(services, method: str, path: str, **kwargs) -> requests.Response:
    headers = {"Authorization": f"Bearer {services.token()}", **kwargs.pop("headers", {})}
    return requests.request(method, f"{services.url}/api/v2{path}", headers=headers, timeout=60, **kwargs)


def run_days(services, airflow, dag_id: str, days: list, timeout: float = 900) -> dict[str, str]:
    """Trigger ``dag_id`` for each day through the REST API (unpaused for the time) and wait for the
    runs to end; their final states by run id."""
    assert api(services, "PATCH", f"/dags/{dag_id}", json={"is_paused": False}).ok
    try:
        run_ids = []
        for day in days:
            answer = api(services, "POST", f"/dags/{dag_id}/dagRuns",
                         json={"logical_date": None, "conf": {"date": day.isoformat()}})
            assert answer.ok, answer.text
            run_ids.append(answer.json()["dag_run_id"])
        return wait_for_runs(airflow, dag_id, run_ids, timeout)
    finally:
        api(services, "PATCH", f"/dags/{dag_id}", json={"is_paused": True})


def wait_for_runs(airflow, dag_id: str, run_ids: list[str], timeout: float) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while True:
        with psycopg.connect(airflow.metadata_dsn) as conn:
            states = dict(conn.execute("SELECT run_id, state FROM dag_run WHERE dag_id = %s AND run_id = ANY(%s)",
                                       (dag_id, run_ids)).fetchall())
        if all(states.get(r) in ("success", "failed") for r in run_ids) or time.monotonic() > deadline:
            return states
        time.sleep(3)


def running_task(airflow, dag_id: str, timeout: float = 600) -> str:
    """Wait until a task of ``dag_id`` runs; its task id."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with psycopg.connect(airflow.metadata_dsn) as conn:
            row = conn.execute("SELECT task_id FROM task_instance WHERE dag_id = %s AND state = 'running' LIMIT 1",
                               (dag_id,)).fetchone()
        if row:
            return row[0]
        time.sleep(0.5)
    raise AssertionError(f"no task of {dag_id} started within {timeout}s")


def test_no_anonymous_access_and_the_generated_login_works(airflow_services):
    services = airflow_services
    anonymous = {
        "list DAGs": requests.get(f"{services.url}/api/v2/dags", timeout=30),
        "pause a DAG": requests.patch(f"{services.url}/api/v2/dags/a8_ingest", json={"is_paused": False}, timeout=30),
        "ask for a token": requests.get(f"{services.url}/auth/token", timeout=30),
        "a wrong password": requests.post(f"{services.url}/auth/token",
                                          json={"username": "admin", "password": "not-the-password"}, timeout=30),
    }
    refused = {what: r.status_code for what, r in anonymous.items()}
    assert all(code in (401, 403, 405) for code in refused.values()), refused
    assert not any("access_token" in r.text for r in anonymous.values())
    assert api(services, "GET", "/dags").json()["total_entries"] >= 5


def test_every_sandbox_and_airflow_port_listens_on_loopback_only(sandbox, airflow_services):
    supervisor = airflow_services.supervisor
    leaders = [supervisor.pid(name) for name in supervisor.components]
    ours = {pid for leader in leaders if leader for pid in session_processes(leader)}
    ours |= set(session_processes(int((sandbox.root / "supervisor.pid").read_text())))
    ours |= {p.pid for p in psutil.process_iter(["cmdline"]) if str(sandbox.root) in " ".join(p.info["cmdline"] or [])}
    listening = [(c.pid, c.laddr.ip, c.laddr.port) for c in psutil.net_connections("tcp")
                 if c.status == psutil.CONN_LISTEN and c.pid in ours]
    ports = {port for _, _, port in listening}
    assert airflow_services.port in ports and len(ports) >= 6  # api-server, PostgreSQL, the four stand-ins
    assert [entry for entry in listening if entry[1] not in LOOPBACK] == []
    assert not ports & {8793, 8794}  # no worker or triggerer log server


def test_a_scheduler_killed_mid_run_is_replaced_and_every_run_completes_unaided(sandbox, airflow, airflow_services):
    services, supervisor = airflow_services, airflow_services.supervisor
    dag_id, days = "botslovers_ingest", sandbox.days[:1]
    assert api(services, "PATCH", f"/dags/{dag_id}", json={"is_paused": False}).ok
    try:
        run_ids = [api(services, "POST", f"/dags/{dag_id}/dagRuns",
                       json={"logical_date": None, "conf": {"date": day.isoformat()}}).json()["dag_run_id"]
                   for day in days]
        running_task(airflow, dag_id)
        killed, restarts = supervisor.pid("scheduler"), supervisor.restarts("scheduler")
        left_behind = session_processes(killed)
        assert len(left_behind) > 1  # the scheduler and its executor's processes
        os.kill(killed, signal.SIGKILL)
        states = wait_for_runs(airflow, dag_id, run_ids, timeout=900)
    finally:
        api(services, "PATCH", f"/dags/{dag_id}", json={"is_paused": True})
    assert states == {run_id: "success" for run_id in run_ids}, supervisor.log_of("scheduler").read_text()[-3000:]
    assert supervisor.restarts("scheduler") == restarts + 1
    assert session_processes(killed) == []  # nothing the killed scheduler started outlived it


def test_a_run_asked_for_a_day_not_begun_or_for_two_windows_fails_at_once_and_says_why(sandbox, airflow,
                                                                                        airflow_services):
    """A user's mistyped year (2062 for 2026) passed the form's date check and ran: every load
    "succeeded" with 0 rows and the run was green.  Now such a run, like one naming a day and a
    range at once, fails in ``resolve_window`` on its first try, loads nothing, and the task's log
    (read as the UI reads it, through the REST API) says why."""
    services = airflow_services
    dag_id, day = "botslovers_ingest", sandbox.days[0].isoformat()
    asked = {"2062-11-30 has not begun yet": {"date": "2062-11-30"},
             "pass either 'date' or 'start_date' / 'end_date', not both": {"date": day, "start_date": day}}
    assert api(services, "PATCH", f"/dags/{dag_id}", json={"is_paused": False}).ok
    try:
        run_ids = {}
        for message, conf in asked.items():
            answer = api(services, "POST", f"/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf})
            assert answer.ok, answer.text  # the form's own checks pass: both are dates
            run_ids[message] = answer.json()["dag_run_id"]
        states = wait_for_runs(airflow, dag_id, list(run_ids.values()), timeout=900)
    finally:
        api(services, "PATCH", f"/dags/{dag_id}", json={"is_paused": True})
    assert set(states.values()) == {"failed"}
    for message, run_id in run_ids.items():
        tasks = {t["task_id"]: (t["state"], t["try_number"]) for t in api(
            services, "GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances").json()["task_instances"]}
        assert tasks["resolve_window"] == ("failed", 1)  # no retry can fix the params
        assert {state for task, (state, _) in tasks.items() if task.startswith("load_")} == {"upstream_failed"}
        log = api(services, "GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/resolve_window/logs/1",
                  headers={"Accept": "application/json"}).json()
        assert message in json.dumps(log["content"])
    with sandbox.warehouse() as conn:  # no audit schema at all: nothing was ever loaded
        if conn.execute("SELECT to_regclass('audit.load_log')").fetchone()[0]:
            assert conn.execute("SELECT count(*) FROM audit.load_log WHERE window_start >= '2062-11-30'"
                                ).fetchone() == (0,)


def test_each_validate_task_links_to_its_own_page_of_the_one_data_docs_site(sandbox, airflow, airflow_services):
    """The extra link is a path on the api-server's own site (the UI drops file:// links), to this validation's
    page; the site is served behind the login."""
    services = airflow_services
    with psycopg.connect(airflow.metadata_dsn) as conn:
        dag_id, run_id, task_id = conn.execute(
            "SELECT dag_id, run_id, task_id FROM task_instance WHERE dag_id LIKE '%_ingest' "
            "AND task_id LIKE 'validate_%' AND state = 'success' ORDER BY end_date DESC LIMIT 1").fetchone()
    source = dag_id.removesuffix("_ingest")
    # the task inherited Great Expectations from the scheduler's forkserver instead of importing it
    log = next((sandbox.root / "airflow" / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
                ).glob("attempt=*.log")).read_text()
    assert "Great Expectations: already imported" in log
    links = api(services, "GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/links").json()
    link = links["extra_links"]["GX Data Docs"]
    table = task_id.removeprefix("validate_")
    assert link.startswith(f"/chat-ingest/data-docs/validations/{source}_{table}_suite/")  # same site: the UI opens it
    path = link.split("/chat-ingest/", 1)[1]
    assert requests.get(f"{services.url}/chat-ingest/{path}", timeout=30).status_code == 401
    page = requests.get(f"{services.url}/chat-ingest/{path}", headers={"Authorization": f"Bearer {services.token()}"},
                        timeout=30)
    assert page.ok and f"{source}_{table}" in page.text and run_id in page.text
    # the suite's page is built on view, like the index: opened first, it is built then
    suite = requests.get(f"{services.url}/chat-ingest/data-docs/expectations/{source}_{table}_suite.html",
                         headers={"Authorization": f"Bearer {services.token()}"}, timeout=120)
    assert suite.ok and f"{source}_{table}_suite" in suite.text
    index = requests.get(f"{services.url}/chat-ingest/data-docs/index.html", cookies={"_token": services.token()},
                         timeout=30)  # the UI's session cookie works too
    assert index.ok and f"{source}_" in index.text
    escape = requests.get(f"{services.url}/chat-ingest/data-docs/..%2F..%2Fgx.yml",
                          headers={"Authorization": f"Bearer {services.token()}"}, timeout=30)
    assert escape.status_code == 404


def test_the_services_come_back_after_the_metadata_database_crashes(sandbox, airflow, airflow_services):
    from sandbox.postgres import EmbeddedPostgres

    services, supervisor = airflow_services, airflow_services.supervisor
    port = json.loads((sandbox.root / "state.json").read_text())["ports"]["postgres"]
    database = EmbeddedPostgres(sandbox.root / "pg", port)
    database.stop(mode="immediate")
    time.sleep(30)
    database.start()
    deadline = time.monotonic() + 300
    while True:
        try:
            health = requests.get(f"{services.url}/api/v2/monitor/health", timeout=10).json()
            alive = all(supervisor.pid(name) for name in supervisor.components)
            if alive and health["metadatabase"]["status"] == "healthy" and health["scheduler"]["status"] == "healthy":
                break
        except (requests.RequestException, ValueError, KeyError):
            pass
        assert time.monotonic() < deadline, {name: supervisor.restarts(name) for name in supervisor.components}
        time.sleep(3)
    states = run_days(services, airflow, "unless_ingest", [sandbox.days[0]])
    assert list(states.values()) == ["success"], {name: supervisor.restarts(name) for name in supervisor.components}


def test_make_ui_on_another_port_asks_for_a_login_and_stops_everything_on_sigterm(sandbox):
    port = free_port()
    env = newcomer_env()
    ui = subprocess.Popen([sys.executable, "-m", "sandbox.ui", "--dir", str(sandbox.root), "--port", str(port)],
                          env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          start_new_session=True)
    try:
        banner = ui.stdout.readline()
        assert f"http://localhost:{port}" in banner and "login: admin / " in banner, banner.split("login:")[0]
        password = banner.split("login: admin / ", 1)[1].split()[0]
        deadline = time.monotonic() + 180
        while True:
            try:
                if requests.get(f"http://127.0.0.1:{port}/api/v2/monitor/health", timeout=5).ok:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline and ui.poll() is None, ui.stdout.read() if ui.poll() else "no answer"
            time.sleep(1)
        assert requests.get(f"http://127.0.0.1:{port}/api/v2/dags", timeout=30).status_code == 401
        token = requests.post(f"http://127.0.0.1:{port}/auth/token", json={"username": "admin", "password": password},
                              timeout=30).json()["access_token"]
        config = requests.get(f"http://127.0.0.1:{port}/ui/config", headers={"Authorization": f"Bearer {token}"},
                              timeout=30)
        assert config.ok
        started = [p for p in psutil.Process(ui.pid).children(recursive=True)]
        assert len(started) >= 4
    finally:
        ui.send_signal(signal.SIGTERM)
        ui.wait(timeout=120)
    time.sleep(1)
    assert [p.pid for p in started if p.is_running() and p.status() != psutil.STATUS_ZOMBIE] == []


def test_a_demo_killed_mid_run_leaves_nothing_running_and_the_next_start_is_clean(tmp_path):
    """`make demo` (and so `make test`, `make bench`, which start the sandbox the same way) killed with
    SIGKILL while its runs go: the kernel stops every server it started; the sandbox then starts again
    at once in the same folder."""
    from sandbox.__main__ import down, up

    root = tmp_path / "demo"
    env = newcomer_env()
    demo = subprocess.Popen([sys.executable, "-m", "sandbox.demo", "--dir", str(root), "--days", "1"], env=env,
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while not (root / "logs" / "scheduler.log").exists():  # the sandbox is up and the runs are starting
            assert demo.poll() is None and time.monotonic() < deadline, "the demo did not get to its runs"
            time.sleep(1)
        time.sleep(5)
        started = psutil.Process(demo.pid).children(recursive=True)
        started += [p for p in psutil.process_iter(["cmdline"]) if str(root) in " ".join(p.info["cmdline"] or [])]
        assert len(started) >= 6  # the sandbox, its PostgreSQL, Airflow's four services
    finally:
        demo.kill()
        demo.wait()
    def running(process: psutil.Process) -> bool:
        try:
            return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    deadline = time.monotonic() + 120
    while alive := [p.pid for p in started if running(p)]:
        assert time.monotonic() < deadline, f"still running after the demo was killed: {alive}"
        time.sleep(1)
    with outside_the_session_sandbox():
        assert up(root, None, 1, seed=7, bad_records=0.0, timeout=300, owned=True) == 0  # straight after
    down(root)
