-- 013_reconcile_batch.sql — nothing to migrate: group commit's functions,
-- billing.api_reconcile_batch and billing.api_hold_create_batch
-- (sql/functions/reconcile_batch.sql, holds_batch.sql), are new, and a
-- module that calls them needs a database whose runs define them. This
-- version is what /readyz compares (sql/README.md, "Canaries").
SELECT 1;
