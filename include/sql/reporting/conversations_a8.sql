-- A8: a conversation is a `chat_id` of a bot (`bot_handle`), dated by its first message.  Chat states
-- mean what the vocabulary in sources.yaml says (reporting.vocabulary; by default agentAssigned →
-- agent_assigned, assignedChat → assigned, TransferChat → transferred, ...).  outcome: an agent wrote
-- (`msg_from = 'agent'`) or a human picked the chat up (an agent_assigned state, or an assigned state
-- after the chat's first transfer: before it, "assigned" is the bot) → escalated; otherwise a state the
-- mapping does not know → unknown; a transfer → failed_escalation; otherwise bot_handled.  Channel and
-- language come from the chat's user (event_metrics.user_id → user.client_id); intents are the NLP
-- intents of the user's messages (a8bot_nlp; 'None' is no intent).  Not understood, as the seed's formula
-- counts it: the chat's user messages that user_message_details says were not handled
-- (`is_handeled IS FALSE`; NULL is unknown, not "not handled").
-- day_a8_messages and day_a8_chat_state hold every message and state of the chats with a row that day
-- (chat_ingest/reporting.py: copy_day_conversation_rows).
WITH chats AS (
    SELECT m.bot_handle, m.chat_id, min(m.time) AS started_at, max(m.time) AS ended_at,
           count(*) FILTER (WHERE m.msg_from = 'user') AS user_messages,
           count(*) FILTER (WHERE m.msg_from = 'bot') AS bot_messages,
           count(*) FILTER (WHERE m.msg_from = 'agent') AS agent_messages
    FROM day_a8_messages m
    GROUP BY m.bot_handle, m.chat_id
    HAVING min(m.time) >= %(day_start)s AND min(m.time) < %(day_end)s
)
INSERT INTO day_conversations (source, tenant, conversation_id, started_at, ended_at, conversation_date,
    channel, language, user_key, user_messages, bot_messages, agent_messages, not_understood_messages, outcome,
    deflected, first_intent, last_intent, first_meaningful_intent)
SELECT 'a8', c.bot_handle, c.chat_id, c.started_at, c.ended_at, (c.started_at AT TIME ZONE 'UTC')::date,
       u.channel, u.lang, reporting.user_key(u.user_id), c.user_messages, c.bot_messages, c.agent_messages,
       h.not_understood, o.outcome, o.outcome <> 'escalated',
       i.first_intent, i.last_intent, i.first_meaningful_intent
FROM chats c
-- Each chat's details are looked up by its key (LATERAL, one index probe per chat): joined as
-- aggregates of all the day's chats instead, the planner -- which cannot estimate how many chats
-- start on a day -- re-aggregated them per chat, a cost that grew with the square of a day's chats.
LEFT JOIN LATERAL (
    SELECT bool_or(reporting.a8_human_pickup(s.meaning, s.time > s.first_transfer_at)) AS human_pickup,
           bool_or(s.meaning = 'transferred') AS transferred, bool_or(s.meaning = 'unknown') AS unmapped
    FROM (SELECT s.time, m.meaning,
                 min(s.time) FILTER (WHERE m.meaning = 'transferred') OVER () AS first_transfer_at
          FROM day_a8_chat_state s
          CROSS JOIN LATERAL (SELECT reporting.vocabulary_meaning('a8', 'state', s.state) AS meaning) m
          WHERE s.bot_handle = c.bot_handle AND s.chat_id = c.chat_id) s
) s ON true
CROSS JOIN LATERAL (
    SELECT CASE WHEN c.agent_messages > 0 OR coalesce(s.human_pickup, false) THEN 'escalated'
                WHEN coalesce(s.unmapped, false) THEN 'unknown'
                WHEN coalesce(s.transferred, false) THEN 'failed_escalation'
                ELSE 'bot_handled' END AS outcome
) o
LEFT JOIN LATERAL (
    SELECT e.user_id, u.channel, u.lang
    FROM staging.a8_event_metrics e
    LEFT JOIN staging.a8_user u ON u.bot_handle = e.bot_handle AND u.client_id = e.user_id
    WHERE e.bot_handle = c.bot_handle AND e.chat_id = c.chat_id
    ORDER BY e.time, u.time
    LIMIT 1
) u ON true
LEFT JOIN LATERAL (
    SELECT count(*) FILTER (WHERE d.is_handeled IS FALSE) AS not_understood
    FROM staging.a8_user_message_details d WHERE d.chat_id = c.chat_id
    GROUP BY d.chat_id
) h ON true
LEFT JOIN LATERAL (
    SELECT (array_agg(n.intent ORDER BY n.time, m.mid))[1] AS first_intent,
           (array_agg(n.intent ORDER BY n.time DESC, m.mid DESC))[1] AS last_intent,
           (array_agg(n.intent ORDER BY n.time, m.mid) FILTER (WHERE n.intent <> ALL (%(excluded_intents)s)))[1]
               AS first_meaningful_intent
    FROM day_a8_messages m
    JOIN staging.a8_a8bot_nlp n ON n.mid = m.mid AND n.bot_handle = m.bot_handle
    WHERE m.bot_handle = c.bot_handle AND m.chat_id = c.chat_id
      AND m.msg_from = 'user' AND n.intent IS NOT NULL AND n.intent <> 'None'
    GROUP BY m.bot_handle, m.chat_id
) i ON true;
