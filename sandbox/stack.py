"""The sandbox: local stand-ins for the four vendors plus the warehouse.

``serve()`` runs in one supervisor process (started detached by
``python -m sandbox up``): it starts the embedded PostgreSQL (or uses
``CHAT_INGEST_WAREHOUSE_DSN``'s server), a chdb-backed ClickHouse HTTP endpoint,
the Ultimate export API, and a moto S3 server, loads the dataset into each,
writes the shell-sourceable ``env`` file, and on SIGTERM stops everything it
started.  Every server listens on 127.0.0.1.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import logging
import os
import re
import secrets
import shlex
import shutil
import signal
import threading
from pathlib import Path

import psycopg
from psycopg import sql

from chat_ingest.project import SCHEDULER_FORKSERVER_PRELOAD
from chat_ingest.sources import a8 as a8_source
from chat_ingest.sources import botslovers
from chat_ingest.tablespec import TableSpec
from sandbox.services import ADMIN_USER, api_env, ephemeral_ports, free_port, port_free

REPO = Path(__file__).resolve().parents[1]
UNLESS_BUCKET = "unless-conversations"
WAREHOUSE_DB = "chat_ingest"
A8_DB = "a8"
AIRFLOW_DB = "airflow"
_TENANT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


class SandboxState:
    """Ports and credentials of one sandbox directory, kept across restarts (0600)."""

    KEYS = ("postgres", "clickhouse", "clickhouse_https", "ultimate", "s3", "redis")

    def __init__(self, root: Path) -> None:
        self.root = root
        self.path = root / "state.json"
        data = json.loads(self.path.read_text()) if self.path.exists() else {}
        self.ports: dict[str, int] = data.get("ports", {})
        self.secrets: dict[str, str] = data.get("secrets", {})
        ephemeral = ephemeral_ports()
        for key in self.KEYS:  # a port kept from an earlier start is kept while it is free and safe
            port = self.ports.get(key)
            if port is None or port in ephemeral or not port_free(port):
                self.ports[key] = free_port(taken=[p for k, p in self.ports.items() if k != key])
        defaults = {
            "clickhouse_user": "botslovers_reader",
            "clickhouse_password": secrets.token_urlsafe(16),
            "clickhouse_admin_password": secrets.token_urlsafe(16),
            "ultimate_token": secrets.token_urlsafe(24),
            "ultimate_organization_id": "org-" + secrets.token_hex(4),
            "ultimate_admin_token": secrets.token_urlsafe(16),
            "reporting_pii_key": secrets.token_urlsafe(32),
            "s3_access_key": "AKIA" + secrets.token_hex(8).upper(),
            "s3_secret_key": secrets.token_urlsafe(30),
            "airflow_admin_password": secrets.token_urlsafe(12),
            "airflow_jwt_secret": secrets.token_urlsafe(32),
            "airflow_secret_key": secrets.token_urlsafe(32),
            "airflow_fernet_key": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
            "redis_password": secrets.token_urlsafe(18),
        }
        for k, v in defaults.items():
            self.secrets.setdefault(k, v)
        root.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps({"ports": self.ports, "secrets": self.secrets}, indent=2))
        self.path.chmod(0o600)
        self.shared_server = False

    def own_database(self, name: str) -> str:
        """A database this sandbox creates: ``name`` on its embedded server; on a shared (external) one,
        a name of this sandbox's own, so two sandboxes on one server never load into or read each other's
        stand-in data or metadata (whose connections are encrypted with each sandbox's key)."""
        if not self.shared_server:
            return name
        return f"{name}_{hashlib.sha256(str(self.root.resolve()).encode()).hexdigest()[:10]}"

    @property
    def airflow_database(self) -> str:
        return self.own_database(AIRFLOW_DB)

    @property
    def a8_database(self) -> str:
        """The A8 TimescaleDB stand-in."""
        return self.own_database(A8_DB)


def ensure_database(admin_dsn: str, name: str) -> None:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def with_database(dsn: str, database: str) -> str:
    """The same server DSN pointing at another database."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + database))


def _tenants(dataset: Path, vendor: str) -> list[str]:
    root = dataset / vendor
    names = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    for name in names:
        if not _TENANT_NAME.match(name):
            raise ValueError(f"dataset folder {root / name}: tenant names must match {_TENANT_NAME.pattern}")
    return names


# -- loading the stand-ins ------------------------------------------------------------------------


def clickhouse_ddl(spec: TableSpec, table: str) -> str:
    cols = ", ".join(f"`{c.name}` {c.source_type}" for c in spec.columns)
    order = ", ".join(f"`{c}`" for c in (spec.cursor, *spec.key))
    return f"CREATE TABLE `{table}` ({cols}) ENGINE = MergeTree ORDER BY ({order})"


def load_botslovers(backend, dataset: Path, server_dataset: str | None = None) -> dict[str, int]:
    """Each company's three tables, created and filled from the dataset's files by the ClickHouse itself
    (``backend.execute(sql) -> bytes``: the sandbox's chdb, or a server over HTTP), which reads them at
    ``server_dataset`` (its own path of the dataset; default: the dataset's path here)."""
    counts = {}
    for company in _tenants(dataset, "botslovers"):
        for spec in botslovers.TABLES.values():
            table = f"{spec.name}_{company}"
            backend.execute(f"DROP TABLE IF EXISTS `{table}`")
            backend.execute(clickhouse_ddl(spec, table))
            path = dataset / "botslovers" / company / f"{spec.name}.jsonl"
            if path.exists() and path.stat().st_size:
                structure = ", ".join(f"{c.name} {c.source_type}" for c in spec.columns)
                where = f"{server_dataset}/botslovers/{company}/{spec.name}.jsonl" if server_dataset else path.resolve()
                backend.execute(f"INSERT INTO `{table}` SELECT * FROM file('{where}', 'JSONEachRow', '{structure}')")
            counts[table] = int(backend.execute(f"SELECT count() FROM `{table}`").decode())
    return counts


def a8_source_ddl(spec: TableSpec) -> sql.Composed:
    """The vendor's table: the spec's columns, all nullable (the vendor enforces nothing)."""
    cols = sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(c.name), sql.SQL(c.source_type)) for c in spec.columns
    )
    return sql.SQL("CREATE TABLE {} ({})").format(sql.Identifier(spec.name), cols)


def load_a8(dsn: str, dataset: Path) -> dict[str, int]:
    counts = {}
    with psycopg.connect(dsn) as conn:
        for spec in a8_source.TABLES.values():
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(spec.name)))
            conn.execute(a8_source_ddl(spec))
            conn.execute(sql.SQL("CREATE INDEX ON {} (time)").format(sql.Identifier(spec.name)))
            path = dataset / "a8" / f"{spec.name}.jsonl"
            if path.exists():
                names = spec.column_names
                jsonb = {c.name for c in spec.columns if c.pg_type == "jsonb"}
                copy_sql = sql.SQL("COPY {} ({}) FROM STDIN").format(
                    sql.Identifier(spec.name), sql.SQL(", ").join(map(sql.Identifier, names))
                )
                with conn.cursor().copy(copy_sql) as copy, path.open(encoding="utf-8") as fh:
                    for line in fh:
                        rec = json.loads(line)
                        copy.write_row([
                            json.dumps(rec.get(n)) if n in jsonb and rec.get(n) is not None else rec.get(n)
                            for n in names
                        ])
            counts[spec.name] = conn.execute(
                sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(spec.name))
            ).fetchone()[0]
    return counts


