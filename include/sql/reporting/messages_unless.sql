-- Unless log items of the day's conversations: support → agent; hidden bot items and errors (type 'error'
-- by reporting.vocabulary_key) → system.
-- A log item's uuid may repeat within a conversation in bad data, so the message id is position:uuid.
INSERT INTO reporting.messages (source, tenant, conversation_id, message_id, sent_at, conversation_date,
    sender_role, text_masked)
SELECT 'unless', l.website, l.conversation_id, l.position || ':' || l.uuid, l.logged_at, c.conversation_date,
       CASE WHEN l.sender = 'support' THEN 'agent'
            WHEN reporting.vocabulary_key(l.type) = 'error' OR (l.sender = 'bot' AND l.hidden IS TRUE) THEN 'system'
            ELSE l.sender END,
       reporting.mask_pii(l.content)
FROM reporting.conversations c
JOIN staging.unless_conversations u ON u.website = c.tenant AND u.conversation_id = c.conversation_id
JOIN staging.unless_logs l ON l.website = u.website AND l.session = u.session AND l.conversation_id = u.conversation_id
WHERE c.source = 'unless' AND c.conversation_date = %(day)s AND l.logged_at IS NOT NULL;
