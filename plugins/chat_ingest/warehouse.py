"""The warehouse: connections, and the DDL of ``audit`` and of staging tables derived from specs."""

from __future__ import annotations

import hashlib

from psycopg import sql

from chat_ingest.project import SQL_DIR, WAREHOUSE_CONN_ID
from chat_ingest.tablespec import TableSpec

REPORTING_SQL = SQL_DIR / "reporting"


def connect(conn_id: str = WAREHOUSE_CONN_ID):
    """A psycopg 3 connection to the warehouse from its Airflow connection, in UTC.

    Every timestamp the project writes is UTC; pinning the session time zone keeps
    a server's local zone from leaking into casts of zone-less source values.  A load
    stages a day in temp tables: ``temp_buffers`` (settable only before the session's
    first temp table) keeps them in memory instead of spilling to disk.
    """
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    conn = PostgresHook(postgres_conn_id=conn_id).get_conn()
    conn.autocommit = False
    conn.execute("SET TIME ZONE 'UTC'")
    conn.execute("SET temp_buffers = '256MB'")
    conn.commit()
    return conn


def staging_ddl(spec: TableSpec) -> sql.Composed:
    """CREATE TABLE for the spec's staging table, with its unique key and the window index that
    serves validation, reporting and window replacement (no more: every index slows the merge).

    The window index is a BRIN (block range) index on (tenant, cursor): each load appends one
    tenant's window in one go, so the heap is laid out by window and a block range's min/max
    select it about as well as a B-tree would, at a fraction of the cost to maintain (a B-tree
    on the cursor doubled the time of landing 1M new rows; bench/README.md).  It replaces the
    B-tree earlier versions created under ``<table>_window_idx``.

    The lineage columns (and a tenant the source does not deliver) default to the loading
    transaction's settings, so a range can be copied straight into the table with the source's
    columns only (:meth:`~chat_ingest.staging.StagingLoader.land`); with no such setting, a
    stray insert fails instead of landing rows nobody can trace.  The defaults are also set on
    tables created by earlier versions, and so is every optional column a spec added since (a new
    vendor field lands in the table an earlier version created).
    """
    defaults = {"_run_id": "current_setting('chat_ingest.run_id')", "_loaded_at": "now()"}
    columns = []
    if not spec.tenant_in_source and spec.tenant_column:
        defaults[spec.tenant_column] = "current_setting('chat_ingest.tenant')"
        columns.append(sql.SQL("{} text NOT NULL").format(sql.Identifier(spec.tenant_column)))
    for col in spec.columns:
        null = sql.SQL("" if col.nullable else " NOT NULL")
        columns.append(sql.SQL("{} {}{}").format(sql.Identifier(col.name), sql.SQL(col.pg_type), null))
    columns.append(sql.SQL("_run_id text NOT NULL"))
    columns.append(sql.SQL("_loaded_at timestamptz NOT NULL"))
    if spec.staging_key:
        columns.append(sql.SQL("PRIMARY KEY ({})").format(sql.SQL(", ").join(map(sql.Identifier, spec.staging_key))))
    window_cols = [c for c in (spec.tenant_column, spec.cursor) if c]
    table = sql.SQL(
        "CREATE TABLE IF NOT EXISTS {table} ({columns});\n"
        "ALTER TABLE {table} {defaults};\n"
        "DROP INDEX IF EXISTS {btree};\n"
        "CREATE INDEX IF NOT EXISTS {index} ON {table} USING brin ({window_cols}) WITH (autosummarize = on);"
    ).format(
        table=sql.Identifier("staging", spec.staging_table),
        columns=sql.SQL(", ").join(columns),
        defaults=sql.SQL(", ").join(
            [sql.SQL("ADD COLUMN IF NOT EXISTS {} {}").format(sql.Identifier(c.name), sql.SQL(c.pg_type))
             for c in spec.columns if c.nullable]
            + [sql.SQL("ALTER COLUMN {} SET DEFAULT {}").format(sql.Identifier(c), sql.SQL(d))
               for c, d in defaults.items()]),
        btree=sql.Identifier("staging", f"{spec.staging_table}_window_idx"),
        index=sql.Identifier(f"{spec.staging_table}_window_brin"),
        window_cols=sql.SQL(", ").join(map(sql.Identifier, window_cols)),
    )
    return table + days_ddl(spec) if spec.days_table else table


def days_ddl(spec: TableSpec) -> sql.Composed:
    """The table of a spec's conversation days (``TableSpec.conversation_column``): which UTC days of
    the cursor hold a tenant's rows of a conversation, one row each.  The loader adds the days of every
    range it lands (:meth:`~chat_ingest.staging.StagingLoader.land`); a day whose rows
    were deleted since may stay, which only widens what a rebuild reads.  Created beside a staging
    table that already holds rows (an upgrade), it is filled from them once."""
    days = sql.Identifier("staging", spec.days_table)
    return sql.SQL(
        "\nCREATE TABLE IF NOT EXISTS {days} (tenant text NOT NULL, conversation_id text NOT NULL, day date NOT NULL, "
        "PRIMARY KEY (conversation_id, tenant, day));\n{fill};"
    ).format(days=days, fill=note_conversation_days(spec, sql.SQL("NOT EXISTS (SELECT FROM {})").format(days)))


