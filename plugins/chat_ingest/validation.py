"""The Great Expectations gate: suites generated from table specs, run on a landed batch.

The batch is what a run covers in staging: the table's rows inside the run's
window (``cursor`` in ``[start, end)``) for the tenants it loaded.  That is a
superset of the rows the run itself wrote — an idempotent rerun rewrites
nothing, yet re-validates everything the window holds.

GX runs in SQL mode against the warehouse, so validating a day of millions of
rows never pulls them into this process.  One GX project folder under
``CHAT_INGEST_GX_ROOT`` (default ``$AIRFLOW_HOME/gx``) holds every staging table's
suite, its validation history and **one** Data Docs site, which the project's
Airflow plugin serves under the api-server (``/chat-ingest/data-docs/``, behind
the UI's login); each validate task links to its own validation page.  A
validation's datasource and checkpoint live in memory, so validations run side by
side; a file lock serialises only the writing of a suite and of Data Docs pages.
A validation writes its own page only.  The site's shared pages -- the index, which GX
builds by reading every result it lists (most of a validation's cost once a backfill
has written a few hundred), and the suites' pages -- are built when someone opens them
(:func:`build_data_docs_index`), not by every validation.  The warehouse
DSN reaches GX only through a ``${…}`` config variable, so it appears in no log and
no file.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from airflow.sdk.exceptions import AirflowFailException
from psycopg import sql

from chat_ingest.config import mostly_for
from chat_ingest.rules import EARLIEST_TIMESTAMP, FUTURE_TOLERANCE
from chat_ingest.tablespec import TableSpec

log = logging.getLogger(__name__)
# GX logs hundreds of "Skipping registering function ..." lines at INFO while it imports: noise that
# buried every validate task's own log.
logging.getLogger("great_expectations._docs_decorators").setLevel(logging.WARNING)

_DSN_VARIABLE = "CHAT_INGEST_GX_WAREHOUSE_DSN"
#: Validations the Data Docs index lists (the newest).  GX builds the index by reading every result it
#: lists, so an unbounded index took longer with every validation (a 30-day backfill writes 540); older
#: results keep their pages, which their tasks link to.
DATA_DOCS_INDEX_LIMIT = 200


class ValidationFailed(AirflowFailException):
    """The gate refused a batch; the message names table, column, values and counts.

    Not retried: the same rows would fail again.  Fix the data or the spec, then rerun.
    ``docs_page`` is the validation's Data Docs page (relative to the site).
    """

    def __init__(self, message: str, docs_page: str | None = None, outcomes: list | None = None) -> None:
        super().__init__(message)
        self.docs_page = docs_page
        self.outcomes = outcomes or []


@dataclass
class ExpectationOutcome:
    expectation: str
    column: str | None
    success: bool
    element_count: int | None
    unexpected_count: int | None
    unexpected_values: list = field(default_factory=list)
    mostly: float | None = None
    #: ``critical`` fails the gate; ``warning`` (a vocabulary column's unmapped values, a value beyond a
    #: column's examples) is reported only.
    severity: str = "critical"
    #: What the outcome says, for a check of the loads' own record (:func:`load_outcomes`) rather than
    #: a GX expectation over the staged rows.
    detail: str | None = None

    @property
    def of_loads(self) -> bool:
        """Whether this outcome checks what the loads recorded, not the staged rows."""
        return self.expectation in LOAD_CHECKS

    @property
    def blocks(self) -> bool:
        return not self.success and self.severity == "critical"

    def describe(self) -> str:
        if self.detail:
            return self.detail
        values = ", ".join(f"{v['value']!r} ×{v['count']}" for v in self.unexpected_values[:10]) or "—"
        return (f"{self.column or '(table)'}: {self.expectation} failed — {self.unexpected_count} of "
                f"{self.element_count} rows unexpected: {values}")


@dataclass
class GateResult:
    outcomes: list[ExpectationOutcome]
    #: This validation's page in the Data Docs site, relative to the site's root.
    docs_page: str | None



def gx_root() -> Path:
    default = Path(os.environ.get("AIRFLOW_HOME", Path.home() / "airflow")) / "gx"
    return Path(os.environ.get("CHAT_INGEST_GX_ROOT") or default)


def data_docs_site() -> Path:
    """The folder of the one GX Data Docs site of every staging table (the plugin serves it)."""
    return gx_root() / "gx" / "uncommitted" / "data_docs" / "local_site"


def build_expectations(spec: TableSpec, now: dt.datetime | None = None,
                       vocabulary_seen: dict[str, dict] | None = None) -> list:
    """The suite for a spec: enums, required values, key uniqueness, sane timestamps and ranges.

    A vocabulary column (``Column.vocabulary``) gets a *warning* in-set expectation whose set is its
    mapped values as the batch spells them (``vocabulary_seen``: column → value → count) plus the
    mapping's own names, so GX reports exactly the unmapped values without failing the gate.  A
    column with examples (``Column.examples``) gets a warning in-set expectation of them.
    """
    import great_expectations.expectations as gxe
    from great_expectations.expectations.metadata_types import FailureSeverity

    from chat_ingest import vocabulary

    now = now or dt.datetime.now(dt.timezone.utc)

    def mostly(column: str, expectation: str) -> float:
        return mostly_for(spec.source, spec.name, column, expectation)

    suite = []
    for col in spec.columns:
        if col.allowed:
            suite.append(gxe.ExpectColumnValuesToBeInSet(
                column=col.name, value_set=list(col.allowed), mostly=mostly(col.name, "in_set")))
        if col.vocabulary:
            known = vocabulary.mapping(spec.source, col.name)
            seen = [v for v in (vocabulary_seen or {}).get(col.name, {}) if v is not None
                    and vocabulary.value_key(v) in known]
            suite.append(gxe.ExpectColumnValuesToBeInSet(
                column=col.name, value_set=sorted({*seen, *vocabulary.DEFAULTS[(spec.source, col.name)]}),
                severity=FailureSeverity.WARNING,
                notes=f"Unmapped values of {spec.source}.{col.name} (vocabulary in sources.yaml) report as "
                      "outcome 'unknown'; a warning, not a gate failure."))
        if col.examples:
            suite.append(gxe.ExpectColumnValuesToBeInSet(
                column=col.name, value_set=list(col.examples), severity=FailureSeverity.WARNING,
                notes=f"The seed gives these values of {spec.source}.{col.name} as examples, not as every "
                      "value: another one is reported, a warning, not a gate failure."))
        if not col.nullable:
            suite.append(gxe.ExpectColumnValuesToNotBeNull(column=col.name, mostly=mostly(col.name, "not_null")))
        if col.pg_type == "timestamptz":
            suite.append(gxe.ExpectColumnValuesToBeBetween(
                column=col.name, min_value=EARLIEST_TIMESTAMP, max_value=now + FUTURE_TOLERANCE,
                mostly=mostly(col.name, "between")))
        if col.value_range:
            low, high = col.value_range
            suite.append(gxe.ExpectColumnValuesToBeBetween(
                column=col.name, min_value=low, max_value=high, mostly=mostly(col.name, "between")))
    for later, earlier in spec.ordered_pairs:
        suite.append(gxe.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A=later, column_B=earlier, or_equal=True, mostly=mostly(later, f"after_{earlier}")))
    if len(spec.key) == 1:
        # Vendor ids are unique across tenants too: a collision means the same data was
        # configured under two tenants, which staging's (tenant, id) key cannot see.
        suite.append(gxe.ExpectColumnValuesToBeUnique(column=spec.key[0], mostly=mostly(spec.key[0], "unique")))
    elif spec.key:
        suite.append(gxe.ExpectCompoundColumnsToBeUnique(column_list=list(spec.key)))
    for columns in spec.unique_together:
        suite.append(gxe.ExpectCompoundColumnsToBeUnique(column_list=list(columns),
                                                         mostly=mostly(columns[-1], "unique")))
    return suite


def vocabulary_counts(conn, spec: TableSpec, query: str) -> dict[str, dict]:
    """Value → row count of each vocabulary column in the batch ``query``."""
    counts = {}
    for col in spec.columns:
        if col.vocabulary:
            counts[col.name] = dict(conn.execute(sql.SQL("SELECT {c}, count(*) FROM ({q}) b GROUP BY {c}").format(
                c=sql.Identifier(col.name), q=sql.SQL(query))).fetchall())
    return counts


def report_unmapped(conn, spec: TableSpec, counts: dict[str, dict], *, run_id: str, start: dt.datetime,
                    end: dt.datetime) -> dict[str, dict[str, int]]:
    """Log and record (``audit.unmapped_values``) the batch's values no vocabulary mapping knows."""
    from chat_ingest import vocabulary

    found = {column: vocabulary.unmapped(spec.source, column, seen) for column, seen in counts.items()}
    for column, values in found.items():
        for value, count in sorted(values.items()):
            log.warning("staging.%s.%s: unmapped value %r in %d row(s) of [%s, %s): reported as outcome "
                        "'unknown'; map it under vocabulary.%s.%s in sources.yaml", spec.staging_table, column,
                        value, count, start.isoformat(), end.isoformat(), spec.source, column)
            conn.execute(
                "INSERT INTO audit.unmapped_values (run_id, source, table_name, column_name, value, row_count, "
                "window_start, window_end) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                (run_id, spec.source, spec.name, column, value, count, start, end))
    return found


#: The outcomes :func:`load_outcomes` adds to GX's: the quarantined share, and the drift.
ROWS_QUARANTINED, UNDECLARED_FIELDS = LOAD_CHECKS = ("rows_quarantined", "undeclared_fields")
#: A reason's quoted values (``'many'``), left out where quarantine reasons are counted by kind.
_QUOTED = r"'(?:[^']|'')*'"
#: The commonest reasons a failed quarantine check names.
TOP_REASONS = 5


def load_outcomes(conn, spec: TableSpec, *, run_id: str, start: dt.datetime, end: dt.datetime,
                  tenants: list[str] | None) -> list[ExpectationOutcome]:
    """What this run's loads of the window recorded (``audit.load_log``, the latest load of each tenant
    and range), as outcomes beside GX's:

    * ``rows_quarantined``: critical when the window's quarantined share exceeds the table's tolerance
      (:func:`~chat_ingest.config.max_quarantined_for`), naming the commonest reasons (quoted values
      left out) and their counts; the rows stay in ``audit.rejected_records``.  A day whose records
      mostly cannot land would otherwise pass: its few (or no) landed rows meet every expectation;
    * ``undeclared_fields``: a warning naming what the source delivered that no column names (a
      table's ignored columns, a document's fields landed in ``extra``) and the rows holding each.
    """
    from chat_ingest.config import max_quarantined_for

    tenant_filter = sql.SQL("AND tenant = ANY({})").format(sql.Literal(list(tenants))) if tenants else sql.SQL("")
    latest = sql.SQL(
        "SELECT DISTINCT ON (tenant, window_start, window_end) tenant, rows_extracted, rows_rejected, drift "
        "FROM audit.load_log WHERE run_id = {run} AND source = {source} AND table_name = {table} "
        "AND window_start >= {start} AND window_end <= {end} {tenants} "
        "ORDER BY tenant, window_start, window_end, load_id DESC").format(
        run=sql.Literal(run_id), source=sql.Literal(spec.source), table=sql.Literal(spec.name),
        start=sql.Literal(start), end=sql.Literal(end), tenants=tenant_filter)
    with conn.transaction():
        extracted, rejected = conn.execute(sql.SQL(
            "SELECT coalesce(sum(rows_extracted), 0)::bigint, coalesce(sum(rows_rejected), 0)::bigint FROM ({}) l"
        ).format(latest)).fetchone()
        drift = conn.execute(sql.SQL(
            "SELECT f.key, sum(f.value::bigint)::bigint FROM ({}) l, jsonb_each_text(l.drift) f GROUP BY f.key "
            "ORDER BY 2 DESC, 1").format(latest)).fetchall()
        reasons = conn.execute(sql.SQL(
            "SELECT regexp_replace(reason, {quoted}, {elided}, 'g') AS kind, count(*) FROM audit.rejected_records "
            "WHERE run_id = {run} AND source = {source} AND table_name = {table} {tenants} "
            "GROUP BY kind ORDER BY 2 DESC, 1 LIMIT {top}").format(
            quoted=sql.Literal(_QUOTED), elided=sql.Literal("'…'"), run=sql.Literal(run_id),
            source=sql.Literal(spec.source), table=sql.Literal(spec.name), tenants=tenant_filter,
            top=sql.Literal(TOP_REASONS)),
        ).fetchall() if rejected else []
    tolerance = max_quarantined_for(spec.source, spec.name)
    share = rejected / extracted if extracted else 0.0
    passed = share <= tolerance
    detail = None if passed else (
        f"(table): {rejected} of {extracted} rows of the window were quarantined ({share:.1%}, over the "
        f"tolerance of {tolerance:.1%}, validation.max_quarantined in sources.yaml); commonest reasons: "
        + "; ".join(f"{kind} ×{count}" for kind, count in reasons)
        + " (audit.rejected_records holds the rows with their payloads)")
    outcomes = [ExpectationOutcome(
        expectation=ROWS_QUARANTINED, column=None, success=passed, element_count=extracted,
        unexpected_count=rejected, unexpected_values=[{"value": kind, "count": count} for kind, count in reasons],
        mostly=1 - tolerance, detail=detail)]
    if drift:
        outcomes.append(ExpectationOutcome(
            expectation=UNDECLARED_FIELDS, column=None, success=False, element_count=extracted,
            unexpected_count=max(rows for _, rows in drift),
            unexpected_values=[{"value": name, "count": rows} for name, rows in drift], severity="warning",
            detail=f"(table): the source delivered what no column of {spec.qualified_name} names (drift): "
                   + ", ".join(f"{name} in {rows} rows" for name, rows in drift)
                   + (" (landed in its extra column)" if "extra" in spec.column_names else " (not landed)")))
    return outcomes


def batch_query(conn, spec: TableSpec, start: dt.datetime, end: dt.datetime, tenants: list[str] | None) -> str:
    """The batch as a SQL string for GX (rendered with the driver's quoting, never by hand)."""
    query = sql.SQL("SELECT * FROM {t} WHERE {c} >= {s} AND {c} < {e}").format(
        t=sql.Identifier("staging", spec.staging_table), c=sql.Identifier(spec.cursor),
        s=sql.Literal(start), e=sql.Literal(end))
    if tenants and spec.tenant_column:
        query = sql.SQL("{q} AND {tc} = ANY({ts})").format(
            q=query, tc=sql.Identifier(spec.tenant_column), ts=sql.Literal(list(tenants)))
    return query.as_string(conn)


class _ProjectLock:
    """Serialise what validations write to shared files of the GX project: suites, the Data Docs index."""

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.path = root / ".lock"

    def __enter__(self):
        self.fh = self.path.open("w")
        fcntl.flock(self.fh, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc) -> None:
        fcntl.flock(self.fh, fcntl.LOCK_UN)
        self.fh.close()


def run_gate(conn, sqlalchemy_dsn: str, spec: TableSpec, *, run_id: str, start: dt.datetime, end: dt.datetime,
             tenants: list[str] | None) -> GateResult:
    """Validate the batch, store the outcome in ``audit.validation_results``, refresh Data Docs.

    Returns every outcome and the validation's Data Docs page; raises :class:`ValidationFailed` if
    an expectation of severity critical failed.
    """
    import great_expectations as gx

    import chat_ingest.gx_templates  # noqa: F401  (Data Docs templates compiled once per process tree)

    project = gx_root()
    query = batch_query(conn, spec, start, end, tenants)
    with conn.transaction():
        seen = vocabulary_counts(conn, spec, query)
    os.environ[_DSN_VARIABLE] = sqlalchemy_dsn
    try:
        context = _context(project)
        batch_definition = context.data_sources.add_postgres(
            "warehouse", connection_string="${" + _DSN_VARIABLE + "}",
        ).add_query_asset(f"{spec.staging_table}_batch", query=query).add_batch_definition_whole_table("window")
        with _ProjectLock(project):  # the suite's file, which the Data Docs index reads
            suite = context.suites.add_or_update(
                gx.ExpectationSuite(name=f"{spec.staging_table}_suite",
                                     expectations=build_expectations(spec, vocabulary_seen=seen)))
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=f"{spec.staging_table}_gate", data=batch_definition, suite=suite))
        checkpoint = context.checkpoints.add(gx.Checkpoint(
            name=f"{spec.staging_table}_checkpoint", validation_definitions=[definition],
            result_format={"result_format": "SUMMARY", "partial_unexpected_count": 20},
        ))
        result = checkpoint.run(run_id=gx.RunIdentifier(run_name=run_id))  # stores its result file
        identifier = next(iter(result.run_results))
        with _ProjectLock(project):  # the site's shared files
            docs_page = _write_validation_page(context, identifier, result.run_results[identifier])
            _index_outdated_marker().touch()
    finally:
        os.environ.pop(_DSN_VARIABLE, None)

    outcomes = []
    for validation in result.run_results.values():
        for r in validation.results:
            cfg = r.expectation_config
            column = cfg.kwargs.get("column") or (
                f"{cfg.kwargs['column_A']} >= {cfg.kwargs['column_B']}" if "column_A" in cfg.kwargs else None)
            outcomes.append(ExpectationOutcome(
                expectation=cfg.type, column=column, success=bool(r.success),
                element_count=r.result.get("element_count"), unexpected_count=r.result.get("unexpected_count"),
                unexpected_values=[{"value": v["value"], "count": v["count"]}
                                   for v in r.result.get("partial_unexpected_counts", [])],
                mostly=cfg.kwargs.get("mostly"), severity=cfg.severity.value,
            ))
    outcomes += load_outcomes(conn, spec, run_id=run_id, start=start, end=end, tenants=tenants)
    with conn.transaction():
        for o in outcomes:
            conn.execute(
                "INSERT INTO audit.validation_results (run_id, source, table_name, window_start, window_end, "
                "expectation, column_name, success, element_count, unexpected_count, unexpected_values, mostly, "
                "severity) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (run_id, spec.source, spec.name, start, end, o.expectation, o.column, o.success, o.element_count,
                 o.unexpected_count, json.dumps(o.unexpected_values, default=str), o.mostly, o.severity),
            )
        report_unmapped(conn, spec, seen, run_id=run_id, start=start, end=end)
    failed = [o for o in outcomes if o.blocks]
    if failed:
        raise ValidationFailed(
            f"staging.{spec.staging_table} failed validation for [{start.isoformat()}, {end.isoformat()}): "
            + "; ".join(o.describe() for o in failed)
            + ". The rows stay in staging for inspection; the task's GX Data Docs link shows the validation",
            docs_page, outcomes,
        )
    warnings = [o for o in outcomes if not o.success]
    for warning in warnings:
        log.warning("staging.%s: %s (a warning, not a gate failure)", spec.staging_table, warning.describe())
    log.info("staging.%s passed %d expectations (%d warning(s))", spec.staging_table, len(outcomes), len(warnings))
    return GateResult(outcomes, docs_page)


