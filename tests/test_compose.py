"""docker-compose.yaml: the official Airflow 3 shape plus the warehouse and the source stand-ins."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support.sandbox import REPO

COMPOSE = yaml.safe_load((REPO / "docker-compose.yaml").read_text())
AIRFLOW_SERVICES = ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer",
                    "airflow-worker")


def test_services_are_all_there():
    assert set(COMPOSE["services"]) >= {"postgres", "redis", "airflow-init", *AIRFLOW_SERVICES,
                                        "warehouse", "clickhouse", "a8", "minio", "ultimate"}


@pytest.mark.parametrize("name", [*AIRFLOW_SERVICES, "postgres", "redis", "warehouse", "clickhouse", "a8",
                                  "minio", "ultimate"])
def test_long_running_services_have_healthchecks(name):
    assert COMPOSE["services"][name]["healthcheck"]["test"]


def test_images():
    services = COMPOSE["services"]
    assert services["airflow-scheduler"]["image"].startswith("chat-ingest/airflow:3.")
    assert services["clickhouse"]["image"].startswith("clickhouse/clickhouse-server:")
    assert services["a8"]["image"].startswith("timescale/timescaledb:")
    assert services["minio"]["image"].startswith("minio/minio")
    assert services["redis"]["image"].startswith("redis:")
    assert "FROM apache/airflow:3.3.2" in (REPO / "Dockerfile").read_text()


def test_airflow_services_mount_the_project_and_use_celery():
    for name in AIRFLOW_SERVICES:
        service = COMPOSE["services"][name]
        mounts = {m.split(":")[1] for m in service["volumes"]}
        assert {"/opt/airflow/dags", "/opt/airflow/plugins", "/opt/airflow/include"} <= mounts, name
        assert service["environment"]["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert COMPOSE["services"]["airflow-worker"]["command"].startswith("celery worker")


def test_no_secret_is_written_in_the_file():
    for key, value in COMPOSE["x-airflow-common"]["environment"].items():
        if key.startswith("AIRFLOW_CONN_") or ("PASSWORD" in key and not key.endswith("_FILE")):
            assert "${" in str(value), key


def test_a_login_is_required_and_ports_listen_on_loopback():
    env = COMPOSE["x-airflow-common"]["environment"]
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS"] == "false"
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] == "admin:admin"
    init = COMPOSE["services"]["airflow-init"]
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"] in "\n".join(init["command"])
    assert init["environment"]["AIRFLOW_ADMIN_PASSWORD"].startswith("${AIRFLOW_ADMIN_PASSWORD:?")
    published = [port for service in COMPOSE["services"].values() for port in service.get("ports", [])]
    assert published and all(str(port).startswith("127.0.0.1:") for port in published), published


@pytest.mark.skipif(not shutil.which("docker") or subprocess.run(["docker", "compose", "version"],
                    capture_output=True).returncode != 0, reason="no docker compose client on this machine")
def test_docker_compose_config_accepts_the_file():
    env_file = REPO / ".env.example"
    res = subprocess.run(["docker", "compose", "--env-file", str(env_file), "-f", str(REPO / "docker-compose.yaml"),
                          "config", "--quiet"], capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 0, res.stderr


def test_the_file_follows_the_compose_specification():
    """Validated against the Compose specification's JSON schema (vendored by check-jsonschema):
    this machine has no Docker engine to ask."""
    done = subprocess.run([str(Path(sys.executable).parent / "check-jsonschema"), "--builtin-schema",
                           "vendor.compose-spec", str(REPO / "docker-compose.yaml")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_airflow_services_run_what_the_local_cluster_runs():
    """`make cluster` and compose start the same commands, so what the cluster test proves holds here."""
    from sandbox.services import COMPONENTS, celery_workers

    worker = list(celery_workers(1)["worker-1"])
    del worker[worker.index("--celery-hostname"):worker.index("--celery-hostname") + 2]  # one name per local worker
    local = {**COMPONENTS, "celery worker": tuple(worker)}
    services = {"api-server": "airflow-apiserver", "scheduler": "airflow-scheduler",
                "dag-processor": "airflow-dag-processor", "triggerer": "airflow-triggerer",
                "celery worker": "airflow-worker"}
    for name, service in services.items():
        command = COMPOSE["services"][service]["command"].split("#")[0].split()
        assert tuple(command) == local[name], service


def test_airflow_init_seeds_the_stand_ins_with_the_sandbox_loaders():
    """`docker compose up` starts with data: airflow-init runs sandbox.seed (tested against live
    stand-ins in tests/integration/test_sandbox.py) after the stand-ins are healthy, on the dataset
    volume the ClickHouse server and the Ultimate stand-in read."""
    services = COMPOSE["services"]
    init = services["airflow-init"]
    seeding = "python -m sandbox.seed --dataset /opt/airflow/dataset --clickhouse-dataset dataset"
    assert seeding in "\n".join(init["command"])
    assert {name for name, c in init["depends_on"].items() if c["condition"] == "service_healthy"} >= {
        "clickhouse", "a8", "minio"}
    assert "dataset-volume:/opt/airflow/dataset" in init["volumes"]
    assert "dataset-volume:/var/lib/clickhouse/user_files/dataset:ro" in services["clickhouse"]["volumes"]
    assert "dataset-volume:/opt/airflow/dataset:ro" in services["ultimate"]["volumes"]
    seed_env = {k: v for k, v in init["environment"].items() if k.startswith("SEED_")}
    from sandbox.seed import __doc__ as seed_doc
    assert set(seed_env) == {name for name in seed_env if name in seed_doc} and len(seed_env) == 7
    common = COMPOSE["x-airflow-common"]["environment"]
    assert seed_env["SEED_A8_DSN"].split("@")[1] == common["AIRFLOW_CONN_A8_TIMESCALE"].split("@")[1]


def test_every_image_is_pinned():
    """No `latest`, no bare major version: `docker compose up` next month runs what was tested."""
    for name, service in COMPOSE["services"].items():
        image = service.get("image") or COMPOSE["x-airflow-common"]["image"]
        repository, _, tag = image.rpartition(":")
        assert repository and tag and "latest" not in tag and "." in tag, (name, image)


def test_celery_workers_preload_what_the_project_preloads():
    """Compose's workers import what `make cluster`'s do before forking (chat_ingest.project)."""
    import json

    from chat_ingest.project import TASK_PRELOAD_MODULES

    extra = json.loads(COMPOSE["x-airflow-common"]["environment"]["AIRFLOW__CELERY__EXTRA_CELERY_CONFIG"])
    assert extra == {"imports": list(TASK_PRELOAD_MODULES)}
