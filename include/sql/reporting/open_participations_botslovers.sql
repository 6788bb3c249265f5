-- Botslovers participations still open (tenant, participation_id, began): an agent_joined row without
-- left_at lasts until reporting.loaded_until('botslovers'), as agent_daily_kpis_botslovers.sql counts it.
SELECT company, id, joined_at
FROM staging.botslovers_chat_agent_log
WHERE event = 'agent_joined' AND left_at IS NULL AND deleted_at IS NULL
