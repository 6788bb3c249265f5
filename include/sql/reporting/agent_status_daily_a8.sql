-- Seconds per A8 agent and status on one UTC day, from agent_activities: an activity without a chat_id
-- (log-in, log-out, a status change) starts the agent's status until their next such activity —
-- `loggedIn` and `available` start `online`, `loggedOut` starts `offline`, any other event the status it
-- names.  The seed gives these names as examples ("such as loggedIn and loggedOut", "changing statuses
-- from available to unavailable"): they match by vocabulary key, so `LoggedIn` and `logged_in` are
-- `loggedIn`, and an agent who is `available` counts as online (`unavailable` stays logged in, not online).  The
-- last activity's interval is still open and not counted yet (its end arrives with the next load, which
-- rebuilds this day too).  Intervals are cut at midnight.  Activities carry no bot: an agent's day is
-- reported under each bot whose chats they handled that day (chat_state rows naming the agent), or under
-- '(no bot)' on a day they handled none -- a rule of that day's rows only, so the order days are
-- loaded in cannot change it.
-- online_share = online seconds / seconds logged in (every status but offline) that day.
WITH events AS (
    SELECT agent_id, time AS began,
           CASE reporting.vocabulary_key(event_name) WHEN 'loggedin' THEN 'online' WHEN 'available' THEN 'online'
                WHEN 'loggedout' THEN 'offline' ELSE event_name END
               AS status,
           lead(time) OVER (PARTITION BY agent_id ORDER BY time, session_id) AS ended
    FROM staging.a8_agent_activities
    WHERE chat_id IS NULL AND event_name IS NOT NULL
), intervals AS (
    SELECT agent_id, status, greatest(began, %(day_start)s) AS began, least(ended, %(day_end)s) AS ended
    FROM events WHERE ended > %(day_start)s AND began < %(day_end)s
), per_status AS (
    SELECT agent_id, status, sum(extract(epoch FROM ended - began)) AS seconds
    FROM intervals GROUP BY agent_id, status
), bots AS (
    SELECT DISTINCT agent_id, bot_handle FROM staging.a8_chat_state
    WHERE time >= %(day_start)s AND time < %(day_end)s AND agent_id IN (SELECT agent_id FROM per_status)
)
INSERT INTO reporting.agent_status_daily (status_date, source, tenant, agent_id, status, seconds, online_share)
SELECT %(day)s, 'a8', coalesce(b.bot_handle, '(no bot)'), p.agent_id, p.status, p.seconds,
       coalesce(coalesce(sum(p.seconds) FILTER (WHERE p.status = 'online') OVER agent, 0)
                / nullif(sum(p.seconds) FILTER (WHERE p.status <> 'offline') OVER agent, 0), 0)
FROM per_status p LEFT JOIN bots b USING (agent_id)
WINDOW agent AS (PARTITION BY p.agent_id, b.bot_handle);
