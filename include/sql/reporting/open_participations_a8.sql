-- A8 participations still open (tenant, participation_id, began): a human pick-up
-- (reporting.a8_human_pickup) that is its chat's latest state lasts until reporting.loaded_until('a8').
-- The few distinct state values are looked up once, not once per row.
WITH meaning AS (
    SELECT state, reporting.vocabulary_meaning('a8', 'state', state) AS meaning
    FROM (SELECT DISTINCT state FROM staging.a8_chat_state) s
), pickups AS (
    SELECT s.bot_handle, s.chat_id, s.id, s.time, m.meaning
    FROM staging.a8_chat_state s JOIN meaning m USING (state)
    WHERE s.agent_id IS NOT NULL AND m.meaning IN ('agent_assigned', 'assigned')
)
SELECT p.bot_handle, p.chat_id || ' ' || p.id, p.time
FROM pickups p
WHERE NOT EXISTS (SELECT FROM staging.a8_chat_state n
                  WHERE n.bot_handle = p.bot_handle AND n.chat_id = p.chat_id
                    AND (n.time > p.time OR (n.time = p.time AND n.id > p.id)))
  AND reporting.a8_human_pickup(p.meaning, EXISTS (
           SELECT FROM staging.a8_chat_state t JOIN meaning tm USING (state)
           WHERE t.bot_handle = p.bot_handle AND t.chat_id = p.chat_id AND t.time < p.time
             AND tm.meaning = 'transferred'))
