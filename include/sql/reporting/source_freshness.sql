-- Per source and tenant: the last day a load brought rows for, and when the last load committed.
-- A load that committed is a successful one (a failed load rolls back and leaves no load_log row).
DELETE FROM reporting.source_freshness;
INSERT INTO reporting.source_freshness (source, tenant, latest_landed_day, last_successful_load)
SELECT source, tenant,
       max(((window_end - interval '1 microsecond') AT TIME ZONE 'UTC')::date) FILTER (WHERE rows_extracted > 0),
       max(loaded_at)
FROM audit.load_log
WHERE tenant IS NOT NULL
GROUP BY source, tenant;