def load_unless(endpoint: str, access_key: str, secret_key: str, dataset: Path, *, backdate: bool = True) -> int:
    """Every conversation object of the dataset into the Unless bucket; ``backdate``: re-date them as the
    vendor would have (only the in-process moto server allows it, see :func:`backdate_unless`; on
    another S3 they are dated today, and the loads read them as objects rewritten today)."""
    from concurrent.futures import ThreadPoolExecutor

    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=access_key,
                      aws_secret_access_key=secret_key, region_name="us-east-1")
    try:
        s3.create_bucket(Bucket=UNLESS_BUCKET)
    except (s3.exceptions.BucketAlreadyOwnedByYou, s3.exceptions.BucketAlreadyExists):
        pass  # seeded before (compose's airflow-init runs on every `up`): the objects are written again
    root = dataset / "unless"
    files = [p for p in root.rglob("*.json")] if root.is_dir() else []
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda p: s3.put_object(Bucket=UNLESS_BUCKET, Key=p.relative_to(root).as_posix(),
                                              Body=p.read_bytes()), files))
    if backdate:
        backdate_unless({p.relative_to(root).as_posix(): p for p in files}, dataset)
    return len(files)


def backdate_unless(files: dict[str, Path], dataset: Path) -> None:
    """Give each object the LastModified the vendor would have: a minute after its last log item.

    S3 sets LastModified to the upload time, which would put every synthetic
    conversation on today.  The moto server runs in this process, so its objects
    are re-dated in place; an object that does not parse (a deliberately bad one)
    keeps the noon of the dataset's first day.
    """
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    manifest = json.loads((dataset / "manifest.json").read_text())
    fallback = dt.datetime.fromisoformat(manifest["start"]) + dt.timedelta(hours=12)
    keys = s3_backends[DEFAULT_ACCOUNT_ID]["global"].buckets[UNLESS_BUCKET].keys
    for key, path in files.items():
        try:
            stamps = [item["timestamp"] for item in json.loads(path.read_text()).get("chatHistory", [])]
            modified = dt.datetime.fromtimestamp(max(stamps) / 1000 + 60, dt.timezone.utc).replace(tzinfo=None)
        except (ValueError, KeyError, TypeError, AttributeError):
            modified = fallback
        for version in keys.getlist(key):
            version.last_modified = modified  # moto keeps naive UTC


