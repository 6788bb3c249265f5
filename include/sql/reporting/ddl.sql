-- Reporting schema: vendor-neutral tables, one row set per (source, day) partition, rebuilt by the
-- reporting DAG in one transaction per day.  Idempotent: run before every build.
CREATE SCHEMA IF NOT EXISTS reporting;

-- Masks personal data in free text: e-mail addresses, then runs of 6+ digits (ID and card numbers),
-- then phone numbers (9+ digits with the usual separators).  The unmasked text never leaves staging.
-- A pattern runs only on a text that can hold it (an email needs an '@', the others a digit): the three
-- replacements were half of a day's messages step, and most messages hold neither.  Neither function is
-- STRICT, so PostgreSQL inlines both into the query (a NULL body stays NULL through every branch).
CREATE OR REPLACE FUNCTION reporting.mask_emails(body text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN strpos(body, '@') > 0
        THEN regexp_replace(body, '[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}', '[email]', 'g')
        ELSE body END
$$;
CREATE OR REPLACE FUNCTION reporting.mask_pii(body text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN body ~ '\d'
        THEN regexp_replace(regexp_replace(reporting.mask_emails(body),
            '\d{6,}', '[number]', 'g'),
            '\+?\d(?:[\s().-]*\d){8,14}', '[phone]', 'g')
        ELSE reporting.mask_emails(body) END
$$;

-- A keyed HMAC-SHA256 of a personal id (users stay countable, never identifiable).  The build sets
-- the key for its transaction only (set_config with bound values, chat_ingest/reporting.py): the key
-- is never in SQL text, and outside a build transaction the function fails instead of hashing with no
-- key.  pgcrypto's hmac() computes it where the server has the extension (and this role may create
-- it: it is a trusted extension, so a database owner can); elsewhere (the sandbox's embedded server
-- ships no contrib modules) the same HMAC is finished from the key's inner and outer pads with sha256().
-- A setting is '' (not missing) after the transaction that set it, so build_secret() refuses both.
CREATE OR REPLACE FUNCTION reporting.build_secret(setting text) RETURNS bytea
LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
DECLARE
    value text := current_setting(setting, true);
BEGIN
    IF coalesce(value, '') = '' THEN
        RAISE EXCEPTION 'reporting.user_key() runs only inside a reporting build (% is not set)', setting
            USING ERRCODE = 'undefined_object';
    END IF;
    RETURN decode(value, 'hex');
END $$;
REVOKE EXECUTE ON FUNCTION reporting.build_secret(text) FROM PUBLIC;
DO $$
DECLARE
    crypto_schema name;
BEGIN
    IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'pgcrypto') THEN
        BEGIN
            CREATE EXTENSION IF NOT EXISTS pgcrypto;
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE NOTICE 'pgcrypto is available but this role may not create it: user_key uses sha256 pads';
        END;
    END IF;
    SELECT extnamespace::regnamespace::name INTO crypto_schema FROM pg_extension WHERE extname = 'pgcrypto';
    IF crypto_schema IS NOT NULL THEN
        EXECUTE format($f$
            CREATE OR REPLACE FUNCTION reporting.user_key(value text) RETURNS text
            LANGUAGE sql STABLE PARALLEL SAFE RETURNS NULL ON NULL INPUT AS $body$
                SELECT encode(%I.hmac(convert_to(value, 'UTF8'),
                                      reporting.build_secret('chat_ingest.hmac_key'), 'sha256'), 'hex')
            $body$ $f$, crypto_schema);
    ELSE
        CREATE OR REPLACE FUNCTION reporting.user_key(value text) RETURNS text
        LANGUAGE sql STABLE PARALLEL SAFE RETURNS NULL ON NULL INPUT AS $body$
            SELECT encode(sha256(reporting.build_secret('chat_ingest.hmac_outer')
                                 || sha256(reporting.build_secret('chat_ingest.hmac_inner')
                                           || convert_to(value, 'UTF8'))), 'hex')
        $body$;
    END IF;
END $$;
REVOKE EXECUTE ON FUNCTION reporting.user_key(text) FROM PUBLIC;

