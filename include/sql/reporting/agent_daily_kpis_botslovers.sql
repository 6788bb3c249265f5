-- Botslovers agents' day (agents: whoever joined a chat or wrote as `human` that day).
--   chats_joined    agent_joined participations that began that day
--   handle_seconds  Σ (left_at − joined_at) of those, an open participation cut at the day's end
--   first response  per chat, the first `human` message after the chat's first handoff event
--                   (chat_escalated / assigned_to_human / transferred), credited to its sender's day
--   resolved / manual_closed / timeouts (agent_timeout, user_timeout): the agent's events that day
--   csat            mean response_rating of the day's participations, and the share rated 4 or 5
WITH log AS (
    SELECT * FROM staging.botslovers_chat_agent_log WHERE deleted_at IS NULL
), joins AS (
    SELECT company, agent_id, count(*) AS chats_joined,
           sum(extract(epoch FROM least(coalesce(left_at, %(day_end)s), %(day_end)s) - joined_at)) AS handle_seconds,
           avg(response_rating) AS csat,
           count(*) FILTER (WHERE response_rating >= 4)::numeric / nullif(count(response_rating), 0) AS csat_4_plus
    FROM log WHERE event = 'agent_joined' AND joined_at >= %(day_start)s AND joined_at < %(day_end)s
    GROUP BY company, agent_id
), handoffs AS (
    SELECT company, chat_id, min(joined_at) AS handoff_at FROM log
    WHERE event IN ('chat_escalated', 'assigned_to_human', 'transferred')
    GROUP BY company, chat_id
), first_responses AS (
    SELECT DISTINCT ON (m.company, m.session) m.company, m.sender_id AS agent_id, m.created_at,
           extract(epoch FROM m.created_at - h.handoff_at) AS seconds
    FROM staging.botslovers_messages m JOIN handoffs h ON h.company = m.company AND h.chat_id = m.session
    WHERE m.sender_type = 'human' AND m.created_at >= h.handoff_at
    ORDER BY m.company, m.session, m.created_at, m.id
), responses AS (
    SELECT company, agent_id, percentile_cont(0.5) WITHIN GROUP (ORDER BY seconds) AS median_s,
           percentile_cont(0.9) WITHIN GROUP (ORDER BY seconds) AS p90_s
    FROM first_responses WHERE created_at >= %(day_start)s AND created_at < %(day_end)s
    GROUP BY company, agent_id
), agents AS (
    SELECT company, agent_id FROM joins
    UNION
    SELECT company, sender_id FROM staging.botslovers_messages
    WHERE sender_type = 'human' AND created_at >= %(day_start)s AND created_at < %(day_end)s
), closing AS (
    SELECT company, agent_id, count(*) FILTER (WHERE event = 'resolved') AS resolved,
           count(*) FILTER (WHERE event = 'manual_close') AS manual_closed,
           count(*) FILTER (WHERE event IN ('agent_timeout', 'user_timeout')) AS timeouts
    FROM log WHERE joined_at >= %(day_start)s AND joined_at < %(day_end)s
    GROUP BY company, agent_id
)
INSERT INTO reporting.agent_daily_kpis (activity_date, source, tenant, agent_id, chats_joined, handle_seconds,
    first_response_median_s, first_response_p90_s, resolved, manual_closed, timeouts, csat, csat_share_4_plus)
SELECT %(day)s, 'botslovers', a.company, a.agent_id, coalesce(j.chats_joined, 0), coalesce(j.handle_seconds, 0),
       r.median_s, r.p90_s, coalesce(c.resolved, 0), coalesce(c.manual_closed, 0), coalesce(c.timeouts, 0),
       j.csat, j.csat_4_plus
FROM agents a
LEFT JOIN joins j USING (company, agent_id)
LEFT JOIN responses r USING (company, agent_id)
LEFT JOIN closing c USING (company, agent_id);
