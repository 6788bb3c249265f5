-- A8 agents' day, as far as A8's data goes (agents: whoever was with a chat or wrote in one that day;
-- the tenant is the chat's bot_handle).  Chat states mean what reporting.vocabulary says.
--   participation   a human pick-up (reporting.a8_human_pickup: an agent_assigned state, or an assigned
--                   state after the chat's first transfer) lasting until the chat's next state; one still
--                   open lasts until the end of the loaded data (reporting.loaded_until)
--   chats_joined    participations that began that day
--   handle_seconds  the part of every participation inside that day, whichever day it began
--   first response  per chat, the agent's first message (agent_message_details) after the chat's first
--                   transfer, credited to its sender's day
--   resolved        closed states the agent closed that day; timeouts: timed-out states
--   manual_closed, csat: NULL (A8 records neither how a chat was closed nor ratings)
-- Every state before the day's end is read: a participation may have begun any time before.
WITH states AS (
    SELECT s.bot_handle, s.chat_id, s.agent_id, s.time, m.meaning,
           lead(s.time) OVER chat AS next_state_at,
           min(s.time) FILTER (WHERE m.meaning = 'transferred') OVER (PARTITION BY s.bot_handle, s.chat_id)
               AS first_transfer_at
    FROM staging.a8_chat_state s
    CROSS JOIN LATERAL (SELECT reporting.vocabulary_meaning('a8', 'state', s.state) AS meaning) m
    WHERE s.time < %(day_end)s
    WINDOW chat AS (PARTITION BY s.bot_handle, s.chat_id ORDER BY s.time, s.id)
), participations AS (
    SELECT bot_handle, agent_id, time AS began,
           least(coalesce(next_state_at, greatest(time, (SELECT reporting.loaded_until('a8')))), %(day_end)s) AS ended
    FROM states
    WHERE agent_id IS NOT NULL
      AND reporting.a8_human_pickup(meaning, time > first_transfer_at)
), joins AS (
    SELECT bot_handle, agent_id, count(*) FILTER (WHERE began >= %(day_start)s) AS chats_joined,
           sum(extract(epoch FROM ended - greatest(began, %(day_start)s))) AS handle_seconds
    FROM participations WHERE ended > %(day_start)s
    GROUP BY bot_handle, agent_id
), handoffs AS (
    SELECT bot_handle, chat_id, min(time) AS handoff_at FROM staging.a8_chat_state
    WHERE reporting.vocabulary_meaning('a8', 'state', state) = 'transferred' GROUP BY bot_handle, chat_id
), first_responses AS (
    SELECT DISTINCT ON (h.bot_handle, m.chat_id) h.bot_handle, m.agent_id, m.time,
           extract(epoch FROM m.time - h.handoff_at) AS seconds
    FROM staging.a8_agent_message_details m JOIN handoffs h ON h.chat_id = m.chat_id
    WHERE m.agent_id IS NOT NULL AND m.time >= h.handoff_at
    ORDER BY h.bot_handle, m.chat_id, m.time, m.mid
), responses AS (
    SELECT bot_handle, agent_id, percentile_cont(0.5) WITHIN GROUP (ORDER BY seconds) AS median_s,
           percentile_cont(0.9) WITHIN GROUP (ORDER BY seconds) AS p90_s, count(*) AS n, sum(seconds) AS total_s
    FROM first_responses WHERE time >= %(day_start)s AND time < %(day_end)s
    GROUP BY bot_handle, agent_id
), agents AS (
    SELECT bot_handle, agent_id FROM joins
    UNION
    SELECT s.bot_handle, m.agent_id FROM staging.a8_agent_message_details m
    JOIN staging.a8_chat_state s USING (chat_id)
    WHERE m.agent_id IS NOT NULL AND m.time >= %(day_start)s AND m.time < %(day_end)s
), closing AS (
    SELECT bot_handle, agent_id, count(*) FILTER (WHERE meaning = 'closed') AS resolved,
           count(*) FILTER (WHERE meaning = 'timed_out') AS timeouts
    FROM states WHERE time >= %(day_start)s
    GROUP BY bot_handle, agent_id
)
INSERT INTO reporting.agent_daily_kpis (activity_date, source, tenant, agent_id, chats_joined, handle_seconds,
    first_response_median_s, first_response_p90_s, first_responses, first_response_seconds, resolved,
    manual_closed, timeouts, csat, csat_share_4_plus, csat_ratings, csat_rating_sum, csat_ratings_4_plus)
SELECT %(day)s, 'a8', a.bot_handle, a.agent_id, coalesce(j.chats_joined, 0), coalesce(j.handle_seconds, 0),
       r.median_s, r.p90_s, coalesce(r.n, 0), coalesce(r.total_s, 0), coalesce(c.resolved, 0), NULL,
       coalesce(c.timeouts, 0), NULL, NULL, NULL, NULL, NULL
FROM agents a
LEFT JOIN joins j USING (bot_handle, agent_id)
LEFT JOIN responses r USING (bot_handle, agent_id)
LEFT JOIN closing c USING (bot_handle, agent_id);
