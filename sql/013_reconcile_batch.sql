-- 013_reconcile_batch.sql — nothing to migrate: group commit's function,
-- billing.api_reconcile_batch (sql/functions/reconcile_batch.sql), is new,
-- and a module that calls it needs a database whose runs define it. This
-- version is what /readyz compares (sql/README.md, "Canaries").
SELECT 1;
