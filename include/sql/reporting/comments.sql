-- What every reporting table and column means, for BI tools (Power BI, Tableau, DBeaver show these).
-- A test checks that no reporting column is left without a comment.
COMMENT ON TABLE reporting.conversations IS 'One row per conversation of any source, in the UTC day it started (conversation_date).';
COMMENT ON COLUMN reporting.conversations.source IS 'botslovers, a8, ultimate or unless.';
COMMENT ON COLUMN reporting.conversations.tenant IS 'Botslovers company, A8 bot_handle, Ultimate bot_id, Unless website.';
COMMENT ON COLUMN reporting.conversations.conversation_id IS 'Botslovers session, A8 chat_id, Ultimate conversation_id, Unless conversation id.';
COMMENT ON COLUMN reporting.conversations.started_at IS 'First message (Ultimate: conversation_start_time; Unless: createdAt, else the first log item).';
COMMENT ON COLUMN reporting.conversations.ended_at IS 'Last message (Ultimate: conversation_end_time).';
COMMENT ON COLUMN reporting.conversations.conversation_date IS 'UTC day of started_at: the day the conversation counts in.';
COMMENT ON COLUMN reporting.conversations.channel IS 'As the vendor names it (Botslovers whatsapp/web, A8 the user''s channel, Ultimate chat/ticket, Unless web).';
COMMENT ON COLUMN reporting.conversations.language IS 'Language code where the vendor gives one.';
COMMENT ON COLUMN reporting.conversations.user_key IS 'Keyed HMAC-SHA256 of the vendor''s user id: counts users, never identifies them. NULL for Ultimate (no user id).';
COMMENT ON COLUMN reporting.conversations.user_messages IS 'Messages from the user (Ultimate: visitor_messages_count).';
COMMENT ON COLUMN reporting.conversations.bot_messages IS 'Messages from the bot (Ultimate: bot_messages_count).';
COMMENT ON COLUMN reporting.conversations.agent_messages IS 'Messages from a human agent (NULL for Ultimate).';
COMMENT ON COLUMN reporting.conversations.not_understood_messages IS 'Ultimate: not_understood_messages_count; A8: user messages with is_handeled false; NULL elsewhere.';
COMMENT ON COLUMN reporting.conversations.outcome IS 'bot_handled (no human), escalated (a human took part), failed_escalation (a handoff asked for, no human), unknown (a vendor value the vocabulary does not map, or none).';
COMMENT ON COLUMN reporting.conversations.deflected IS 'Not escalated; NULL where the vendor gave no status (Ultimate conversation_status NULL).';
COMMENT ON COLUMN reporting.conversations.resolution IS 'Ultimate last_resolution as mapped: informed, resolved, escalated, undefined, unknown.';
COMMENT ON COLUMN reporting.conversations.first_intent IS 'First intent (Ultimate: by position; A8: NLP intent of the first user message; Unless: first topic).';
COMMENT ON COLUMN reporting.conversations.last_intent IS 'Last intent, as first_intent.';
COMMENT ON COLUMN reporting.conversations.first_meaningful_intent IS 'First intent that is meaningful and not in reporting.excluded_intents (sources.yaml).';

COMMENT ON TABLE reporting.messages IS 'One row per message of the conversations in reporting.conversations, personal data masked. Ultimate exports no messages.';
COMMENT ON COLUMN reporting.messages.source IS 'botslovers, a8 or unless.';
COMMENT ON COLUMN reporting.messages.tenant IS 'As in reporting.conversations.';
COMMENT ON COLUMN reporting.messages.conversation_id IS 'The conversation (reporting.conversations).';
COMMENT ON COLUMN reporting.messages.message_id IS 'Vendor message id (Unless: position:uuid).';
COMMENT ON COLUMN reporting.messages.sent_at IS 'When the message was sent (UTC).';
COMMENT ON COLUMN reporting.messages.conversation_date IS 'The conversation''s day (not necessarily the message''s).';
COMMENT ON COLUMN reporting.messages.sender_role IS 'user, bot, agent or system.';
COMMENT ON COLUMN reporting.messages.text_masked IS 'Message text with e-mail addresses, numbers of 6+ digits and phone numbers masked.';

