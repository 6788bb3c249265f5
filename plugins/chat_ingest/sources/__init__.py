"""One module per vendor, each with its table specs in ``TABLES``."""

from chat_ingest.sources import a8, botslovers, ultimate, unless

TABLES_BY_SOURCE = {
    botslovers.SOURCE: botslovers.TABLES,
    a8.SOURCE: a8.TABLES,
    ultimate.SOURCE: ultimate.TABLES,
    unless.SOURCE: unless.TABLES,
}
