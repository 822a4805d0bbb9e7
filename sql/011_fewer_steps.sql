-- 011_fewer_steps.sql — api_reconcile reads the balance.low threshold in the
-- statement it runs under the account lock, and makes a new entry's answer
-- from what it knows: _low_threshold becomes a set-returning SQL function
-- (inlined in FROM, see 009) and _usage_body takes scalars instead of the
-- entry's row. Both change their signature or result type, so the old ones
-- are dropped here and sql/functions/ re-creates them in the same
-- transaction.
DROP FUNCTION IF EXISTS billing._low_threshold();
DROP FUNCTION IF EXISTS billing._usage_body(billing.ledger_entries, boolean);