COMMENT ON TABLE reporting.daily_bot_kpis IS 'Bot KPIs per UTC day, source and tenant: each rate is its count over total_conversations (Ultimate: the seed''s Popular Metrics, with SQL''s NULL rules).';
COMMENT ON COLUMN reporting.daily_bot_kpis.conversation_date IS 'UTC day the conversations started.';
COMMENT ON COLUMN reporting.daily_bot_kpis.source IS 'botslovers, a8, ultimate or unless.';
COMMENT ON COLUMN reporting.daily_bot_kpis.tenant IS 'As in reporting.conversations.';
COMMENT ON COLUMN reporting.daily_bot_kpis.total_conversations IS 'Distinct conversations (Ultimate: with bot messages only).';
COMMENT ON COLUMN reporting.daily_bot_kpis.bot_handled_rate IS 'bot_handled_conversations / total_conversations.';
COMMENT ON COLUMN reporting.daily_bot_kpis.escalation_rate IS 'escalated_conversations / total_conversations.';
COMMENT ON COLUMN reporting.daily_bot_kpis.failed_escalation_rate IS 'failed_escalation_conversations / total_conversations.';
COMMENT ON COLUMN reporting.daily_bot_kpis.deflection_rate IS 'deflected_conversations / total_conversations.';
COMMENT ON COLUMN reporting.daily_bot_kpis.automation_rate IS 'Ultimate: automated_conversations / total_conversations; NULL elsewhere.';
COMMENT ON COLUMN reporting.daily_bot_kpis.informed_rate IS 'Ultimate: informed_conversations / total_conversations; NULL elsewhere.';
COMMENT ON COLUMN reporting.daily_bot_kpis.messages_understood_rate IS '(visitor_messages - not_understood_messages) / visitor_messages; NULL without not-understood data.';
COMMENT ON COLUMN reporting.daily_bot_kpis.bot_handled_conversations IS 'Conversations with outcome bot_handled (Ultimate: status botHandled).';
COMMENT ON COLUMN reporting.daily_bot_kpis.escalated_conversations IS 'Conversations with outcome escalated (Ultimate: agent, email, customEscalation).';
COMMENT ON COLUMN reporting.daily_bot_kpis.failed_escalation_conversations IS 'Conversations with outcome failed_escalation.';
COMMENT ON COLUMN reporting.daily_bot_kpis.deflected_conversations IS 'Conversations not escalated (Ultimate: a NULL status is not deflected).';
COMMENT ON COLUMN reporting.daily_bot_kpis.unknown_outcome_conversations IS 'Conversations whose status or state the vocabulary does not map (see audit.unmapped_values).';
COMMENT ON COLUMN reporting.daily_bot_kpis.automated_conversations IS 'Ultimate: last_resolution informed or resolved.';
COMMENT ON COLUMN reporting.daily_bot_kpis.informed_conversations IS 'Ultimate: last_resolution informed.';
COMMENT ON COLUMN reporting.daily_bot_kpis.automated_resolution_conversations IS 'Ultimate Gen3: automated_resolution true (the vendor''s verdict); NULL where no conversation of the day carries it.';
COMMENT ON COLUMN reporting.daily_bot_kpis.automated_resolution_rate IS 'Ultimate Gen3: automated_resolution_conversations / total_conversations; NULL where no conversation carries the verdict.';
COMMENT ON COLUMN reporting.conversations.automated_resolution IS 'Ultimate Gen3: the vendor''s verdict that the AI agent resolved the conversation itself; NULL where the export has no such field.';
COMMENT ON COLUMN reporting.conversations.resolution_tier IS 'Ultimate Gen3: the vendor''s resolution tier; NULL where the export has no such field.';
COMMENT ON COLUMN reporting.daily_bot_kpis.visitor_messages IS 'Sum of user messages over conversations that report them.';
COMMENT ON COLUMN reporting.daily_bot_kpis.not_understood_messages IS 'Sum of not-understood messages over conversations that report them.';

COMMENT ON TABLE reporting.intent_metrics IS 'Conversations per first meaningful intent, day, source and tenant (the seed''s third query).';
COMMENT ON COLUMN reporting.intent_metrics.conversation_date IS 'UTC day the conversations started.';
COMMENT ON COLUMN reporting.intent_metrics.source IS 'botslovers, a8, ultimate or unless.';
COMMENT ON COLUMN reporting.intent_metrics.tenant IS 'As in reporting.conversations.';
COMMENT ON COLUMN reporting.intent_metrics.first_meaningful_intent IS 'The conversations'' first meaningful intent.';
COMMENT ON COLUMN reporting.intent_metrics.total_conversations IS 'Distinct conversations.';
COMMENT ON COLUMN reporting.intent_metrics.bot_handled_conversations IS 'Of those, outcome bot_handled.';
COMMENT ON COLUMN reporting.intent_metrics.bot_handled_rate IS 'bot_handled_conversations / total_conversations.';

