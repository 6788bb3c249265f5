-- Ultimate: one row per exported conversation (were one ever in two files, the later export wins),
-- dated by conversation_start_time — so the file of day X+1 completes day X.  outcome from
-- conversation_status through the vocabulary (sources.yaml; by default botHandled / bot_handled →
-- bot_handled; agent / email / customEscalation → escalated; failedEscalation → failed_escalation);
-- an unmapped or missing status → unknown.  deflected is the seed's `NOT IN ('email', 'agent',
-- 'customEscalation')`: NULL when the status is.  resolution is last_resolution's meaning (informed,
-- resolved, escalated, undefined; unknown when unmapped).  Intents from
-- triggered_intent_replies: first and last by position (the seed's second query); the first meaningful
-- one is the earliest by intent_timestamp with not_meaningful false and not in the excluded list (the
-- seed's third query).  The export names no user, so user_key is NULL.  automated_resolution and
-- resolution_tier: the Gen3 export's fields, NULL where it has none (the seed's v2 form).
WITH convs AS (
    SELECT DISTINCT ON (bot_id, conversation_id) *
    FROM staging.ultimate_conversations
    WHERE conversation_start_time >= %(day_start)s AND conversation_start_time < %(day_end)s
    ORDER BY bot_id, conversation_id, export_date DESC
), intents AS (
    SELECT i.bot_id, i.conversation_id,
           (array_agg(i.intent_name ORDER BY i.position))[1] AS first_intent,
           (array_agg(i.intent_name ORDER BY i.position DESC))[1] AS last_intent,
           (array_agg(i.intent_name ORDER BY i.intent_timestamp, i.position)
                FILTER (WHERE i.not_meaningful IS FALSE AND i.intent_name <> ALL (%(excluded_intents)s)))[1]
               AS first_meaningful_intent
    FROM staging.ultimate_intents i
    JOIN convs c ON c.bot_id = i.bot_id AND c.conversation_id = i.conversation_id AND c.export_date = i.export_date
    GROUP BY i.bot_id, i.conversation_id
)
INSERT INTO day_conversations (source, tenant, conversation_id, started_at, ended_at, conversation_date,
    channel, language, user_key, user_messages, bot_messages, agent_messages, not_understood_messages, outcome,
    deflected, resolution, first_intent, last_intent, first_meaningful_intent, automated_resolution, resolution_tier)
SELECT 'ultimate', c.bot_id, c.conversation_id, c.conversation_start_time, c.conversation_end_time,
       (c.conversation_start_time AT TIME ZONE 'UTC')::date, c.channel, c.language, NULL,
       c.visitor_messages_count, c.bot_messages_count, NULL, c.not_understood_messages_count,
       coalesce(s.meaning, 'unknown'), s.meaning <> 'escalated',
       reporting.vocabulary_meaning('ultimate', 'last_resolution', c.last_resolution),
       i.first_intent, i.last_intent, i.first_meaningful_intent, c.automated_resolution, c.resolution_tier
FROM convs c
CROSS JOIN LATERAL (SELECT reporting.vocabulary_meaning('ultimate', 'conversation_status', c.conversation_status)
                    AS meaning) s
LEFT JOIN intents i USING (bot_id, conversation_id);
