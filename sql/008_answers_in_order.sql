-- 008_answers_in_order.sql — answers keep their documented key order
-- (docs/api.md, "Answers"): the body helpers now build `json`, which keeps
-- the order it is given, instead of `jsonb`, which sorts keys by length.
-- A function's result type cannot be changed by CREATE OR REPLACE, so the
-- helpers are dropped here and re-created by their files in the same
-- transaction (sql/README.md: private helpers may change freely).
DROP FUNCTION IF EXISTS billing._usage_body(billing.ledger_entries, boolean);
DROP FUNCTION IF EXISTS billing._hold_body(billing.holds);
DROP FUNCTION IF EXISTS billing._purchase_body(billing.purchases, boolean);