# -- the env file ----------------------------------------------------------------------------------


def connections(state: SandboxState, server_dsn: str, warehouse: str) -> dict[str, dict]:
    """The sandbox's Airflow connections, in the form of ``airflow connections import``."""
    ports, sec = state.ports, state.secrets

    def postgres(dsn: str) -> dict:
        from urllib.parse import unquote, urlsplit

        url = urlsplit(dsn)
        return {"conn_type": "postgres", "host": url.hostname, "port": url.port, "login": unquote(url.username),
                "password": unquote(url.password), "schema": url.path.lstrip("/")}

    return {
        "chat_warehouse": postgres(warehouse),
        "a8_timescale": postgres(with_database(server_dsn, state.a8_database)),
        "botslovers_clickhouse": {
            "conn_type": "clickhouse", "host": "127.0.0.1", "port": ports["clickhouse"],
            "login": sec["clickhouse_user"], "password": sec["clickhouse_password"], "schema": "default",
            "extra": {"secure": False},
        },
        "ultimate_export": {
            "conn_type": "ultimate_export", "host": "127.0.0.1", "port": ports["ultimate"], "schema": "http",
            "password": sec["ultimate_token"],
            "extra": {"organization_id": sec["ultimate_organization_id"], "bot_id": "ult-bank", "api_version": "v3"},
        },
        # port 0, not unset, on the two types without a port: the UI's Test button sends 0 for an unset
        # port, and the API then refuses to test with the stored (masked) secret, as if aimed elsewhere
        "reporting_pii": {"conn_type": "reporting_pii", "password": sec["reporting_pii_key"], "port": 0},
        "unless_s3": {
            "conn_type": "unless_s3", "login": sec["s3_access_key"], "password": sec["s3_secret_key"], "port": 0,
            "extra": {"endpoint_url": f"http://127.0.0.1:{ports['s3']}", "region_name": "us-east-1"},
        },
    }


