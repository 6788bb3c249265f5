-- The (tenant, day)s whose agent reports changed because a participation of %(source)s opened, closed or
-- reached further (reporting.loaded_until moved) since the last build: for a new or a closed one, every
-- day from its start to how far it reached; for one still open, the days it newly reaches.  Noted as
-- changed days, in the same transaction that remembers what is open now (audit.open_participations).
-- Reads the temp table open_now (tenant, participation_id, began, reached_until); notes at most a year
-- of days per participation (a corrupt start must not note decades).
WITH was_open AS (
    SELECT tenant, participation_id, began, reached_until FROM audit.open_participations
    WHERE source = %(source)s
), changed AS (
    SELECT tenant,
           CASE WHEN n.began = w.began THEN w.reached_until ELSE least(n.began, w.began) END AS since,
           greatest(n.reached_until, w.reached_until) AS until
    FROM open_now n FULL JOIN was_open w USING (tenant, participation_id)
    WHERE n.began IS DISTINCT FROM w.began OR n.reached_until IS DISTINCT FROM w.reached_until
)
INSERT INTO audit.changed_days (run_id, source, table_name, tenant, day)
SELECT DISTINCT %(run_id)s, %(source)s, 'audit.open_participations', tenant, d::date
FROM changed, generate_series((greatest(since, until - interval '366 days') AT TIME ZONE 'UTC')::date,
                              ((greatest(until, since) - interval '1 microsecond') AT TIME ZONE 'UTC')::date,
                              interval '1 day') d
RETURNING day
