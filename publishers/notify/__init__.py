"""Notification delivery: templates rendered per outbox row, sent by SMTP or signed webhook, with retries."""
