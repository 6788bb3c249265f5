-- Botslovers agents' day (agents: whoever was in a chat or wrote as `human` that day).
--   chats_joined    agent_joined participations that began that day
--   handle_seconds  the part of every participation (joined_at to left_at; one still open lasts until
--                   the end of the loaded data, reporting.loaded_until) inside that day, whichever day
--                   it began: 23:58-00:25 gives 2 min to the first day and 25 to the next
--   first response  per chat, the first `human` message after the chat's first handoff event
--                   (chat_escalated / assigned_to_human / transferred), credited to its sender's day
--   resolved / manual_closed / timeouts (agent_timeout, user_timeout): the agent's events that day
--   csat            mean response_rating of the participations that began that day, and the share rated 4 or 5
WITH log AS (
    SELECT *, coalesce(left_at, (SELECT reporting.loaded_until('botslovers'))) AS ended_at
    FROM staging.botslovers_chat_agent_log WHERE deleted_at IS NULL
), joins AS (
    SELECT company, agent_id, count(*) FILTER (WHERE joined_at >= %(day_start)s) AS chats_joined,
           sum(greatest(extract(epoch FROM least(ended_at, %(day_end)s)
                                   - greatest(joined_at, %(day_start)s)), 0)) AS handle_seconds,
           count(response_rating) FILTER (WHERE joined_at >= %(day_start)s) AS ratings,
           sum(response_rating) FILTER (WHERE joined_at >= %(day_start)s) AS rating_sum,
           count(*) FILTER (WHERE joined_at >= %(day_start)s AND response_rating >= 4) AS ratings_4_plus
    FROM log
    WHERE event = 'agent_joined' AND joined_at < %(day_end)s AND ended_at > %(day_start)s
    GROUP BY company, agent_id
), handoffs AS (
    SELECT company, chat_id, min(joined_at) AS handoff_at FROM log
    WHERE event IN ('chat_escalated', 'assigned_to_human', 'transferred')
    GROUP BY company, chat_id
), first_responses AS (
    SELECT DISTINCT ON (m.company, m.session) m.company, m.sender_id AS agent_id, m.created_at,
           extract(epoch FROM m.created_at - h.handoff_at) AS seconds
    -- a chat whose first response is that day has a message that day: day_botslovers_messages holds all
    -- its messages (chat_ingest/reporting.py: copy_day_conversation_rows)
    FROM day_botslovers_messages m JOIN handoffs h ON h.company = m.company AND h.chat_id = m.session
    WHERE m.sender_type = 'human' AND m.created_at >= h.handoff_at
    ORDER BY m.company, m.session, m.created_at, m.id
), responses AS (
    SELECT company, agent_id, percentile_cont(0.5) WITHIN GROUP (ORDER BY seconds) AS median_s,
           percentile_cont(0.9) WITHIN GROUP (ORDER BY seconds) AS p90_s, count(*) AS n, sum(seconds) AS total_s
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
    first_response_median_s, first_response_p90_s, first_responses, first_response_seconds, resolved,
    manual_closed, timeouts, csat, csat_share_4_plus, csat_ratings, csat_rating_sum, csat_ratings_4_plus)
SELECT %(day)s, 'botslovers', a.company, a.agent_id, coalesce(j.chats_joined, 0), coalesce(j.handle_seconds, 0),
       r.median_s, r.p90_s, coalesce(r.n, 0), coalesce(r.total_s, 0), coalesce(c.resolved, 0),
       coalesce(c.manual_closed, 0), coalesce(c.timeouts, 0),
       j.rating_sum::numeric / nullif(j.ratings, 0), j.ratings_4_plus::numeric / nullif(j.ratings, 0),
       coalesce(j.ratings, 0), j.rating_sum, coalesce(j.ratings_4_plus, 0)
FROM agents a
LEFT JOIN joins j USING (company, agent_id)
LEFT JOIN responses r USING (company, agent_id)
LEFT JOIN closing c USING (company, agent_id);