-- Vendor vocabulary given by the seeds as examples (A8 chat state, Ultimate conversation_status and
-- last_resolution) mapped to meanings: written from `vocabulary:` in sources.yaml before every build
-- (chat_ingest/vocabulary.py).  Values match by key: lower case, letters and digits only.
CREATE TABLE IF NOT EXISTS reporting.vocabulary (
    source      text NOT NULL,
    column_name text NOT NULL,
    value_key   text NOT NULL,
    meaning     text NOT NULL,
    PRIMARY KEY (source, column_name, value_key)
);
CREATE OR REPLACE FUNCTION reporting.vocabulary_key(value text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE RETURNS NULL ON NULL INPUT AS $$
    SELECT regexp_replace(lower(value), '[^a-z0-9]', '', 'g')
$$;
-- The meaning of a vendor value: NULL for NULL, 'unknown' for a value the mapping does not know.
CREATE OR REPLACE FUNCTION reporting.vocabulary_meaning(source text, column_name text, value text) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE RETURNS NULL ON NULL INPUT AS $$
    SELECT coalesce((SELECT v.meaning FROM reporting.vocabulary v WHERE v.source = $1 AND v.column_name = $2
                     AND v.value_key = reporting.vocabulary_key($3)), 'unknown')
$$;

-- A8's human pick-up, the one rule every A8 report counts by: an agent_assigned state, or an assigned
-- state once the chat has been transferred (before any transfer, assigned is the bot's own routing).
-- Each report finds "after a transfer" its own way (a window over the chat, or a lookup).
CREATE OR REPLACE FUNCTION reporting.a8_human_pickup(meaning text, after_a_transfer boolean) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT $1 = 'agent_assigned' OR ($1 = 'assigned' AND $2)
$$;

-- How far a source's data is known: the end of the latest window any of its loads covered.  An open
-- participation lasts until then, not until now(), so the same loads give the same report whenever, and
-- in whatever order, its days are built.
CREATE OR REPLACE FUNCTION reporting.loaded_until(source text) RETURNS timestamptz
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT max(window_end) FROM audit.load_log WHERE load_log.source = $1
$$;

-- The agent participations that were open (lasting until reporting.loaded_until) at the last reporting
-- build, and how far they reached then.  Each build compares them with the ones open now and rebuilds
-- every day a participation opened, closed or reached further since covers: a day's agent KPIs depend
-- on rows of other days, whichever order days are loaded in (reporting.py, note_open_participation_days).
CREATE TABLE IF NOT EXISTS audit.open_participations (
    source           text        NOT NULL,
    tenant           text        NOT NULL,
    participation_id text        NOT NULL,
    began            timestamptz NOT NULL,
    reached_until    timestamptz NOT NULL,
    PRIMARY KEY (source, tenant, participation_id)
);

CREATE TABLE IF NOT EXISTS reporting.conversations (
    source                  text        NOT NULL,
    tenant                  text        NOT NULL,
    conversation_id         text        NOT NULL,
    started_at              timestamptz NOT NULL,
    ended_at                timestamptz,
    conversation_date       date        NOT NULL,
    channel                 text,
    language                text,
    user_key                text,        -- keyed HMAC of the vendor's user id: countable, not reversible
    user_messages           integer,
    bot_messages            integer,
    agent_messages          integer,
    not_understood_messages integer,     -- Ultimate: not_understood_messages_count; A8: user messages not handled
    outcome                 text        NOT NULL CHECK (outcome IN ('bot_handled', 'escalated', 'failed_escalation', 'unknown')),
    resolution              text,        -- Ultimate last_resolution
    first_intent            text,
    last_intent             text,
    first_meaningful_intent text,
    PRIMARY KEY (source, tenant, conversation_id)
);
-- deflected: not escalated, with SQL's NULL semantics -- NULL where the vendor gave no status
-- (Ultimate's conversation_status NULL: the seed's `NOT IN (...)` is NULL for it)
ALTER TABLE reporting.conversations ADD COLUMN IF NOT EXISTS deflected boolean;
-- Ultimate's Gen3 export (Zendesk AI agents): the vendor's own verdict and tier; NULL where the export
-- has no such field (the seed's v2 form, every other source)
ALTER TABLE reporting.conversations
    ADD COLUMN IF NOT EXISTS automated_resolution boolean,
    ADD COLUMN IF NOT EXISTS resolution_tier      text;
CREATE INDEX IF NOT EXISTS conversations_day_idx ON reporting.conversations (source, conversation_date);

CREATE TABLE IF NOT EXISTS reporting.messages (
    source            text        NOT NULL,
    tenant            text        NOT NULL,
    conversation_id   text        NOT NULL,
    message_id        text        NOT NULL,
    sent_at           timestamptz NOT NULL,
    conversation_date date        NOT NULL,
    sender_role       text        NOT NULL CHECK (sender_role IN ('user', 'bot', 'agent', 'system')),
    text_masked       text,
    PRIMARY KEY (source, tenant, conversation_id, message_id)
);
CREATE INDEX IF NOT EXISTS messages_day_idx ON reporting.messages (source, conversation_date);

CREATE TABLE IF NOT EXISTS reporting.daily_bot_kpis (
    conversation_date        date    NOT NULL,
    source                   text    NOT NULL,
    tenant                   text    NOT NULL,
    total_conversations      integer NOT NULL,
    bot_handled_rate         numeric,
    escalation_rate          numeric,
    failed_escalation_rate   numeric,
    deflection_rate          numeric,
    automation_rate          numeric,
    informed_rate            numeric,
    messages_understood_rate numeric,
    PRIMARY KEY (conversation_date, source, tenant)
);
-- The counts behind every rate, so a week or a month re-aggregates exactly (reporting.bot_kpis_by_period).
ALTER TABLE reporting.daily_bot_kpis
    ADD COLUMN IF NOT EXISTS bot_handled_conversations       integer,
    ADD COLUMN IF NOT EXISTS escalated_conversations         integer,
    ADD COLUMN IF NOT EXISTS failed_escalation_conversations integer,
    ADD COLUMN IF NOT EXISTS deflected_conversations         integer,
    ADD COLUMN IF NOT EXISTS unknown_outcome_conversations   integer,
    ADD COLUMN IF NOT EXISTS automated_conversations         integer,
    ADD COLUMN IF NOT EXISTS informed_conversations          integer,
    ADD COLUMN IF NOT EXISTS visitor_messages                bigint,
    ADD COLUMN IF NOT EXISTS not_understood_messages         bigint;
-- Ultimate Gen3: conversations the vendor judged resolved by the AI agent, and their rate; NULL where no
-- conversation of the day carries the verdict.
ALTER TABLE reporting.daily_bot_kpis
    ADD COLUMN IF NOT EXISTS automated_resolution_conversations integer,
    ADD COLUMN IF NOT EXISTS automated_resolution_rate          numeric;

CREATE TABLE IF NOT EXISTS reporting.intent_metrics (
    conversation_date       date    NOT NULL,
    source                  text    NOT NULL,
    tenant                  text    NOT NULL,
    first_meaningful_intent text    NOT NULL,
    total_conversations     integer NOT NULL,
    bot_handled_rate        numeric NOT NULL,
    PRIMARY KEY (conversation_date, source, tenant, first_meaningful_intent)
);
ALTER TABLE reporting.intent_metrics ADD COLUMN IF NOT EXISTS bot_handled_conversations integer;

CREATE TABLE IF NOT EXISTS reporting.agent_daily_kpis (
    activity_date            date    NOT NULL,
    source                   text    NOT NULL,
    tenant                   text    NOT NULL,
    agent_id                 text    NOT NULL,
    chats_joined             integer NOT NULL,
    handle_seconds           numeric NOT NULL,
    first_response_median_s  numeric,
    first_response_p90_s     numeric,
    resolved                 integer NOT NULL,
    manual_closed            integer,  -- NULL where the source does not say how a chat was closed (A8)
    timeouts                 integer NOT NULL,
    csat                     numeric,
    csat_share_4_plus        numeric,
    PRIMARY KEY (activity_date, source, tenant, agent_id)
);
-- The counts behind the averages: CSAT = rating sum / ratings, the share >= 4 = ratings_4_plus / ratings,
-- mean first response = first_response_seconds / first_responses (medians do not re-aggregate).
ALTER TABLE reporting.agent_daily_kpis
    ADD COLUMN IF NOT EXISTS first_responses        integer,
    ADD COLUMN IF NOT EXISTS first_response_seconds numeric,
    ADD COLUMN IF NOT EXISTS csat_ratings           integer,
    ADD COLUMN IF NOT EXISTS csat_rating_sum        integer,
    ADD COLUMN IF NOT EXISTS csat_ratings_4_plus    integer;

CREATE TABLE IF NOT EXISTS reporting.agent_status_daily (
    status_date   date    NOT NULL,
    source        text    NOT NULL,
    tenant        text    NOT NULL,
    agent_id      text    NOT NULL,
    status        text    NOT NULL,
    seconds       numeric NOT NULL,
    online_share  numeric NOT NULL,  -- of the agent's logged time that day
    PRIMARY KEY (status_date, source, tenant, agent_id, status)
);

-- Bot KPIs by ISO week (Monday) and by calendar month, re-aggregated from the daily counts.
CREATE OR REPLACE VIEW reporting.bot_kpis_by_period AS
SELECT p.period, date_trunc(p.period, d.conversation_date)::date AS period_start, d.source, d.tenant,
       sum(d.total_conversations) AS total_conversations,
       sum(d.bot_handled_conversations) AS bot_handled_conversations,
       sum(d.escalated_conversations) AS escalated_conversations,
       sum(d.failed_escalation_conversations) AS failed_escalation_conversations,
       sum(d.deflected_conversations) AS deflected_conversations,
       sum(d.unknown_outcome_conversations) AS unknown_outcome_conversations,
       sum(d.automated_conversations) AS automated_conversations,
       sum(d.informed_conversations) AS informed_conversations,
       sum(d.visitor_messages) AS visitor_messages,
       sum(d.not_understood_messages) AS not_understood_messages,
       sum(d.bot_handled_conversations)::numeric / sum(d.total_conversations) AS bot_handled_rate,
       sum(d.escalated_conversations)::numeric / sum(d.total_conversations) AS escalation_rate,
       sum(d.failed_escalation_conversations)::numeric / sum(d.total_conversations) AS failed_escalation_rate,
       sum(d.deflected_conversations)::numeric / sum(d.total_conversations) AS deflection_rate,
       sum(d.automated_conversations)::numeric / sum(d.total_conversations) AS automation_rate,
       sum(d.informed_conversations)::numeric / sum(d.total_conversations) AS informed_rate,
       (sum(d.visitor_messages) - sum(d.not_understood_messages))::numeric / nullif(sum(d.visitor_messages), 0)
           AS messages_understood_rate,
       sum(d.automated_resolution_conversations) AS automated_resolution_conversations,
       sum(d.automated_resolution_conversations)::numeric
           / nullif(sum(d.total_conversations) FILTER (WHERE d.automated_resolution_conversations IS NOT NULL), 0)
           AS automated_resolution_rate
FROM reporting.daily_bot_kpis d CROSS JOIN (VALUES ('week'), ('month')) AS p (period)
GROUP BY p.period, date_trunc(p.period, d.conversation_date), d.source, d.tenant;

-- Which (source, day) partitions each reporting build rebuilt, and what that took.
CREATE TABLE IF NOT EXISTS audit.reporting_builds (
    build_id         bigserial PRIMARY KEY,
    run_id           text        NOT NULL,
    source           text        NOT NULL,
    day              date        NOT NULL,
    conversations    integer     NOT NULL,
    duration_seconds double precision NOT NULL,
    built_at         timestamptz NOT NULL DEFAULT now()
);

-- How fresh each source is, per tenant: refreshed by every reporting build from audit.load_log
-- (readers may not see audit itself).
CREATE TABLE IF NOT EXISTS reporting.source_freshness (
    source                 text        NOT NULL,
    tenant                 text        NOT NULL,
    latest_landed_day      date,        -- the last day a load of this tenant brought rows for
    last_successful_load   timestamptz NOT NULL,
    refreshed_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, tenant)
);

-- Access: the loader owns staging and audit, the reader may read reporting only.  Creating roles
-- needs CREATEROLE; where the build user lacks it, a DBA runs this block once (see README).
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'chat_ingest_reader') THEN
        CREATE ROLE chat_ingest_reader NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'chat_ingest_loader') THEN
        CREATE ROLE chat_ingest_loader NOLOGIN;
    END IF;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'cannot create the chat_ingest roles (needs CREATEROLE); ask a DBA to create them';
