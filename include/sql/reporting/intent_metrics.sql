-- Conversations and bot-handled rate per first meaningful intent (the seed's third query, for every
-- source); Ultimate's suggestion-engine conversations are left out as in daily_bot_kpis.
INSERT INTO reporting.intent_metrics (conversation_date, source, tenant, first_meaningful_intent,
    total_conversations, bot_handled_conversations, bot_handled_rate)
SELECT conversation_date, source, tenant, first_meaningful_intent, count(DISTINCT conversation_id),
       count(DISTINCT conversation_id) FILTER (WHERE outcome = 'bot_handled'),
       count(DISTINCT conversation_id) FILTER (WHERE outcome = 'bot_handled')::numeric
           / count(DISTINCT conversation_id)
FROM reporting.conversations
WHERE source = %(source)s AND conversation_date = %(day)s AND first_meaningful_intent IS NOT NULL
  AND (source <> 'ultimate' OR bot_messages > 0)
GROUP BY conversation_date, source, tenant, first_meaningful_intent;
