"""Each stand-in answers its real client: curl and clickhouse-connect, requests, the S3 hook, psycopg."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import time

import psycopg
import pytest
import requests

from chat_ingest.sources import a8
from sandbox.__main__ import down, process_alive, up
from tests.support.sandbox import jsonl, outside_the_session_sandbox

pytestmark = pytest.mark.integration


def _curl(sandbox, query: str, password: str | None = None) -> subprocess.CompletedProcess:
    user = sandbox.env["SANDBOX_CLICKHOUSE_USER"]
    password = password or sandbox.env["SANDBOX_CLICKHOUSE_PASSWORD"]
    url = sandbox.env["SANDBOX_CLICKHOUSE_URL"] + "/?query=" + requests.utils.quote(query)
    # The password goes through a curl config on stdin, not the command line.
    return subprocess.run(["curl", "-sS", "-w", "\n%{http_code}", "-K", "-", url], input=f'user = "{user}:{password}"',
                          capture_output=True, text=True, timeout=30)


def test_clickhouse_answers_the_vendors_curl_examples(sandbox):
    res = _curl(sandbox, "SELECT 1 FORMAT JSON")
    body, status = res.stdout.rsplit("\n", 1)
    assert status == "200"
    assert json.loads(body)["data"] == [{"1": 1}]
    res = _curl(sandbox, "SELECT * FROM messages_acme LIMIT 10")  # default TabSeparated
    body, status = res.stdout.rsplit("\n", 1)
    assert status == "200" and len(body.splitlines()) == 10 and "\t" in body
    res = _curl(sandbox, "SELECT id, sender_type FROM messages_acme LIMIT 3 FORMAT CSV")
    assert len(res.stdout.rsplit("\n", 1)[0].splitlines()) == 3


def test_clickhouse_refuses_a_wrong_password(sandbox):
    res = _curl(sandbox, "SELECT 1", password="wrong")
    body, status = res.stdout.rsplit("\n", 1)
    assert status == "403"
    assert "Code: 516" in body and "Authentication failed" in body


def test_clickhouse_connect_reads_every_company_table(sandbox):
    import clickhouse_connect

    port = int(sandbox.env["SANDBOX_CLICKHOUSE_URL"].rsplit(":", 1)[1])
    client = clickhouse_connect.get_client(host="127.0.0.1", port=port,
                                           username=sandbox.env["SANDBOX_CLICKHOUSE_USER"],
                                           password=sandbox.env["SANDBOX_CLICKHOUSE_PASSWORD"])
    for company in sandbox.manifest["botslovers"]["companies"]:
        for table in ("messages", "chat_agent_log", "agent_status_logs"):
            expected = len(jsonl(sandbox.dataset / "botslovers" / company / f"{table}.jsonl"))
            assert client.command(f"SELECT count() FROM {table}_{company}") == expected
    # the seed's column types
    types = dict(client.query("SELECT name, type FROM system.columns WHERE table = 'chat_agent_log_acme'").result_rows)
    assert types["left_at"] == "Nullable(DateTime)" and types["response_rating"] == "Nullable(Int16)"
    # server-side parameter binding, and Arrow streaming
    n = client.command("SELECT count() FROM messages_acme WHERE sender_type = {t:String}", parameters={"t": "bot"})
    assert n > 0
    with client.query_arrow_stream("SELECT * FROM messages_acme") as stream:
        assert sum(b.num_rows for b in stream) == client.command("SELECT count() FROM messages_acme")
    # the vendor's account is read-only
    with pytest.raises(Exception, match="readonly"):
        client.command("DROP TABLE messages_acme")


def _ultimate(sandbox, body, token=None, bot="ult-bank"):
    conn = json.loads(sandbox.env["AIRFLOW_CONN_ULTIMATE_EXPORT"])
    headers = {"authorization": token if token is not None else conn["password"],
               "organizationid": conn["extra"]["organization_id"], "botid": bot}
    return requests.post(sandbox.env["SANDBOX_ULTIMATE_URL"] + "/data-export/v2/get-signed-urls",
                         headers=headers, data=body if isinstance(body, str) else json.dumps(body), timeout=10)


def test_ultimate_signed_urls_download_the_days_file(sandbox):
    day = sandbox.days[1]
    res = _ultimate(sandbox, {"date": day.isoformat(), "ttl": 5})
    assert res.status_code == 200, res.text
    urls = res.json()["signedUrls"]
    assert res.json()["date"] == day.isoformat() and urls
    records = [c for url in urls for c in requests.get(url, timeout=10).json()]
    expected = json.loads((sandbox.dataset / "ultimate" / "ult-bank" / f"{day}.json").read_text())
    assert records == expected
    assert all(c["conversation_end_time"].startswith(day.isoformat()) for c in records)
    tampered = urls[0].replace("signature=", "signature=0")
    assert requests.get(tampered, timeout=10).status_code == 403


@pytest.mark.parametrize(("body", "token", "status", "message"), [
    ({"date": "2026-01-01", "ttl": 5}, "not-the-token", 401, "invalid API token"),
    ("{not json", None, 400, "Bad request"),
    ({"ttl": 5}, None, 400, "Bad request"),
    ({"date": "yesterday", "ttl": 5}, None, 400, "Bad request"),
])
def test_ultimate_refuses_bad_requests(sandbox, body, token, status, message):
    res = _ultimate(sandbox, body, token=token)
    assert res.status_code == status and message in res.json()["error"]


def test_ultimate_refuses_dates_outside_the_retention_window(sandbox):
    old = dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=31)
    res = _ultimate(sandbox, {"date": old.isoformat(), "ttl": 5})
    assert res.status_code == 400 and "retention window" in res.json()["error"]


def test_s3_hook_lists_and_reads_unless_objects(sandbox):
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    hook = S3Hook(aws_conn_id="unless_s3")
    root = sandbox.dataset / "unless"
    account = sandbox.manifest["unless"]["account"]
    for website in sandbox.manifest["unless"]["websites"]:
        prefix = f"{account}/conversations/{website}/"
        keys = hook.list_keys(bucket_name=sandbox.env["SANDBOX_UNLESS_BUCKET"], prefix=prefix)
        assert sorted(keys) == sorted(p.relative_to(root).as_posix() for p in (root / prefix).rglob("*.json"))
    key = keys[0]
    assert hook.read_key(key, bucket_name=sandbox.env["SANDBOX_UNLESS_BUCKET"]) == (root / key).read_text()
    # LastModified is what the vendor's would be (a minute after the last log item), not the upload time
    head = hook.head_object(key, bucket_name=sandbox.env["SANDBOX_UNLESS_BUCKET"])
    last_log = max(item["timestamp"] for item in json.loads((root / key).read_text())["chatHistory"])
    assert head["LastModified"].timestamp() == pytest.approx(last_log / 1000 + 60, abs=1)


def test_a8_database_holds_the_eleven_tables(sandbox):
    with psycopg.connect(sandbox.env["AIRFLOW_CONN_A8_TIMESCALE"]) as conn:
        for name, spec in a8.TABLES.items():
            expected = len(jsonl(sandbox.dataset / "a8" / f"{name}.jsonl"))
            count = conn.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0]
            assert count == expected, name
            columns = [r[0] for r in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = %s ORDER BY ordinal_position",
                (name,))]
            assert columns == list(spec.column_names)
        msg = conn.execute("SELECT msg FROM messages WHERE msg ? 'text' LIMIT 1").fetchone()[0]
        assert isinstance(msg, dict)


def test_env_file_is_shell_sourceable(sandbox):
    out = subprocess.run(["bash", "-c", f"set -a; . {sandbox.root / 'env'}; echo \"$AIRFLOW_CONN_UNLESS_S3\""],
                         capture_output=True, text=True, check=True).stdout
    assert json.loads(out)["conn_type"] == "unless_s3"
    for key in ("CHAT_INGEST_WAREHOUSE_DSN", "AIRFLOW_CONN_CHAT_WAREHOUSE", "AIRFLOW_CONN_BOTSLOVERS_CLICKHOUSE",
                "AIRFLOW_CONN_A8_TIMESCALE", "AIRFLOW_CONN_ULTIMATE_EXPORT", "AIRFLOW_CONN_UNLESS_S3"):
        assert sandbox.env[key]
    assert oct((sandbox.root / "env").stat().st_mode)[-3:] == "600"
    # set for a busy 2-core machine: a task parsing its DAG file must not time out at Airflow's 30 s
    assert int(sandbox.env["AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT"]) >= 120
    assert int(sandbox.env["AIRFLOW__DAG_PROCESSOR__DAG_FILE_PROCESSOR_TIMEOUT"]) > 120


def test_sandbox_down_leaves_no_process_behind(tmp_path, sandbox):
    root = tmp_path / "sb"
    with outside_the_session_sandbox():  # its own embedded PostgreSQL, not the session's
        assert up(root, sandbox.dataset, 1, seed=1, bad_records=0.0, timeout=300) == 0
    supervisor = int((root / "supervisor.pid").read_text())
    postmaster = int((root / "pg" / "postmaster.pid").read_text().split()[0])
    env = json.loads((root / "state.json").read_text())
    assert requests.get(f"http://127.0.0.1:{env['ports']['clickhouse']}/ping", timeout=5).ok
    down(root)
    deadline = time.monotonic() + 30
    alive = [supervisor, postmaster]
    while alive and time.monotonic() < deadline:
        alive = [pid for pid in alive if process_alive(pid)]
        time.sleep(0.2)
    assert not alive, f"still running: {alive}"
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{env['ports']['clickhouse']}/ping", timeout=5)



def test_an_external_warehouse_dsn_is_used_instead_of_the_embedded_one(tmp_path, sandbox, monkeypatch):
    external = sandbox.warehouse_dsn  # any PostgreSQL server: here the session sandbox's
    monkeypatch.setenv("CHAT_INGEST_WAREHOUSE_DSN", external)
    root = tmp_path / "ext"
    assert up(root, sandbox.dataset, 1, seed=1, bad_records=0.0, timeout=300) == 0
    try:
        from sandbox.services import read_env

        env = read_env(root / "env")
        assert env["CHAT_INGEST_WAREHOUSE_DSN"] == external == env["AIRFLOW_CONN_CHAT_WAREHOUSE"]
        assert not (root / "pg").exists()  # no embedded server was started
        a8_server, a8_database = env["AIRFLOW_CONN_A8_TIMESCALE"].rsplit("/", 1)
        assert a8_server == external.rsplit("/", 1)[0]
        # a stand-in database of its own: loading it left the session's A8 data alone
        assert a8_database != sandbox.env["AIRFLOW_CONN_A8_TIMESCALE"].rsplit("/", 1)[1]
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] != sandbox.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
        with psycopg.connect(env["AIRFLOW_CONN_A8_TIMESCALE"]) as conn:
            assert conn.execute("SELECT count(*) FROM chat_state").fetchone()[0] > 0
    finally:
        down(root)


def test_seed_fills_network_stand_ins_with_a_dataset_as_the_sandbox_loads_its_own(tmp_path):
    """docker compose's airflow-init seeds its ClickHouse server, TimescaleDB and MinIO with
    ``python -m sandbox.seed``.  Here the stand-ins of a sandbox of its own play those servers (reached
    only over the network, with the credentials compose would pass), and after seeding they hold exactly
    the other dataset: every company's ClickHouse tables, every A8 table, every Unless object."""
    from botocore.exceptions import ClientError

    from sandbox.generator import generate
    from sandbox.seed import main as seed_main
    from sandbox.services import read_env
    from tests.support.sandbox import Sandbox

    root = tmp_path / "stand-ins"
    with outside_the_session_sandbox():
        assert up(root, None, 1, seed=5, bad_records=0.0, timeout=300) == 0
    try:
        env = read_env(root / "env")
        s3 = json.loads(env["AIRFLOW_CONN_UNLESS_S3"])
        seeded = tmp_path / "compose-dataset"
        manifest = generate(seeded, seed=3, days=1, per_day=4)
        seed_env = {"SEED_CLICKHOUSE_URL": env["SANDBOX_CLICKHOUSE_URL"], "SEED_CLICKHOUSE_USER": "admin",
                    "SEED_CLICKHOUSE_PASSWORD": env["SANDBOX_CLICKHOUSE_ADMIN_PASSWORD"],
                    "SEED_A8_DSN": env["AIRFLOW_CONN_A8_TIMESCALE"], "SEED_S3_ENDPOINT": env["SANDBOX_S3_ENDPOINT"],
                    "SEED_S3_ACCESS_KEY": s3["login"], "SEED_S3_SECRET_KEY": s3["password"]}
        with pytest.MonkeyPatch.context() as mp:
            for key, value in seed_env.items():
                mp.setenv(key, value)
            assert seed_main(["--dataset", str(seeded), "--clickhouse-dataset", str(seeded.resolve())]) == 0
            assert seed_main(["--dataset", str(seeded)]) == 0  # again (compose runs it on every `up`)
        stand_ins = Sandbox(root, env, seeded, manifest)
        admin = stand_ins.clickhouse_admin()
        for company in manifest["botslovers"]["companies"]:
            for table in ("messages", "chat_agent_log", "agent_status_logs"):
                expected = len(jsonl(seeded / "botslovers" / company / f"{table}.jsonl"))
                assert admin.command(f"SELECT count() FROM `{table}_{company}`") == expected, (company, table)
        with psycopg.connect(env["AIRFLOW_CONN_A8_TIMESCALE"]) as conn:
            for name in a8.TABLES:
                expected = len(jsonl(seeded / "a8" / f"{name}.jsonl"))
                assert conn.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0] == expected, name
        client, objects = stand_ins.s3(), sorted((seeded / "unless").rglob("*.json"))
        assert objects
        for path in objects:
            key = path.relative_to(seeded / "unless").as_posix()
            try:
                body = client.get_object(Bucket=env["SANDBOX_UNLESS_BUCKET"], Key=key)["Body"].read()
            except ClientError as exc:
                pytest.fail(f"{key} was not seeded: {exc}")
            assert body == path.read_bytes(), key
    finally:
        down(root)


