-- Seconds per agent and status on one UTC day, from agent_status_logs: each row closes the interval of
-- its old_status, which began duration_seconds before status_changed_at; intervals are cut at midnight.
-- online_share = online seconds / seconds logged in (every status but offline) that day.
WITH intervals AS (
    SELECT company, agent_id, old_status AS status,
           greatest(status_changed_at - make_interval(secs => duration_seconds), %(day_start)s) AS began,
           least(status_changed_at, %(day_end)s) AS ended
    FROM staging.botslovers_agent_status_logs
    WHERE duration_seconds IS NOT NULL AND status_changed_at > %(day_start)s
      AND status_changed_at - make_interval(secs => duration_seconds) < %(day_end)s
), per_status AS (
    SELECT company, agent_id, status, sum(extract(epoch FROM ended - began)) AS seconds
    FROM intervals GROUP BY company, agent_id, status
)
INSERT INTO reporting.agent_status_daily (status_date, source, tenant, agent_id, status, seconds, online_share)
SELECT %(day)s, 'botslovers', company, agent_id, status, seconds,
       coalesce(coalesce(sum(seconds) FILTER (WHERE status = 'online') OVER agent, 0)
                / nullif(sum(seconds) FILTER (WHERE status <> 'offline') OVER agent, 0), 0)
FROM per_status
WINDOW agent AS (PARTITION BY company, agent_id);