COMMENT ON TABLE reporting.agent_daily_kpis IS 'Human agents per UTC day (Botslovers, A8): participation, handle time, first response, closes, CSAT.';
COMMENT ON COLUMN reporting.agent_daily_kpis.activity_date IS 'UTC day.';
COMMENT ON COLUMN reporting.agent_daily_kpis.source IS 'botslovers or a8.';
COMMENT ON COLUMN reporting.agent_daily_kpis.tenant IS 'Botslovers company or A8 bot_handle.';
COMMENT ON COLUMN reporting.agent_daily_kpis.agent_id IS 'Vendor agent id.';
COMMENT ON COLUMN reporting.agent_daily_kpis.chats_joined IS 'Participations that began that day.';
COMMENT ON COLUMN reporting.agent_daily_kpis.handle_seconds IS 'The part of every participation (closed, or open until now) inside that day.';
COMMENT ON COLUMN reporting.agent_daily_kpis.first_response_median_s IS 'Median seconds from a chat''s first handoff to the agent''s first message, over first responses sent that day.';
COMMENT ON COLUMN reporting.agent_daily_kpis.first_response_p90_s IS '90th percentile of the same.';
COMMENT ON COLUMN reporting.agent_daily_kpis.first_responses IS 'First responses sent that day.';
COMMENT ON COLUMN reporting.agent_daily_kpis.first_response_seconds IS 'Their seconds summed (mean = first_response_seconds / first_responses).';
COMMENT ON COLUMN reporting.agent_daily_kpis.resolved IS 'Chats resolved (Botslovers resolved events; A8 closed states).';
COMMENT ON COLUMN reporting.agent_daily_kpis.manual_closed IS 'Botslovers manual_close events; NULL for A8 (not recorded).';
COMMENT ON COLUMN reporting.agent_daily_kpis.timeouts IS 'Agent or user timeouts (A8: timed-out states).';
COMMENT ON COLUMN reporting.agent_daily_kpis.csat IS 'Mean response_rating (1-5) of the participations that began that day; NULL for A8.';
COMMENT ON COLUMN reporting.agent_daily_kpis.csat_share_4_plus IS 'Share of those ratings that are 4 or 5.';
COMMENT ON COLUMN reporting.agent_daily_kpis.csat_ratings IS 'Ratings given (csat = csat_rating_sum / csat_ratings).';
COMMENT ON COLUMN reporting.agent_daily_kpis.csat_rating_sum IS 'Sum of the ratings.';
COMMENT ON COLUMN reporting.agent_daily_kpis.csat_ratings_4_plus IS 'Ratings of 4 or 5.';

COMMENT ON TABLE reporting.agent_status_daily IS 'Seconds each agent spent in each status per UTC day (Botslovers, A8), intervals cut at midnight.';
COMMENT ON COLUMN reporting.agent_status_daily.status_date IS 'UTC day.';
COMMENT ON COLUMN reporting.agent_status_daily.source IS 'botslovers or a8.';
COMMENT ON COLUMN reporting.agent_status_daily.tenant IS 'Botslovers company; A8 the bots whose chats the agent handled that day, or (no bot).';
COMMENT ON COLUMN reporting.agent_status_daily.agent_id IS 'Vendor agent id.';
COMMENT ON COLUMN reporting.agent_status_daily.status IS 'online, offline, break, ... as the vendor names it.';
COMMENT ON COLUMN reporting.agent_status_daily.seconds IS 'Seconds in that status inside that day.';
COMMENT ON COLUMN reporting.agent_status_daily.online_share IS 'Online seconds / seconds in any status but offline, that day.';

COMMENT ON TABLE reporting.source_freshness IS 'Per source and tenant: the last day a load brought rows for, and the last successful load.';
COMMENT ON COLUMN reporting.source_freshness.source IS 'botslovers, a8, ultimate or unless.';
COMMENT ON COLUMN reporting.source_freshness.tenant IS 'As in reporting.conversations.';
COMMENT ON COLUMN reporting.source_freshness.latest_landed_day IS 'Last UTC day a load brought rows for.';
COMMENT ON COLUMN reporting.source_freshness.last_successful_load IS 'When the last load committed.';
COMMENT ON COLUMN reporting.source_freshness.refreshed_at IS 'When this row was computed.';

COMMENT ON TABLE reporting.vocabulary IS 'Vendor values the seeds give as examples, mapped to meanings (vocabulary: in sources.yaml); rewritten before each build.';
COMMENT ON COLUMN reporting.vocabulary.source IS 'a8 or ultimate.';
COMMENT ON COLUMN reporting.vocabulary.column_name IS 'state, conversation_status or last_resolution.';
COMMENT ON COLUMN reporting.vocabulary.value_key IS 'The value lower-cased, letters and digits only (reporting.vocabulary_key).';
COMMENT ON COLUMN reporting.vocabulary.meaning IS 'What reporting takes the value to mean.';

COMMENT ON VIEW reporting.bot_kpis_by_period IS 'daily_bot_kpis by ISO week (period = week, Monday) and calendar month: counts summed, rates from the sums.';
COMMENT ON COLUMN reporting.bot_kpis_by_period.period IS 'week or month.';
COMMENT ON COLUMN reporting.bot_kpis_by_period.period_start IS 'The Monday of the week, or the first of the month.';
DO $$
DECLARE col record;
BEGIN
    -- the view's remaining columns mean what the daily table's columns of the same name mean
    FOR col IN SELECT a.attname, d.description FROM pg_attribute a
               JOIN pg_description d ON d.objoid = 'reporting.daily_bot_kpis'::regclass AND d.objsubid = a.attnum
               WHERE a.attrelid = 'reporting.daily_bot_kpis'::regclass AND a.attnum > 0
    LOOP
        IF EXISTS (SELECT FROM pg_attribute WHERE attrelid = 'reporting.bot_kpis_by_period'::regclass
                   AND attname = col.attname AND attname <> 'conversation_date') THEN
            EXECUTE format('COMMENT ON COLUMN reporting.bot_kpis_by_period.%I IS %L', col.attname,
                           replace(col.description, 'that day', 'that period'));
        END IF;
    END LOOP;
END
$$;