def test_a_start_right_after_a_stop_waits_for_the_stopping_server_and_starts_it_again(tmp_path):
    """``make demo`` ends with ``down``, which may return while the warehouse is still shutting down; a
    ``make sandbox-up`` or ``make ui`` straight after saw it running, returned, and its next connection
    was refused.  Here a server is kept shutting down (a smart stop waits for an open session) while a
    start begins: the start waits for it to stop, starts it again, and the server then answers."""
    import threading

    from sandbox.postgres import EmbeddedPostgres, _run_as_owner
    from sandbox.services import free_port

    server = EmbeddedPostgres(tmp_path / "pg", free_port())
    server.start()
    try:
        session = psycopg.connect(server.dsn(), autocommit=True)
        _run_as_owner([str(server.bin_path / "pg_ctl"), "-D", str(server.pgdata), "-m", "smart", "-W", "stop"])
        deadline = time.monotonic() + 60
        while True:  # the server now refuses new sessions while it waits for the open one
            try:
                psycopg.connect(server.dsn(), connect_timeout=2).close()
            except psycopg.OperationalError as exc:
                assert "shutting down" in str(exc), exc
                break
            assert time.monotonic() < deadline, "the smart stop never began"
            time.sleep(0.2)
        assert server.running()
        threading.Timer(2.0, session.close).start()  # the stop can finish only once the session ends
        server.start()
        with psycopg.connect(server.dsn(), connect_timeout=10) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        server.stop()