def env_vars(root: Path, state: SandboxState, server_dsn: str, warehouse: str, dataset: Path) -> dict[str, str]:
    ports, sec = state.ports, state.secrets
    manifest = json.loads((dataset / "manifest.json").read_text()) if (dataset / "manifest.json").exists() else {}
    airflow_db = with_database(server_dsn, state.airflow_database).replace("postgresql://", "postgresql+psycopg2://", 1)
    return {
        "CHAT_INGEST_WAREHOUSE_DSN": warehouse,
        "CHAT_INGEST_CONFIG": str(root / "sources.yaml"),
        # the PostgreSQL connections as URIs, so a shell can hand them to psql as they are
        "AIRFLOW_CONN_CHAT_WAREHOUSE": warehouse,
        "AIRFLOW_CONN_A8_TIMESCALE": with_database(server_dsn, state.a8_database),
        **{f"AIRFLOW_CONN_{conn_id.upper()}": json.dumps(conn)
           for conn_id, conn in connections(state, server_dsn, warehouse).items() if conn["conn_type"] != "postgres"},
        "SANDBOX_DIR": str(root),
        "SANDBOX_DATASET": str(dataset),
        "SANDBOX_DATASET_START": manifest.get("start", ""),
        "SANDBOX_DATASET_END": manifest.get("end", ""),
        "SANDBOX_CLICKHOUSE_URL": f"http://127.0.0.1:{ports['clickhouse']}",
        "SANDBOX_CLICKHOUSE_HTTPS_URL": f"https://127.0.0.1:{ports['clickhouse_https']}",
        "SANDBOX_TLS_CA": str(root / "tls" / "ca.pem"),
        "SANDBOX_CLICKHOUSE_USER": sec["clickhouse_user"],
        "SANDBOX_CLICKHOUSE_PASSWORD": sec["clickhouse_password"],
        "SANDBOX_CLICKHOUSE_ADMIN_PASSWORD": sec["clickhouse_admin_password"],
        "SANDBOX_ULTIMATE_URL": f"http://127.0.0.1:{ports['ultimate']}",
        "SANDBOX_ULTIMATE_ADMIN_TOKEN": sec["ultimate_admin_token"],
        "SANDBOX_S3_ENDPOINT": f"http://127.0.0.1:{ports['s3']}",
        "SANDBOX_UNLESS_BUCKET": UNLESS_BUCKET,
        "AIRFLOW_HOME": str(root / "airflow"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": airflow_db,
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        # a login, not an anonymous admin: the password is generated into state.json
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(root / "airflow" / "passwords.json"),
        "AIRFLOW__API_AUTH__JWT_SECRET": sec["airflow_jwt_secret"],
        "AIRFLOW__API__SECRET_KEY": sec["airflow_secret_key"],
        "AIRFLOW__CORE__FERNET_KEY": sec["airflow_fernet_key"],  # connection passwords encrypted at rest
        **api_env(8080),
        "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
        # A task whose process died with a killed scheduler is found and retried within minutes, not 5+.
        "AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL": "30",
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "120",
        # A DAG file parses in well under a second, but a task parses it too, and on a busy 2-core machine
        # (18 validate tasks starting together) the default 30 s timed out and the task was retried.
        "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "120",
        # task processes inherit the project's heavy imports (Great Expectations) from the forkserver
        "AIRFLOW__SCHEDULER__MP_START_METHOD": "forkserver",
        "AIRFLOW__SCHEDULER__MP_FORKSERVER_PRELOAD": ",".join(SCHEDULER_FORKSERVER_PRELOAD),
        "AIRFLOW__DAG_PROCESSOR__DAG_FILE_PROCESSOR_TIMEOUT": "180",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        # OpenLineage events of every task, as JSON lines (production points this at Marquez or a catalog)
        "AIRFLOW__OPENLINEAGE__NAMESPACE": "chat-ingest",
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps({"type": "file", "append": True,
                                                       "log_file_path": str(root / "openlineage" / "events.jsonl")}),
        "PYTHONPATH": str(REPO / "plugins"),
    }


def write_sources_config(path: Path, dataset: Path) -> None:
    """include/config/sources.yaml with the tenants this sandbox's dataset covers."""
    import yaml

    from chat_ingest.config import DEFAULT_CONFIG

    manifest = json.loads((dataset / "manifest.json").read_text()) if (dataset / "manifest.json").exists() else {}
    unless = manifest.get("unless", {})
    config = yaml.safe_load(DEFAULT_CONFIG.read_text())
    config["botslovers"]["companies"] = _tenants(dataset, "botslovers")
    config["a8"]["bots"] = manifest.get("a8", {}).get("bots", [])
    config["ultimate"]["bots"] = _tenants(dataset, "ultimate")
    config["unless"].update(bucket=UNLESS_BUCKET, account=unless.get("account", ""),
                            websites=unless.get("websites", []))
    # the stand-ins hold every row of a day before it ends: nothing comes late, nothing to recheck
    config["settle_minutes"] = 0
    config["recheck_days"] = 0
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def write_secret_json(path: Path, value: dict) -> None:
    """A JSON file only its owner reads (connections, the UI password)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(json.dumps(value, indent=2))


def write_env(path: Path, values: dict[str, str]) -> None:
    lines = ["# chat-ingest sandbox: source me (set -a; . .sandbox/env)"]
    lines += [f"export {k}={shlex.quote(v)}" for k, v in values.items()]
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)


# -- the supervisor ------------------------------------------------------------------------------------


def serve(root: Path, dataset: Path) -> None:
    """Start every stand-in, load the dataset, write ``env`` and ``ready``, run until SIGTERM."""
    from moto.server import ThreadedMotoServer

    from sandbox.clickhouse_server import ChdbBackend, ClickHouseHTTPServer
    from sandbox.postgres import EmbeddedPostgres
    from sandbox.tls import server_context
    from sandbox.ultimate_server import UltimateConfig, UltimateHTTPServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto logs every request otherwise
    root = root.resolve()
    dataset = dataset.resolve()
    (root / "ready").unlink(missing_ok=True)
    state = SandboxState(root)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    # An external warehouse is used as given; the A8 stand-in and Airflow's metadata get
    # their own databases on the same server.
    external = os.environ.get("CHAT_INGEST_WAREHOUSE_DSN")
    pg = None
    state.shared_server = bool(external)
    if external:
        server_dsn = warehouse_dsn = external
    else:
        pg = EmbeddedPostgres(root / "pg", state.ports["postgres"])
        pg.start()
        server_dsn = pg.dsn("postgres")
        warehouse_dsn = with_database(server_dsn, WAREHOUSE_DB)
    servers: list = []
    backend = None
    try:
        for db in (state.a8_database, state.airflow_database) + (() if external else (WAREHOUSE_DB,)):
            ensure_database(server_dsn, db)
        # a process that dies mid-transaction must not keep row locks the next scheduler waits on
        with psycopg.connect(server_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("ALTER DATABASE {} SET idle_in_transaction_session_timeout = '5min'").format(
                sql.Identifier(state.airflow_database)))

        sec = state.secrets
        chdb_path = root / "chdb"
        shutil.rmtree(chdb_path, ignore_errors=True)
        backend = ChdbBackend(str(chdb_path), {
            sec["clickhouse_user"]: (sec["clickhouse_password"], True),
            "admin": (sec["clickhouse_admin_password"], False),
        })
        counts = load_botslovers(backend, dataset)
        ch = ClickHouseHTTPServer(("127.0.0.1", state.ports["clickhouse"]), backend)
        ch_https = ClickHouseHTTPServer(("127.0.0.1", state.ports["clickhouse_https"]), backend)
        ch_https.socket = server_context(root / "tls").wrap_socket(ch_https.socket, server_side=True)
        ult = UltimateHTTPServer(("127.0.0.1", state.ports["ultimate"]), UltimateConfig(
            export_root=dataset / "ultimate", token=sec["ultimate_token"],
            organization_id=sec["ultimate_organization_id"], admin_token=sec["ultimate_admin_token"],
        ))
        for srv in (ch, ch_https, ult):
            threading.Thread(target=srv.serve_forever, daemon=True).start()
            servers.append(srv)
        moto = ThreadedMotoServer(ip_address="127.0.0.1", port=state.ports["s3"], verbose=False)
        moto.start()
        servers.append(moto)
        counts["unless_objects"] = load_unless(f"http://127.0.0.1:{state.ports['s3']}", sec["s3_access_key"],
                                               sec["s3_secret_key"], dataset)
        counts.update({f"a8.{k}": v for k, v in load_a8(with_database(server_dsn, state.a8_database), dataset).items()})

        write_sources_config(root / "sources.yaml", dataset)
        write_env(root / "env", env_vars(root, state, server_dsn, warehouse_dsn, dataset))
        (root / "openlineage").mkdir(exist_ok=True)
        write_secret_json(root / "connections.json", connections(state, server_dsn, warehouse_dsn))
        write_secret_json(root / "airflow" / "passwords.json", {ADMIN_USER: sec["airflow_admin_password"]})
        (root / "loaded.json").write_text(json.dumps(counts, indent=2))
        (root / "ready").write_text(str(os.getpid()))
        print(f"{dt.datetime.now(dt.timezone.utc):%H:%M:%S} sandbox ready", flush=True)
        stop.wait()
    finally:
        for srv in servers:
            if hasattr(srv, "shutdown"):
                srv.shutdown()
            else:
                srv.stop()
        if backend is not None:
            backend.close()
        if pg is not None:
            pg.stop()
        (root / "ready").unlink(missing_ok=True)
        print("sandbox stopped", flush=True)