END
$$;
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'chat_ingest_reader') THEN
        GRANT USAGE ON SCHEMA reporting TO chat_ingest_reader;
        GRANT SELECT ON ALL TABLES IN SCHEMA reporting TO chat_ingest_reader;
        REVOKE ALL ON SCHEMA staging, audit FROM chat_ingest_reader;
    END IF;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'chat_ingest_loader') THEN
        GRANT USAGE, CREATE ON SCHEMA staging, audit TO chat_ingest_loader;
        GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA staging, audit TO chat_ingest_loader;
        GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA audit TO chat_ingest_loader;
        -- the loader lands data; it does not own, change or drop what analysts read
        GRANT USAGE ON SCHEMA reporting TO chat_ingest_loader;
        GRANT SELECT ON ALL TABLES IN SCHEMA reporting TO chat_ingest_loader;
    END IF;
END
$$;

-- Indexes on staging that serve the rebuild of a day (a conversation's rows by its id).  Where a
-- lookup names the tenant too, the id comes first: a tenant's rows all share its value, so a leading
-- tenant column costs every comparison of a load's index maintenance a second column, and an index on
-- (bot_handle, chat_id) added about 2.8 µs to each row landed against about 1.7 µs for
-- (chat_id, bot_handle) (bench/README.md).  The same lookups use either.  The largest tables (Botslovers
-- and A8 messages, A8 chat states) have none: the rebuild finds a conversation's rows through the days
-- the loader keeps for it (staging.<table>_days, chat_ingest/reporting.py: copy_day_conversation_rows).
DROP INDEX IF EXISTS staging.botslovers_messages_session_idx, staging.botslovers_chat_agent_log_chat_idx,
    staging.a8_messages_chat_idx, staging.a8_chat_state_chat_idx, staging.a8_user_client_idx,
    staging.botslovers_messages_session_lookup_idx, staging.a8_messages_chat_lookup_idx,
    staging.a8_chat_state_chat_lookup_idx;
CREATE INDEX IF NOT EXISTS botslovers_chat_agent_log_chat_lookup_idx ON staging.botslovers_chat_agent_log (chat_id, company);
-- The participations still open (open_participations_botslovers.sql, every build): a handful of rows, found
-- without reading the table's history; only rows that are open now are in it.
CREATE INDEX IF NOT EXISTS botslovers_chat_agent_log_open_idx ON staging.botslovers_chat_agent_log (company)
    WHERE event = 'agent_joined' AND left_at IS NULL AND deleted_at IS NULL;
CREATE INDEX IF NOT EXISTS a8_user_message_details_chat_idx ON staging.a8_user_message_details (chat_id);
CREATE INDEX IF NOT EXISTS a8_a8bot_nlp_mid_idx ON staging.a8_a8bot_nlp (mid);
CREATE INDEX IF NOT EXISTS a8_event_metrics_chat_idx ON staging.a8_event_metrics (chat_id);
CREATE INDEX IF NOT EXISTS a8_user_client_lookup_idx ON staging.a8_user (client_id, bot_handle);
CREATE INDEX IF NOT EXISTS ultimate_conversations_start_idx ON staging.ultimate_conversations (conversation_start_time);
CREATE INDEX IF NOT EXISTS unless_conversations_start_idx ON staging.unless_conversations (started_at);

