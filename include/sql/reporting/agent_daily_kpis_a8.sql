-- A8 agents' day, as far as A8's data goes (agents: whoever was assigned a chat or wrote in one that day;
-- the tenant is the chat's bot_handle).
--   chats_joined    `agentAssigned` chat states of the agent that day
--   handle_seconds  from each of those to the chat's next state (a transfer, close or timeout), an
--                   assignment still open cut at the day's end
--   first response  per chat, the agent's first message (agent_message_details) after the chat's first
--                   `TransferChat`, credited to its sender's day
--   resolved        `closedChat` states the agent closed that day; timeouts: `timeoutChat` states
--   manual_closed, csat, csat_share_4_plus: NULL (A8 records neither how a chat was closed nor ratings)
WITH states AS (
    SELECT bot_handle, chat_id, agent_id, state, time,
           lead(time) OVER (PARTITION BY bot_handle, chat_id ORDER BY time, id) AS next_state_at
    FROM staging.a8_chat_state
    WHERE chat_id IN (SELECT chat_id FROM staging.a8_chat_state
                      WHERE time >= %(day_start)s AND time < %(day_end)s AND agent_id IS NOT NULL)
), joins AS (
    SELECT bot_handle, agent_id, count(*) AS chats_joined,
           sum(extract(epoch FROM least(coalesce(next_state_at, %(day_end)s), %(day_end)s) - time)) AS handle_seconds
    FROM states WHERE state = 'agentAssigned' AND time >= %(day_start)s AND time < %(day_end)s
    GROUP BY bot_handle, agent_id
), handoffs AS (
    SELECT bot_handle, chat_id, min(time) AS handoff_at FROM staging.a8_chat_state
    WHERE state = 'TransferChat' GROUP BY bot_handle, chat_id
), first_responses AS (
    SELECT DISTINCT ON (h.bot_handle, m.chat_id) h.bot_handle, m.agent_id, m.time,
           extract(epoch FROM m.time - h.handoff_at) AS seconds
    FROM staging.a8_agent_message_details m JOIN handoffs h ON h.chat_id = m.chat_id
    WHERE m.agent_id IS NOT NULL AND m.time >= h.handoff_at
    ORDER BY h.bot_handle, m.chat_id, m.time, m.mid
), responses AS (
    SELECT bot_handle, agent_id, percentile_cont(0.5) WITHIN GROUP (ORDER BY seconds) AS median_s,
           percentile_cont(0.9) WITHIN GROUP (ORDER BY seconds) AS p90_s
    FROM first_responses WHERE time >= %(day_start)s AND time < %(day_end)s
    GROUP BY bot_handle, agent_id
), agents AS (
    SELECT bot_handle, agent_id FROM joins
    UNION
    SELECT s.bot_handle, m.agent_id FROM staging.a8_agent_message_details m
    JOIN staging.a8_chat_state s USING (chat_id)
    WHERE m.agent_id IS NOT NULL AND m.time >= %(day_start)s AND m.time < %(day_end)s
), closing AS (
    SELECT bot_handle, agent_id, count(*) FILTER (WHERE state = 'closedChat') AS resolved,
           count(*) FILTER (WHERE state = 'timeoutChat') AS timeouts
    FROM staging.a8_chat_state WHERE time >= %(day_start)s AND time < %(day_end)s
    GROUP BY bot_handle, agent_id
)
INSERT INTO reporting.agent_daily_kpis (activity_date, source, tenant, agent_id, chats_joined, handle_seconds,
    first_response_median_s, first_response_p90_s, resolved, manual_closed, timeouts, csat, csat_share_4_plus)
SELECT %(day)s, 'a8', a.bot_handle, a.agent_id, coalesce(j.chats_joined, 0), coalesce(j.handle_seconds, 0),
       r.median_s, r.p90_s, coalesce(c.resolved, 0), NULL, coalesce(c.timeouts, 0), NULL, NULL
FROM agents a
LEFT JOIN joins j USING (bot_handle, agent_id)
LEFT JOIN responses r USING (bot_handle, agent_id)
LEFT JOIN closing c USING (bot_handle, agent_id);
