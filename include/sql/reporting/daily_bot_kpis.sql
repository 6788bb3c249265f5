-- Headline KPIs of one source's day, per tenant, from reporting.conversations.  For Ultimate these are
-- the seed's definitions (count(distinct ...) over conversation_status and last_resolution); for the
-- other sources the bot_handled / escalated / failed_escalation outcomes play the roles of botHandled /
-- the agent-type statuses / failedEscalation.  Ultimate conversations without bot messages are left
-- out (suggestion-engine conversations, per the seed's FAQ).  automation and informed rates exist for
-- Ultimate only; the understood rate where the source tells which user messages were not understood.
INSERT INTO reporting.daily_bot_kpis (conversation_date, source, tenant, total_conversations, bot_handled_rate,
    escalation_rate, failed_escalation_rate, deflection_rate, automation_rate, informed_rate,
    messages_understood_rate)
SELECT conversation_date, source, tenant, count(DISTINCT conversation_id),
       count(DISTINCT conversation_id) FILTER (WHERE outcome = 'bot_handled')::numeric / count(DISTINCT conversation_id),
       count(DISTINCT conversation_id) FILTER (WHERE outcome = 'escalated')::numeric / count(DISTINCT conversation_id),
       count(DISTINCT conversation_id) FILTER (WHERE outcome = 'failed_escalation')::numeric
           / count(DISTINCT conversation_id),
       count(DISTINCT conversation_id) FILTER (WHERE outcome <> 'escalated')::numeric / count(DISTINCT conversation_id),
       CASE WHEN source = 'ultimate' THEN count(DISTINCT conversation_id)
           FILTER (WHERE resolution IN ('informed', 'resolved'))::numeric / count(DISTINCT conversation_id) END,
       CASE WHEN source = 'ultimate' THEN count(DISTINCT conversation_id)
           FILTER (WHERE resolution = 'informed')::numeric / count(DISTINCT conversation_id) END,
       (sum(user_messages) FILTER (WHERE not_understood_messages IS NOT NULL)
           - sum(not_understood_messages))::numeric
           / nullif(sum(user_messages) FILTER (WHERE not_understood_messages IS NOT NULL), 0)
FROM reporting.conversations
WHERE source = %(source)s AND conversation_date = %(day)s
  AND NOT (source = 'ultimate' AND coalesce(bot_messages, 0) = 0)
GROUP BY conversation_date, source, tenant;
