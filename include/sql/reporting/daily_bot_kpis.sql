-- KPIs of one source's day, per tenant, from reporting.conversations: the counts, and each rate as
-- count / total_conversations.  For Ultimate these are the seed's "Popular Metrics", literally and with
-- SQL's NULL semantics: count(DISTINCT conversation_id) over conversation_status and last_resolution (as
-- mapped by the vocabulary, so `bot_handled` is `botHandled`); a conversation without a status counts in
-- the total but is not deflected (the seed's `NOT IN (...)` is NULL for it); messages understood =
-- (Σ visitor − Σ not understood) / Σ visitor, each Σ over its own non-NULL values.  Ultimate
-- conversations without bot messages (bot_messages_count > 0 is not true) are left out, per the seed's
-- FAQ.  For the other sources the outcomes play the same roles (deflected = not escalated); automation
-- and informed exist for Ultimate only; messages understood where the source tells which user messages
-- were not understood (Ultimate, A8).  automated resolution is the Gen3 export's own verdict
-- (automated_resolution true), counted where a conversation of the day carries one, NULL elsewhere.
WITH counts AS (
    SELECT conversation_date, source, tenant,
           count(DISTINCT conversation_id) AS total,
           count(DISTINCT conversation_id) FILTER (WHERE outcome = 'bot_handled') AS bot_handled,
           count(DISTINCT conversation_id) FILTER (WHERE outcome = 'escalated') AS escalated,
           count(DISTINCT conversation_id) FILTER (WHERE outcome = 'failed_escalation') AS failed_escalation,
           count(DISTINCT conversation_id) FILTER (WHERE deflected) AS deflected,
           count(DISTINCT conversation_id) FILTER (WHERE outcome = 'unknown') AS unknown_outcome,
           CASE WHEN source = 'ultimate' THEN count(DISTINCT conversation_id)
               FILTER (WHERE resolution IN ('informed', 'resolved')) END AS automated,
           CASE WHEN source = 'ultimate' THEN count(DISTINCT conversation_id)
               FILTER (WHERE resolution = 'informed') END AS informed,
           sum(user_messages) AS visitor_messages,
           sum(not_understood_messages) AS not_understood,
           CASE WHEN bool_or(automated_resolution IS NOT NULL) THEN count(DISTINCT conversation_id)
               FILTER (WHERE automated_resolution) END AS automated_resolution
    FROM reporting.conversations
    WHERE source = %(source)s AND conversation_date = %(day)s
      AND (source <> 'ultimate' OR bot_messages > 0)
    GROUP BY conversation_date, source, tenant
)
INSERT INTO reporting.daily_bot_kpis (conversation_date, source, tenant, total_conversations,
    bot_handled_conversations, escalated_conversations, failed_escalation_conversations, deflected_conversations,
    unknown_outcome_conversations, automated_conversations, informed_conversations, visitor_messages,
    not_understood_messages, bot_handled_rate, escalation_rate, failed_escalation_rate, deflection_rate,
    automation_rate, informed_rate, messages_understood_rate, automated_resolution_conversations,
    automated_resolution_rate)
SELECT conversation_date, source, tenant, total, bot_handled, escalated, failed_escalation, deflected,
       unknown_outcome, automated, informed, visitor_messages, not_understood,
       bot_handled::numeric / total, escalated::numeric / total, failed_escalation::numeric / total,
       deflected::numeric / total, automated::numeric / total, informed::numeric / total,
       (visitor_messages - not_understood)::numeric / nullif(visitor_messages, 0),
       automated_resolution, automated_resolution::numeric / total
FROM counts;
