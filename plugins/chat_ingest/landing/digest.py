"""The identical road: a range whose source digest equals staging's is not extracted at all.

The digest is defined by :class:`~chat_ingest.landing.batch.Extraction`; :func:`digest_sql` computes it
over PostgreSQL rows (staging's, or an A8 source's), the sources that are not PostgreSQL compute
the same in their own SQL.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from psycopg import sql

from chat_ingest.landing.batch import Batch, Extraction
from chat_ingest.tablespec import Column, TableSpec

#: Integer types whose decimal text is the same in every database (see :class:`Extraction`).
_DIGEST_INTEGER_TYPES = ("smallint", "integer", "bigint")


def digestible(spec: TableSpec) -> bool:
    """Whether every column of ``spec`` has a portable canonical text (one a non-PostgreSQL source
    can produce too)."""
    return all(c.pg_type in ("text", "timestamptz", *_DIGEST_INTEGER_TYPES) for c in spec.columns)


def digest_sql(spec: TableSpec, relation: sql.Composable, where: sql.Composable, *, exact: bool) -> sql.Composed:
    """``SELECT count, sum`` of the :class:`Extraction` digest over ``relation``'s rows ``where``: in the
    portable form (timestamps to the second), or ``exact`` (PostgreSQL on both sides).

    Exact, each row is its columns cast to staging's types and hashed by PostgreSQL's own hash of
    each type (``hash_record_extended``, PostgreSQL 14 and later): no value is printed as text, which
    made the text digest three times slower (a 1M-row A8 day: 1.4 s against 0.5 s per side,
    bench/README.md).  Values equal by their type's equality hash alike (a JSON ``1.0`` and
    ``1.00``), so such a change is not reloaded; anything else a load would change is.  These hash
    functions do not change between PostgreSQL versions (hash partitions rely on them); should two
    servers still disagree, the digests differ and the range loads in full: slower, never wrong."""
    if exact:
        row = sql.SQL(", ").join(sql.SQL("({})::{}").format(sql.Identifier(c.name), sql.SQL(c.pg_type))
                                 for c in spec.columns)
        return sql.SQL(
            "SELECT count(*), coalesce(sum(hash_record_extended(ROW({row}), 0)::numeric), 0) "
            "FROM {relation} WHERE {where}"
        ).format(row=row, relation=relation, where=where)

    def canonical(col: Column) -> sql.Composable:
        value = sql.Identifier(col.name)
        if col.pg_type == "timestamptz":  # whole seconds, or the fraction's digits up to its last non-zero one
            value = sql.SQL(
                "CASE WHEN date_trunc('second', {v}) = {v} "
                "THEN to_char({v} AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') "
                "ELSE rtrim(to_char({v} AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US'), '0') END"
            ).format(v=sql.SQL("({})::timestamptz").format(value))
        return sql.SQL("coalesce(({})::text, chr(30))").format(value)

    return sql.SQL(
        "SELECT count(*), coalesce(sum(('x' || left(md5(concat_ws(chr(31), {fields})), 16))::bit(64)::bigint"
        "::numeric), 0) FROM {relation} WHERE {where}"
    ).format(fields=sql.SQL(", ").join(map(canonical, spec.columns)), relation=relation, where=where)


def identical_rows(batch: Batch, extraction: Extraction) -> int | None:
    """How many rows staging and the source both hold for the range, if they are the same rows
    (by their digests); None otherwise.

    The two digests are computed at once: each is a scan of the range on its own server, and
    done in turn they were the whole of an unchanged rerun's time (bench ``a8_rerun``).  Rows the
    source copied into the warehouse (``Extraction.query``) are digested on the loader's own
    connection, which runs one statement at a time: in turn."""
    if extraction.query is not None:
        staging_digest = _staging_digest(batch, extraction)
        return staging_digest[0] if staging_digest[0] and extraction.digest() == staging_digest else None
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="source-digest") as pool:
        source_digest = pool.submit(extraction.digest)
        staging_digest = _staging_digest(batch, extraction)
        if staging_digest[0] and source_digest.result() == staging_digest:
            return staging_digest[0]
    return None


def _staging_digest(batch: Batch, extraction: Extraction) -> tuple[int, int]:
    """Staging's rows of the range (this tenant's), digested as :class:`Extraction` says."""
    rows, hash_sum = batch.conn.execute(digest_sql(
        batch.spec, batch.target, batch.in_range(extraction.start, extraction.end),
        exact=extraction.digest_exact)).fetchone()
    return rows, int(hash_sum) % (1 << 64)
