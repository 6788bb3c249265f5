-- Botslovers messages of the day's conversations; `human` senders are agents.  Each started that day, so
-- day_botslovers_messages (chat_ingest/reporting.py: copy_day_conversation_rows) holds all its messages.
INSERT INTO reporting.messages (source, tenant, conversation_id, message_id, sent_at, conversation_date,
    sender_role, text_masked)
SELECT 'botslovers', m.company, m.session, m.id, m.created_at, c.conversation_date,
       CASE m.sender_type WHEN 'human' THEN 'agent' ELSE m.sender_type END, reporting.mask_pii(m.text)
FROM reporting.conversations c
JOIN day_botslovers_messages m ON m.company = c.tenant AND m.session = c.conversation_id
WHERE c.source = 'botslovers' AND c.conversation_date = %(day)s;