def conversation_day_items(spec: TableSpec, alias: str) -> sql.Composed:
    """SELECT list items: a staging row's (``alias``) conversation and the UTC day of its cursor,
    named ``conversation_id`` and ``conversation_day``, as :func:`keep_conversation_days` reads them."""
    return sql.SQL(", {a}.{c}::text AS conversation_id, ({a}.{cursor} AT TIME ZONE 'UTC')::date AS conversation_day"
                   ).format(a=sql.Identifier(alias), c=sql.Identifier(spec.conversation_column),
                            cursor=sql.Identifier(spec.cursor))


def keep_conversation_days(spec: TableSpec, relation: str) -> sql.Composed:
    """INSERT of the (tenant, conversation_id, conversation_day) rows of ``relation`` (a CTE's name)
    into the spec's days table, in the order of its key (0.5 s less than in hash order for 250k
    entries), known ones left alone."""
    return sql.SQL(
        "INSERT INTO {days} SELECT tenant, conversation_id, conversation_day FROM {relation} "
        "WHERE conversation_id IS NOT NULL ORDER BY 2, 1, 3 ON CONFLICT DO NOTHING"
    ).format(days=sql.Identifier("staging", spec.days_table), relation=sql.Identifier(relation))


def note_conversation_days(spec: TableSpec, where: sql.Composable) -> sql.Composed:
    """The statement adding the conversation days of the spec's staging rows ``where`` to its days table:
    the one definition of "a conversation's days" besides the straight road's grouping, which
    builds the same items in its checking scan (:meth:`~chat_ingest.staging.StagingLoader.land`).
    ``OFFSET 0`` keeps the INSERT's key order from being merged into the DISTINCT (one sort of every
    row); whether the DISTINCT itself hashes is the planner's choice, which the loader steers
    (:func:`~chat_ingest.landing.checked._note_conversation_days`)."""
    return sql.SQL(
        "WITH conversation_days AS (SELECT DISTINCT t.{tenant}::text AS tenant{items} FROM {table} t "
        "WHERE {where} OFFSET 0) {keep}"
    ).format(tenant=sql.Identifier(spec.tenant_column), items=conversation_day_items(spec, "t"),
             table=sql.Identifier("staging", spec.staging_table), where=where,
             keep=keep_conversation_days(spec, "conversation_days"))


def ensure_schema(conn) -> None:
    """Create or update the whole warehouse schema -- audit, every source's staging tables, reporting
    -- idempotently, unless this very DDL has been applied already.

    Every task calls this first.  Running the DDL each time would be wrong as well as slow: ``CREATE
    INDEX IF NOT EXISTS`` and ``ALTER TABLE`` lock their table even when there is nothing to do, so a
    task running DDL deadlocks with one writing (a first run of four DAGs at once did).  So the DDL
    is one unit with one fingerprint in ``audit.schema_applied``: the first task applies it under a
    lock, every other task waits for that lock, sees the fingerprint and takes no lock at all.
    """
    from chat_ingest.sources import TABLES_BY_SOURCE

    specs = [spec for tables in TABLES_BY_SOURCE.values() for spec in tables.values()]
    statements = [(SQL_DIR / "audit" / "ddl.sql").read_text(), *(staging_ddl(spec).as_string(conn) for spec in specs),
                  *(ddl.read_text() for ddl in (REPORTING_SQL / "ddl.sql", REPORTING_SQL / "comments.sql"))]
    fingerprint = hashlib.sha256("\n".join(statements).encode()).hexdigest()
    tables = [f"staging.{table}" for spec in specs for table in filter(None, (spec.staging_table, spec.days_table))]
    if _applied(conn, fingerprint, tables):
        return
    with conn.transaction():
        # Serialise concurrent first runs; whoever waited finds the DDL applied.
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('chat_ingest.ensure_schema'))")
        if _applied(conn, fingerprint, tables):
            return
        for statement in statements:
            conn.execute(statement)
        conn.execute("INSERT INTO audit.schema_applied (fingerprint) VALUES (%s) ON CONFLICT DO NOTHING",
                     (fingerprint,))


def _applied(conn, fingerprint: str, tables: list[str]) -> bool:
    """Whether this DDL ran before and its staging tables (and the three schemas) still exist."""
    with conn.transaction():
        present = conn.execute(
            "SELECT to_regclass('audit.schema_applied') IS NOT NULL AND to_regnamespace('reporting') IS NOT NULL "
            "AND NOT EXISTS (SELECT 1 FROM unnest(%s::text[]) t WHERE to_regclass(t) IS NULL)", (tables,)
        ).fetchone()[0]
        return present and conn.execute("SELECT 1 FROM audit.schema_applied WHERE fingerprint = %s",
                                        (fingerprint,)).fetchone() is not None
