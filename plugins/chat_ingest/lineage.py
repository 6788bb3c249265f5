"""OpenLineage: what each task read and wrote, named as OpenLineage's dataset naming spec names it.

A landing task reads a vendor's table, endpoint or prefix and writes ``staging.*``; a validate task
reads a staging table (with its expectations as data-quality assertions); a reporting rebuild reads
``staging.*`` and writes ``reporting.*``.  The operators report it from
``get_openlineage_facets_on_complete``; the reporting DAG's TaskFlow tasks through Airflow's hook
lineage collector.  The official OpenLineage provider emits the events to whatever transport
``[openlineage]`` configures (the sandbox: a file of JSON lines; in production, Marquez or a
catalog).  Namespaces never carry credentials: a connection's host and port only.
"""

from __future__ import annotations

from collections.abc import Iterable

from chat_ingest.project import WAREHOUSE_CONN_ID


def dataset(namespace: str, name: str, facets: dict | None = None):
    from openlineage.client.event_v2 import Dataset

    return Dataset(namespace=namespace, name=name, facets=facets or {})


def lineage(inputs: Iterable = (), outputs: Iterable = ()):
    from airflow.providers.openlineage.extractors import OperatorLineage

    return OperatorLineage(inputs=list(inputs), outputs=list(outputs))


def _endpoint(conn_id: str, scheme: str | None) -> tuple[str, str]:
    """``scheme://host:port`` of a connection, and its schema (the database for SQL sources).  Without
    ``scheme``: the connection's schema, where an HTTP connection keeps its scheme (https if empty)."""
    from airflow.sdk import BaseHook

    conn = BaseHook.get_connection(conn_id)
    port = f":{conn.port}" if conn.port else ""
    return f"{scheme or conn.schema or 'https'}://{conn.host}{port}", conn.schema or ""


def postgres_table(conn_id: str, schema: str, table: str, facets: dict | None = None):
    """A PostgreSQL table: namespace ``postgres://host:port``, name ``database.schema.table``."""
    namespace, database = _endpoint(conn_id, "postgres")
    return dataset(namespace, f"{database}.{schema}.{table}", facets)


def staging_table(table: str, facets: dict | None = None, conn_id: str = WAREHOUSE_CONN_ID):
    return postgres_table(conn_id, "staging", table, facets)


def clickhouse_table(conn_id: str, table: str):
    namespace, database = _endpoint(conn_id, "clickhouse")
    return dataset(namespace, f"{database or 'default'}.{table}")


def http_endpoint(conn_id: str, path: str):
    namespace, _ = _endpoint(conn_id, None)
    return dataset(namespace, path)


def s3_prefix(bucket: str, prefix: str):
    return dataset(f"s3://{bucket}", prefix.rstrip("/"))


def assertions_facet(outcomes) -> dict:
    """The gate's expectations as OpenLineage data-quality assertions (one per expectation)."""
    from openlineage.client.facet_v2 import data_quality_assertions_dataset as dq

    return {"dataQualityAssertions": dq.DataQualityAssertionsDatasetFacet(assertions=[
        dq.Assertion(assertion=o.expectation, success=o.success, column=o.column) for o in outcomes])}


def report_sql_lineage(inputs: Iterable[tuple[str, str]], outputs: Iterable[tuple[str, str]],
                       conn_id: str = WAREHOUSE_CONN_ID) -> None:
    """For a TaskFlow task: tell Airflow's hook lineage collector the warehouse tables (schema,
    table) it read and wrote; the OpenLineage provider turns them into the task's datasets."""
    from urllib.parse import quote

    from airflow.providers.postgres.hooks.postgres import PostgresHook
    from airflow.sdk.lineage import get_hook_lineage_collector

    hook = PostgresHook(postgres_conn_id=conn_id)
    conn = hook.get_connection(conn_id)
    base = f"postgres://{conn.host}:{conn.port or 5432}/{quote(conn.schema or 'postgres')}"
    collector = get_hook_lineage_collector()
    for schema, table in inputs:
        collector.add_input_asset(hook, uri=f"{base}/{schema}/{table}")
    for schema, table in outputs:
        collector.add_output_asset(hook, uri=f"{base}/{schema}/{table}")
