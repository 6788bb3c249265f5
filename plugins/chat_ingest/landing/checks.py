"""What a row must pass to land, as SQL, and the quarantine of the rows that do not.

Both the checked road (raw text in a temp table) and the straight road (rows already typed in
staging) ask the same checks; typed, fewer are left (COPY enforced the types and required values).
"""

from __future__ import annotations

from psycopg import sql

from chat_ingest.landing.batch import Batch
from chat_ingest.rules import EARLIEST_TIMESTAMP, FUTURE_TOLERANCE, MAX_VALUE_BYTES, spoken
from chat_ingest.tablespec import Column, MergeRule, TableSpec

#: How much of a value over the size limit a quarantined payload keeps (characters).
QUARANTINE_KEEP_CHARS = 2000

Check = tuple[sql.Composable, sql.Composable]


def value_checks(spec: TableSpec, col: Column, typed: bool) -> list[Check]:
    """What a value of ``col`` must pass to land: (failing condition, message) pairs, in order.

    The value is raw text, or, when ``typed``, already of the spec's type (a row copied
    straight into staging), which leaves fewer checks.  Evaluated in order, a text value is
    only cast once it is known castable.
    """
    ident = sql.Identifier(col.name)
    text = not typed or col.pg_type == "text"
    checks = []
    if not col.nullable:
        checks.append((sql.SQL("{} IS NULL").format(ident), sql.Literal(f"{col.name}: required value is missing")))
    if col.name in spec.key and text:
        checks.append((sql.SQL("{} = ''").format(ident), sql.Literal(f"{col.name}: empty key")))
    if text:
        checks.append((sql.SQL("octet_length({}) > {}").format(ident, sql.Literal(col.max_bytes)),
                       sql.SQL("{} || octet_length({}) || {}").format(
                           sql.Literal(f"{col.name}: "), ident,
                           sql.Literal(f" bytes, over the limit of {col.max_bytes}"))))
    if not typed and col.pg_type != "text":
        checks.append((sql.SQL("{c} IS NOT NULL AND NOT pg_input_is_valid({c}, {t})").format(
                           c=ident, t=sql.Literal(col.pg_type)),
                       sql.SQL("{} || quote_literal(left({}, 60)) || {}").format(
                           sql.Literal(f"{col.name}: "), ident, sql.Literal(f" is not a valid {col.pg_type}"))))
    if col.pg_type == "timestamptz":
        at = sql.SQL("{}::timestamptz").format(ident)
        utc = sql.SQL("to_char({} AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')").format(at)
        checks.append((sql.SQL("{} < {}").format(at, sql.Literal(EARLIEST_TIMESTAMP)),
                       sql.SQL("{} || {} || {}").format(sql.Literal(f"{col.name}: "), utc,
                                                        sql.Literal(f" is before {EARLIEST_TIMESTAMP:%Y-%m-%d}"))))
        checks.append((sql.SQL("{} > now() + {}::interval").format(at, sql.Literal(FUTURE_TOLERANCE)),
                       sql.SQL("{} || {} || {}").format(sql.Literal(f"{col.name}: "), utc, sql.Literal(
                           f" is after the load time plus {spoken(FUTURE_TOLERANCE)}"))))
    return checks


def _first_failing(checks: list[Check]) -> sql.Composable:
    """The message of the first failing check, or NULL when all pass."""
    if not checks:  # a typed, optional value that has no range to respect
        return sql.SQL("NULL")
    return sql.SQL("CASE {} END").format(sql.SQL(" ").join(
        sql.SQL("WHEN {} THEN {}").format(condition, message) for condition, message in checks))


def row_checks(batch: Batch, typed: bool) -> list[list[Check]]:
    """Every check of a row, per column (see :func:`value_checks`), plus the window's own."""
    spec = batch.spec
    checks = [value_checks(spec, c, typed) for c in spec.columns]
    if spec.merge_rule is MergeRule.REPLACE_WINDOW:
        # A replaced window must only receive rows inside it, or a rerun could not remove them.
        cursor = sql.Identifier(spec.cursor)
        checks.append([(sql.SQL("{valid}NOT ({c}::timestamptz >= {s} AND {c}::timestamptz < {e})").format(
            valid=sql.SQL("") if typed else sql.SQL("pg_input_is_valid({}, 'timestamptz') AND ").format(cursor),
            c=cursor, s=sql.Literal(batch.window_start), e=sql.Literal(batch.window_end)),
            sql.Literal(f"{spec.cursor}: outside the load window"))])
    return checks


def reason(batch: Batch, *, typed: bool, earlier: tuple[sql.Composable, ...] = ()) -> sql.Composable:
    """Why a row cannot land -- a row of text, or, ``typed``, one copied straight into staging: NULL
    for a good row.  ``earlier``: reasons found before the checks (a mark the source set)."""
    reasons = [*earlier, *(_first_failing(checks) for checks in row_checks(batch, typed))]
    return sql.SQL("NULLIF(concat_ws('; ', {}), '')").format(sql.SQL(", ").join(reasons))


def fails(batch: Batch) -> sql.Composable:
    """Whether a row copied straight into staging fails a check: the reasons' conditions alone,
    so the scan of a good day builds no message."""
    conditions = [condition for checks in row_checks(batch, typed=True) for condition, _ in checks]
    return sql.SQL("({}) IS TRUE").format(sql.SQL(" OR ").join(conditions)) if conditions else sql.SQL("false")


def quarantine(batch: Batch, rows: sql.Composable, why: sql.Composable, payload: sql.Composable) -> int:
    """Move every row of ``rows`` (``<relation> i WHERE …``, open-ended) whose reason ``why`` is not
    NULL to ``audit.rejected_records``, with the reason and its ``payload`` (a ``jsonb`` of row ``i``).

    One pass evaluates the reason (casts are tried once per value).  A value over the size limit
    (``MAX_VALUE_BYTES``) is kept as its first ``QUARANTINE_KEEP_CHARS`` characters and its size:
    the audit row shows what was wrong without storing a 50 MB text again.
    """
    cur = batch.conn.execute(
        sql.SQL(
            "WITH bad AS (DELETE FROM {rows} {reason} IS NOT NULL RETURNING i, {reason} AS reason) "
            "INSERT INTO audit.rejected_records (run_id, source, table_name, tenant, payload, reason) "
            "SELECT %(run_id)s, %(source)s, %(table)s, %(tenant)s, "
            "(SELECT coalesce(jsonb_object_agg(key, CASE WHEN jsonb_typeof(value) = 'string' "
            "AND octet_length(value #>> '{{}}') > %(limit)s THEN to_jsonb(left(value #>> '{{}}', %(keep)s) || "
            "' … (' || octet_length(value #>> '{{}}') || ' bytes in all)') ELSE value END), '{{}}') "
            "FROM jsonb_each(p.payload)), reason "
            "FROM bad CROSS JOIN LATERAL (SELECT {payload} AS payload) p"
        ).format(rows=rows, reason=why, payload=payload),
        {"run_id": batch.run_id, "source": batch.spec.source, "table": batch.spec.name, "tenant": batch.tenant,
         "keep": QUARANTINE_KEEP_CHARS, "limit": MAX_VALUE_BYTES},
    )
    return cur.rowcount
