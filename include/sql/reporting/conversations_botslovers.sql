-- Botslovers: a conversation is a message `session` (the chat_agent_log's `chat_id`), dated by its
-- first message.  outcome: a human took part (an `agent_joined` event, or a `human` message) →
-- escalated; a handoff was requested (`chat_escalated`, `assigned_to_human`, `transferred`) and no
-- human took part → failed_escalation; otherwise bot_handled.  Deleted agent-log rows do not count.
-- Botslovers has no intents and no NLP data.  day_botslovers_messages holds every message of the
-- sessions with a message that day (chat_ingest/reporting.py: copy_day_conversation_rows).
WITH sessions AS (
    SELECT m.company, m.session, min(m.created_at) AS started_at, max(m.created_at) AS ended_at,
           min(m.channel) AS channel, min(m.language) AS language,
           min(m.sender_id) FILTER (WHERE m.sender_type = 'user') AS user_id,
           count(*) FILTER (WHERE m.sender_type = 'user') AS user_messages,
           count(*) FILTER (WHERE m.sender_type = 'bot') AS bot_messages,
           count(*) FILTER (WHERE m.sender_type = 'human') AS agent_messages
    FROM day_botslovers_messages m
    GROUP BY m.company, m.session
    HAVING min(m.created_at) >= %(day_start)s AND min(m.created_at) < %(day_end)s
)
INSERT INTO day_conversations (source, tenant, conversation_id, started_at, ended_at, conversation_date,
    channel, language, user_key, user_messages, bot_messages, agent_messages, not_understood_messages, outcome,
    deflected)
SELECT 'botslovers', s.company, s.session, s.started_at, s.ended_at, (s.started_at AT TIME ZONE 'UTC')::date,
       s.channel, s.language, reporting.user_key(s.user_id), s.user_messages, s.bot_messages, s.agent_messages,
       NULL, o.outcome, o.outcome <> 'escalated'
FROM sessions s
-- A session's agent-log events by its key (LATERAL, one index probe per session): joined as an aggregate
-- of all the day's sessions, the planner -- which cannot estimate how many sessions start on a day --
-- re-aggregated it per session, a cost that grew with the square of a day's sessions.
LEFT JOIN LATERAL (
    SELECT bool_or(l.event = 'agent_joined') AS human_joined,
           bool_or(l.event IN ('chat_escalated', 'assigned_to_human', 'transferred')) AS handoff_requested
    FROM staging.botslovers_chat_agent_log l
    WHERE l.company = s.company AND l.chat_id = s.session AND l.deleted_at IS NULL
    GROUP BY l.company, l.chat_id
) e ON true
CROSS JOIN LATERAL (
    SELECT CASE WHEN coalesce(e.human_joined, false) OR s.agent_messages > 0 THEN 'escalated'
                WHEN coalesce(e.handoff_requested, false) THEN 'failed_escalation'
                ELSE 'bot_handled' END AS outcome
) o;
