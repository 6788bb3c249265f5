-- A8 messages of the day's conversations; the body is JSON, its `text` is the message text.  Each started
-- that day, so day_a8_messages (chat_ingest/reporting.py: copy_day_conversation_rows) holds all its messages.
INSERT INTO reporting.messages (source, tenant, conversation_id, message_id, sent_at, conversation_date,
    sender_role, text_masked)
SELECT 'a8', m.bot_handle, m.chat_id, m.mid, m.time, c.conversation_date, m.msg_from,
       reporting.mask_pii(m.msg ->> 'text')
FROM reporting.conversations c
JOIN day_a8_messages m ON m.bot_handle = c.tenant AND m.chat_id = c.conversation_id
WHERE c.source = 'a8' AND c.conversation_date = %(day)s;
