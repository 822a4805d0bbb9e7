-- 014_balance_batch.sql — nothing to migrate: billing.api_balance_batch
-- (sql/functions/balance.sql), group commit of balance reads, is new, and a
-- module that calls it needs a database whose runs define it. This version
-- is what /readyz compares (sql/README.md, "Canaries").
SELECT 1;
