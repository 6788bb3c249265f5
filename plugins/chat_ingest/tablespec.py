"""Table specs: the single source of truth for every source table.

A spec names a vendor table's columns (with the vendor's own type and the staging
Postgres type), its key, the column that windows an extraction, the enum sets the
vendor documents, and the idempotency rule its landing follows.  DDL, extraction
queries, the typed merge into staging and the Great Expectations suites are all
derived from it, so adding a column or an enum value is a one-line change here.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from chat_ingest.rules import INDEX_ENTRY_MAX_BYTES, KEY_VALUE_MAX_BYTES, MAX_VALUE_BYTES, TENANT_MAX_BYTES

#: Lineage columns present on every staging row.
LINEAGE_COLUMNS = ("_run_id", "_loaded_at")


#: Columns a batch may carry beside the spec's: why a row is already known bad, and its raw text.
MARK_COLUMNS = ("_pre_reason", "_raw")


class MergeRule(enum.Enum):
    """How a landed batch is merged into staging (see DESIGN.md, idempotency rules)."""

    #: Immutable events with a unique id: dedupe by key within the batch, upsert by key.
    UPSERT_BY_KEY = "upsert_by_key"
    #: Rows updated after creation: upsert by key, keep the row with the newest version column.
    UPSERT_NEWEST = "upsert_newest"
    #: Time series without reliable ids: delete the tenant's [start, end) window, insert.
    REPLACE_WINDOW = "replace_window"
    #: Rows of a document rewritten in place (an Unless conversation's log items): when the
    #: document's version is newer than what staging holds, its rows are deleted and inserted anew.
    REPLACE_CHILDREN = "replace_children"


@dataclass(frozen=True)
class Column:
    """One column of a source table.

    ``source_type`` is the vendor's documented type (used to build the sandbox
    stand-in); ``pg_type`` is the staging type every value must cast to, or the
    row is quarantined with the reason.
    """

    name: str
    pg_type: str
    source_type: str = "String"
    nullable: bool = True
    #: The closed set of values the seed lists ("Possible values:"): anything else fails the gate.
    allowed: tuple[str, ...] | None = None
    #: Values the seed gives as examples only ("e.g.", "'md' | 'html' | string"), where reporting gives
    #: no value a meaning of its own: another value is a gate warning with its count, never a failure.
    examples: tuple[str, ...] = ()
    #: The seed only gives examples: values are mapped to meanings by ``vocabulary:`` in sources.yaml
    #: (``chat_ingest.vocabulary``); an unmapped value is a gate warning, never a failure.
    vocabulary: bool = False
    #: Inclusive sane range for numeric values, checked by the validation gate.
    value_range: tuple[float | None, float | None] | None = None
    description: str = ""
    #: The warehouse keys or indexes rows by this value: a staging key or lookup, a reporting key.
    keyed: bool = False
    #: Largest value accepted, in bytes of its text; by default KEY_VALUE_MAX_BYTES for a keyed value,
    #: MAX_VALUE_BYTES for any other.
    max_bytes: int | None = None

    def __post_init__(self) -> None:
        if sum(map(bool, (self.allowed, self.examples, self.vocabulary))) > 1:
            raise ValueError(f"column {self.name}: a closed set (allowed), examples and a vocabulary exclude "
                             "each other: the seed either lists every value or gives examples")
        if self.max_bytes is None:
            object.__setattr__(self, "max_bytes", KEY_VALUE_MAX_BYTES if self.keyed else MAX_VALUE_BYTES)


@dataclass(frozen=True)
class TableSpec:
    source: str
    name: str
    columns: tuple[Column, ...]
    #: Name of the staging column that holds the tenant (company / bot / website);
    #: None for a table the vendor does not partition by tenant.
    tenant_column: str | None
    merge_rule: MergeRule
    #: Column whose value windows an extraction (``[start, end)``).
    cursor: str
    key: tuple[str, ...] = ()
    #: For UPSERT_NEWEST: the column whose larger value wins.
    version_column: str | None = None
    #: Whether the source table itself holds the tenant column; if not, the tenant
    #: comes from the extraction context (e.g. one ClickHouse table per company).
    tenant_in_source: bool = False
    #: (later, earlier) column pairs whose order the validation gate checks, e.g. end >= start.
    ordered_pairs: tuple[tuple[str, str], ...] = ()
    #: The timestamp/date column whose UTC day is the reporting day a row belongs to; the loader
    #: records the days a load changed in ``audit.changed_days``.  Defaults to the cursor.
    day_column: str | None = None
    #: A row that stands for a period (a participation, a status) changes every reporting day the
    #: period touches: this column bounds it with the day column -- a timestamp (the period runs from
    #: the day column to it, e.g. ``left_at``; NULL: still open) or a count of seconds (the period
    #: ends at the day column and began that long before, e.g. ``duration_seconds``).
    span_column: str | None = None
    #: For REPLACE_CHILDREN: the columns naming the document a row belongs to.
    parent_key: tuple[str, ...] = ()
    #: Column sets the validation gate checks for uniqueness beside the key (e.g. uuid per conversation).
    unique_together: tuple[tuple[str, ...], ...] = ()
    #: The column naming the conversation a row belongs to, where the reporting rebuild reads a
    #: conversation's rows whatever day they are on: the loader then keeps the table's conversation
    #: days (``staging.<table>_days``: tenant, conversation, UTC day of the cursor), and the rebuild
    #: reads only those days, through the window index, instead of a per-row index on the column.
    conversation_column: str | None = None
    description: str = ""

    def __post_init__(self) -> None:
        names = [c.name for c in self.columns]
        if len(names) != len(set(names)):
            raise ValueError(f"{self.qualified_name}: duplicate column names")
        for col in (*self.key, self.cursor, *filter(None, [self.version_column, self.day_column, self.span_column,
                                                           self.conversation_column]),
                    *self.parent_key, *sum(self.ordered_pairs, ()), *sum(self.unique_together, ())):
            if col not in names:
                raise ValueError(f"{self.qualified_name}: {col!r} is not a column")
        if self.merge_rule in (MergeRule.UPSERT_NEWEST, MergeRule.REPLACE_CHILDREN) and not self.version_column:
            raise ValueError(f"{self.qualified_name}: {self.merge_rule.name} needs a version_column")
        if self.merge_rule is MergeRule.REPLACE_CHILDREN and not self.parent_key:
            raise ValueError(f"{self.qualified_name}: REPLACE_CHILDREN needs a parent_key")
        if self.conversation_column and not self.tenant_column:
            raise ValueError(f"{self.qualified_name}: conversation days are kept per tenant; it has none")
        if self.merge_rule in (MergeRule.UPSERT_BY_KEY, MergeRule.UPSERT_NEWEST) and not self.key:
            raise ValueError(f"{self.qualified_name}: an upsert needs a key")
        if self.tenant_in_source and self.column(self.tenant_column).max_bytes > TENANT_MAX_BYTES:
            raise ValueError(f"{self.qualified_name}: the tenant holds at most {TENANT_MAX_BYTES} bytes")
        for key in self.indexed_keys:
            if self.index_entry_bytes(key) > INDEX_ENTRY_MAX_BYTES:
                raise ValueError(f"{self.qualified_name}: ({', '.join(key)}) may hold more than one index entry "
                                 f"does ({INDEX_ENTRY_MAX_BYTES} bytes): declare its text columns keyed=True")

    @property
    def qualified_name(self) -> str:
        return f"{self.source}.{self.name}"

    @property
    def staging_table(self) -> str:
        return f"{self.source}_{self.name}"

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"{self.qualified_name} has no column {name!r}")

    @property
    def days_table(self) -> str | None:
        """The staging table of the conversation days (see ``conversation_column``), if any."""
        return f"{self.staging_table}_days" if self.conversation_column else None

    @property
    def indexed_keys(self) -> tuple[tuple[str, ...], ...]:
        """The columns of each B-tree key the loader keeps on a row: the staging key and the days
        table's (conversation, tenant); each key's values must fit one index entry together."""
        keys = (self.staging_key, (self.conversation_column, self.tenant_column) if self.days_table else ())
        return tuple(key for key in keys if key)

    def index_entry_bytes(self, key: tuple[str, ...]) -> int:
        """The most the text values of ``key`` hold together (a tenant from the configuration counted
        too; other types are a few bytes)."""
        return sum(TENANT_MAX_BYTES if c == self.tenant_column and c not in self.column_names
                   else self.column(c).max_bytes for c in key
                   if c not in self.column_names or self.column(c).pg_type == "text")

    @property
    def reporting_day_column(self) -> str:
        return self.day_column or self.cursor

    @property
    def staging_columns(self) -> tuple[str, ...]:
        """All columns of the staging table, in order: tenant, data, lineage."""
        tenant = () if self.tenant_in_source or not self.tenant_column else (self.tenant_column,)
        return (*tenant, *self.column_names, *LINEAGE_COLUMNS)

    @property
    def staging_key(self) -> tuple[str, ...]:
        """The unique key of the staging table: the source key, then the tenant.

        The source key leads: every row of a load has the same tenant, so a leading tenant column
        costs each comparison of the key's index maintenance a second column: 3M Botslovers-shaped
        rows in random key order took 32-37 s to land into a key of (company, id) against 27 s for
        (id, company); in key order, as Botslovers delivers them, the two were within the noise
        (bench/README.md).  Lookups by both columns, and ``ON CONFLICT``, use either order."""
        if not self.key:
            return ()
        return tuple(dict.fromkeys((*self.key, *filter(None, [self.tenant_column]))))