def _context(project: Path):
    """A GX context for one validation: its datasource, validation definition and checkpoint live in
    memory (no per-run configuration written, so validations run side by side), while the suites, the
    validation results and the Data Docs site are the project's folders, shared by every validation of
    every table."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import DataContextConfig, InMemoryStoreBackendDefaults

    def files(folder: str) -> dict:
        return {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(project / "gx" / folder)}

    defaults = InMemoryStoreBackendDefaults()
    stores = {**defaults.stores,
              defaults.expectations_store_name: {"class_name": "ExpectationsStore",
                                                 "store_backend": files("expectations")},
              defaults.validation_results_store_name: {"class_name": "ValidationResultsStore",
                                                       "store_backend": files("uncommitted/validations")}}
    site = {"class_name": "SiteBuilder", "show_how_to_buttons": False,
            "store_backend": files("uncommitted/data_docs/local_site"),
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder",
                                   "validation_results_limit": DATA_DOCS_INDEX_LIMIT}}
    config = DataContextConfig(store_backend_defaults=defaults, stores=stores, data_docs_sites={"local_site": site},
                               analytics_enabled=False)
    context = gx.get_context(mode="ephemeral", project_config=config)
    context.variables.progress_bars = {"globally": False}
    return context


def _site_builder(context):
    """GX's builder of the project's one Data Docs site.  GX's public ``build_data_docs`` either builds
    every page or, given identifiers, still lists every result of the project in each section of the
    site and copies the static assets again: a validation's cost grew with the project's history.  So
    the pages are written through the builder's parts (:func:`_write_validation_page`,
    :func:`build_data_docs_index`), each for what it needs."""
    (site, config), = context.variables.data_docs_sites.items()
    return context._init_site_builder_for_data_docs_site_creation(site, config)


def _write_validation_page(context, identifier, validation_result) -> str | None:
    """Render one validation's page into the site, as GX's validations section renders each result,
    from the result in hand; the site's static assets are copied once, with the first page.  Returns
    the page's path in the site (the task's link)."""
    from great_expectations.data_context.types.resource_identifiers import SiteSectionIdentifier

    builder = _site_builder(context)
    section = builder.site_section_builders["validations"]
    view = section.view_class.render(section.renderer_class.render(validation_result),
                                     data_context_id=section.data_context_id,
                                     show_how_to_buttons=section.show_how_to_buttons)
    section.target_store.set(SiteSectionIdentifier(site_section_name=section.name, resource_identifier=identifier),
                             view)
    if not (data_docs_site() / "static").is_dir():
        builder.target_store.copy_static_assets()
    return _site_page(builder.get_resource_url(resource_identifier=identifier))


def _index_outdated_marker() -> Path:
    """Touched by every validation that wrote a page; newer than the index: the index (and the suite
    pages) are out of date.  Beside the site, not in it: the site is served."""
    return data_docs_site().parent / "index-outdated"


def data_docs_index_outdated() -> bool:
    """Whether a validation wrote a page after the Data Docs index was last built."""
    index, marker = data_docs_site() / "index.html", _index_outdated_marker()
    return marker.exists() and not (index.exists() and index.stat().st_mtime_ns > marker.stat().st_mtime_ns)


def build_data_docs_index() -> bool:
    """Build the Data Docs site's shared pages if a validation wrote a page since they were last built:
    every suite's page (a suite changes with each run: its future bound is ``now``), the static
    assets, then the index; returns whether it did.  Under the project lock, so the index includes
    every validation that finished before it and a later one leaves it out of date again."""
    with _ProjectLock(gx_root()):
        if not data_docs_index_outdated():
            return False
        import chat_ingest.gx_templates  # noqa: F401

        builder = _site_builder(_context(gx_root()))
        builder.site_section_builders["expectations"].build()  # every suite: one per staging table
        builder.target_store.copy_static_assets()  # as GX's own build does: a GX upgrade brings new ones
        builder.site_index_builder.build()  # last: its mtime marks the shared pages current
    return True


def _site_page(url: str | None) -> str | None:
    """A page's ``file://`` URL as its path relative to the local Data Docs site's folder."""
    site = data_docs_site().resolve()
    if url and url.startswith("file://"):
        page = Path(url[len("file://"):]).resolve()
        if page.is_relative_to(site):
            return page.relative_to(site).as_posix()
    return None
