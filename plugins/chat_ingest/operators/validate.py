"""The validation gate as an operator: a failed gate fails the task and stops downstream."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator, BaseOperatorLink

from chat_ingest.project import WAREHOUSE_CONN_ID


class DataDocsLink(BaseOperatorLink):
    """Operator extra link to this validation's page in the GX Data Docs site, which the project's
    plugin serves under the api-server (same site, same login: the UI only follows such links).
    Resolved when the task ends (the task runner stores it as XCom), pass or fail."""

    name = "GX Data Docs"

    def get_link(self, operator, *, ti_key) -> str:
        from chat_ingest.data_docs import page_url

        return page_url(operator.data_docs_page)


class ValidateStagingOperator(BaseOperator):
    """Run the table spec's GX suite on the batch a run landed; fail with what was wrong.

    Give this task the table's Asset as outlet: the Asset is only updated — and
    the reporting DAG only triggered — when the batch passed.
    """

    template_fields: Sequence[str] = ("window", "tenants")
    operator_extra_links = (DataDocsLink(),)
    ui_color = "#eaffea"

    def __init__(self, *, source: str, table: str, window: dict[str, str], tenants: list[str] | None = None,
                 warehouse_conn_id: str = WAREHOUSE_CONN_ID, **kwargs) -> None:
        super().__init__(**kwargs)
        self.source = source
        self.table = table
        self.window = window
        self.tenants = tenants
        self.warehouse_conn_id = warehouse_conn_id
        #: Set by ``execute``: this validation's page in the Data Docs site (the extra link's target),
        #: and its outcomes (reported to OpenLineage as data-quality assertions).
        self.data_docs_page: str | None = None
        self.outcomes: list = []

    @property
    def spec(self):
        from chat_ingest.sources import TABLES_BY_SOURCE

        return TABLES_BY_SOURCE[self.source][self.table]

    def get_openlineage_facets_on_complete(self, task_instance):
        """The staging table this task read, with each expectation as a data-quality assertion."""
        from chat_ingest.lineage import assertions_facet, lineage, staging_table

        return lineage([staging_table(self.spec.staging_table, assertions_facet(self.outcomes),
                                      conn_id=self.warehouse_conn_id)])

    def execute(self, context) -> dict[str, Any]:
        import sys

        from airflow.providers.postgres.hooks.postgres import PostgresHook

        preloaded = "great_expectations" in sys.modules  # see chat_ingest.project.TASK_PRELOAD_MODULES
        self.log.info("Great Expectations: %s", "already imported (preloaded by the process this task was "
                      "forked from)" if preloaded else "importing it in this task (3-4 s)")

        from chat_ingest.validation import ValidationFailed, run_gate
        from chat_ingest.warehouse import connect, ensure_schema
        from chat_ingest.windows import checked_window

        start, end = checked_window(self.window)  # with the days a scheduled run landed again
        dsn = PostgresHook(postgres_conn_id=self.warehouse_conn_id).sqlalchemy_url.render_as_string(
            hide_password=False).replace("postgresql+psycopg://", "postgresql+psycopg2://", 1)
        with connect(self.warehouse_conn_id) as conn:
            ensure_schema(conn)
            try:
                gate = run_gate(conn, dsn, self.spec, run_id=context["run_id"], start=start, end=end,
                                tenants=self.tenants or None)
            except ValidationFailed as failure:
                self.data_docs_page, self.outcomes = failure.docs_page, failure.outcomes
                raise
        self.data_docs_page = gate.docs_page
        outcomes = self.outcomes = gate.outcomes
        return {"table": self.spec.staging_table, "window": self.window, "expectations": len(outcomes),
                "rows_validated": max((o.element_count or 0 for o in outcomes if not o.of_loads), default=0),
                "warnings": [o.describe() for o in outcomes if not o.success]}
