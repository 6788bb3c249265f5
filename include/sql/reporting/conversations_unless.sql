-- Unless: one row per conversation object, dated by createdAt (or its first log item when createdAt is
-- absent).  Error log items (type 'error' by reporting.vocabulary_key, so 'Error' too) are not
-- messages.  outcome: a support agent wrote (sender = 'support') → escalated; live chat was entered
-- (isLiveChat) or the widget logged an error, and no agent wrote → failed_escalation; otherwise
-- bot_handled.  Intents are the topics (segmentId) of the user's log items in time order; user_key is
-- the HMAC of personalizationId.
WITH convs AS (
    SELECT * FROM staging.unless_conversations
    WHERE started_at >= %(day_start)s AND started_at < %(day_end)s
), logs AS (
    SELECT l.website, l.session, l.conversation_id, max(l.logged_at) AS ended_at,
           count(*) FILTER (WHERE l.sender = 'user' AND NOT l.is_error) AS user_messages,
           count(*) FILTER (WHERE l.sender = 'bot' AND NOT l.is_error) AS bot_messages,
           count(*) FILTER (WHERE l.sender = 'support' AND NOT l.is_error) AS agent_messages,
           bool_or(l.is_live_chat IS TRUE OR l.is_error) AS handoff_attempted,
           (array_agg(l.segment_id ORDER BY l.logged_at, l.position)
                FILTER (WHERE l.sender = 'user' AND l.segment_id IS NOT NULL))[1] AS first_intent,
           (array_agg(l.segment_id ORDER BY l.logged_at DESC, l.position DESC)
                FILTER (WHERE l.sender = 'user' AND l.segment_id IS NOT NULL))[1] AS last_intent,
           (array_agg(l.segment_id ORDER BY l.logged_at, l.position)
                FILTER (WHERE l.sender = 'user' AND l.segment_id <> ALL (%(excluded_intents)s)))[1]
               AS first_meaningful_intent
    FROM (SELECT *, coalesce(reporting.vocabulary_key(type) = 'error', false) AS is_error
          FROM staging.unless_logs) l JOIN convs USING (website, session, conversation_id)
    GROUP BY l.website, l.session, l.conversation_id
)
INSERT INTO day_conversations (source, tenant, conversation_id, started_at, ended_at, conversation_date,
    channel, language, user_key, user_messages, bot_messages, agent_messages, not_understood_messages, outcome,
    deflected, first_intent, last_intent, first_meaningful_intent)
SELECT 'unless', c.website, c.conversation_id, c.started_at, coalesce(l.ended_at, c.started_at),
       (c.started_at AT TIME ZONE 'UTC')::date, 'web', NULL, reporting.user_key(c.personalization_id),
       coalesce(l.user_messages, 0), coalesce(l.bot_messages, 0), coalesce(l.agent_messages, 0), NULL,
       o.outcome, o.outcome <> 'escalated', l.first_intent, l.last_intent, l.first_meaningful_intent
FROM convs c LEFT JOIN logs l USING (website, session, conversation_id)
CROSS JOIN LATERAL (
    SELECT CASE WHEN l.agent_messages > 0 THEN 'escalated'
                WHEN l.handoff_attempted THEN 'failed_escalation'
                ELSE 'bot_handled' END AS outcome
) o;
