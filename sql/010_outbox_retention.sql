-- 010_outbox_retention.sql — the outbox stays bounded (docs/spec.md §4.4):
-- delivered rows are pruned after a retention period, and a notification
-- that keeps failing becomes a dead letter, no longer retried, counted and
-- alerted on, until an operator re-drives or discards it
-- (sql/functions/outbox.sql, docs/operations.md "Outgoing notifications").
--
-- Columns only, added without a rewrite: no index is built here, so a large
-- outbox is not locked while this runs. A dead letter waits at
-- next_attempt_at = 'infinity', the far end of outbox_due_idx, which keeps
-- serving what is due, the backlog and the dead letters.

ALTER TABLE billing.settings
    ADD COLUMN outbox_retention    interval NOT NULL DEFAULT '7 days'
        CHECK (outbox_retention >= interval '0'),
    ADD COLUMN outbox_max_attempts int      NOT NULL DEFAULT 100
        CHECK (outbox_max_attempts >= 1),
    ADD COLUMN outbox_max_age      interval NOT NULL DEFAULT '3 days'
        CHECK (outbox_max_age > interval '0');

ALTER TABLE billing.outbox
    ADD COLUMN dead_at     timestamptz,     -- a dead letter since then
    ADD COLUMN redriven_at timestamptz;     -- when an operator re-drove it
