-- Audit schema: what every run did, what it refused and why, and how validation went.
-- Idempotent: run before every load.
CREATE SCHEMA IF NOT EXISTS staging;
CREATE SCHEMA IF NOT EXISTS audit;
CREATE SCHEMA IF NOT EXISTS reporting;
-- staging holds raw personal data (message text, IP and e-mail addresses, coordinates) and audit holds
-- rejected raw payloads: only their owner, the loader, reads them, whatever a DBA granted to PUBLIC.
REVOKE ALL ON SCHEMA staging, audit FROM PUBLIC;

-- The fingerprints of the DDL already applied (chat_ingest.warehouse.ensure_schema skips those).
CREATE TABLE IF NOT EXISTS audit.schema_applied (
    fingerprint text PRIMARY KEY,
    applied_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS audit.load_log (
    load_id          bigserial PRIMARY KEY,
    run_id           text        NOT NULL,
    source           text        NOT NULL,
    table_name       text        NOT NULL,
    tenant           text,
    window_start     timestamptz NOT NULL,
    window_end       timestamptz NOT NULL,
    rows_extracted   bigint      NOT NULL,
    rows_rejected    bigint      NOT NULL,
    rows_duplicate   bigint      NOT NULL,
    rows_landed      bigint      NOT NULL,
    rows_unchanged   bigint      NOT NULL,
    rows_deleted     bigint      NOT NULL,
    duration_seconds double precision NOT NULL,
    loaded_at        timestamptz NOT NULL DEFAULT now()
);
-- Columns the source delivered that the table spec does not know (reported, not landed).
ALTER TABLE audit.load_log ADD COLUMN IF NOT EXISTS ignored_columns text[] NOT NULL DEFAULT '{}';
-- What the source delivered that no column names, with the rows holding it: a table's ignored columns
-- and a document's undeclared fields (landed in its extra column), {name: rows}.
ALTER TABLE audit.load_log ADD COLUMN IF NOT EXISTS drift jsonb NOT NULL DEFAULT '{}';
CREATE INDEX IF NOT EXISTS load_log_source_table_idx ON audit.load_log (source, table_name, window_start);

CREATE TABLE IF NOT EXISTS audit.rejected_records (
    rejected_id bigserial PRIMARY KEY,
    run_id      text        NOT NULL,
    source      text        NOT NULL,
    table_name  text        NOT NULL,
    tenant      text,
    payload     jsonb       NOT NULL,
    reason      text        NOT NULL,
    rejected_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS rejected_records_run_idx ON audit.rejected_records (source, table_name, run_id);

CREATE TABLE IF NOT EXISTS audit.validation_results (
    validation_id      bigserial PRIMARY KEY,
    run_id             text        NOT NULL,
    source             text        NOT NULL,
    table_name         text        NOT NULL,
    window_start       timestamptz NOT NULL,
    window_end         timestamptz NOT NULL,
    expectation        text        NOT NULL,
    column_name        text,
    success            boolean     NOT NULL,
    element_count      bigint,
    unexpected_count   bigint,
    unexpected_values  jsonb,
    mostly             double precision,
    validated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS validation_results_run_idx ON audit.validation_results (source, table_name, run_id);

CREATE TABLE IF NOT EXISTS audit.watermarks (
    source     text        NOT NULL,
    scope      text        NOT NULL,
    watermark  timestamptz NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, scope)
);

-- The reporting days each load changed (inserted, updated or deleted rows of), per source and tenant
-- (NULL: a table the vendor does not split by tenant).  The reporting DAG rebuilds exactly these days
-- and remembers the last change it consumed, so a late file or a rewritten document recomputes the
-- earlier day it belongs to.
CREATE TABLE IF NOT EXISTS audit.changed_days (
    change_id  bigserial PRIMARY KEY,
    run_id     text        NOT NULL,
    source     text        NOT NULL,
    table_name text        NOT NULL,
    tenant     text,
    day        date        NOT NULL,
    changed_at timestamptz NOT NULL DEFAULT now(),
    -- set by the reporting build that rebuilt the day (per row: loads commit out of id order)
    consumed_at timestamptz
);
CREATE INDEX IF NOT EXISTS changed_days_pending_idx ON audit.changed_days (change_id) WHERE consumed_at IS NULL;

-- Stops a straight landing (an INSERT … SELECT into a staging table, staging.py) at a row its source
-- already marked bad: only the checked path can keep the row's reason, so the load goes that way.
CREATE OR REPLACE FUNCTION audit.refuse_marked_row(reason text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'a row is marked bad: %', reason USING ERRCODE = 'data_exception';
END
$$;

-- Gate results of warning severity (a vocabulary column's unmapped values) are reported, never blocking.
ALTER TABLE audit.validation_results ADD COLUMN IF NOT EXISTS severity text NOT NULL DEFAULT 'critical';

-- Values of a vocabulary column (A8 chat state, Ultimate conversation_status / last_resolution) that the
-- mapping in sources.yaml does not know, per validated batch: reporting counts them as outcome 'unknown'.
CREATE TABLE IF NOT EXISTS audit.unmapped_values (
    run_id       text        NOT NULL,
    source       text        NOT NULL,
    table_name   text        NOT NULL,
    column_name  text        NOT NULL,
    value        text        NOT NULL,
    row_count    bigint      NOT NULL,
    window_start timestamptz NOT NULL,
    window_end   timestamptz NOT NULL,
    found_at     timestamptz NOT NULL DEFAULT now()
);
