-- 012_lean_money_path.sql — the money path at a lean transaction's cost
-- (docs/benchmarks.md, "The stored functions"): three changes of private
-- helpers and of the usage entry's CHECK; sql/functions/ re-creates the
-- dropped helpers in the same transaction (sql/README.md).

-- (1) helpers in FROM
-- _held and _price_in_force become set-returning
-- SQL functions, used in FROM, where the planner inlines them into the
-- caller's statement (and PL/pgSQL keeps that plan for the session). As
-- scalar functions with a SET clause they were parsed and planned again on
-- every call: about a quarter of api_reconcile's cost and most of
-- api_balance's (docs/benchmarks.md, "The stored functions"). A result type
-- cannot be changed by CREATE OR REPLACE, so they are dropped here and
-- re-created by sql/functions/ in the same transaction (sql/README.md:
-- private helpers may change freely).
DROP FUNCTION IF EXISTS billing._held(text, uuid);
DROP FUNCTION IF EXISTS billing._price_in_force(text);

-- (2) the usage entry's shape
-- the usage entry's shape, checked at less cost, and
-- without a fingerprint.
--
-- * The key rule without a bounded repetition: `idempotency_key ~
--   '^[!-~]{1,255}$'` compiles to a 255-state automaton whose every match
--   costs about 57 µs here (PostgreSQL's regex engine builds its DFA states
--   anew for each match), a fifth of a reconcile's database work
--   (docs/benchmarks.md, "The stored functions"). The same rule as two cheap tests: 1 to 255 bytes, and no
--   character outside 0x21-0x7E (any other character, multi-byte ones
--   included, is outside that range, so bytes and characters agree on every
--   key that passes).
-- * request_fingerprint is no longer required of a usage entry: the entry
--   holds every field of its request (model, token counts, hold), and a
--   retry is compared with those (reconcile.sql, _usage_replay), for the
--   entries written before this migration as well. New usage entries leave
--   it NULL: computing it (jsonb, text, SHA-256, hex) was about 3 % of a
--   reconcile's database work.
--
-- NOT VALID: every existing row was checked by the old constraint, which
-- asks more of a row than this one, so nothing needs to be read again (a
-- scan would hold the ledger's ACCESS EXCLUSIVE lock while it reads every
-- row). New rows are checked all the same. An operator may run `ALTER TABLE
-- billing.ledger_entries VALIDATE CONSTRAINT ledger_usage_shape` at any
-- time; it reads the table without blocking writes.
ALTER TABLE billing.ledger_entries
    DROP CONSTRAINT ledger_usage_shape,
    ADD CONSTRAINT ledger_usage_shape CHECK (
        type <> 'usage' OR (
            amount_micros <= 0 AND price_id IS NOT NULL AND model IS NOT NULL
            AND input_tokens BETWEEN 0 AND 1000000000
            AND output_tokens BETWEEN 0 AND 1000000000
            AND purchase_id IS NULL
            AND octet_length(idempotency_key) BETWEEN 1 AND 255
            AND idempotency_key !~ '[^!-~]')) NOT VALID;

COMMENT ON COLUMN billing.ledger_entries.request_fingerprint IS
    'sha256 of the request''s canonical form; set on usage entries written before migration 012, NULL since (a retry is compared with the entry''s own fields)';

-- _usage_replay takes the request's fields instead of a fingerprint.
DROP FUNCTION IF EXISTS billing._usage_replay(billing.ledger_entries, text);

-- (3) fewer steps
-- api_reconcile reads the balance.low threshold in the
-- statement it runs under the account lock, and makes a new entry's answer
-- from what it knows: _low_threshold becomes a set-returning SQL function
-- (inlined in FROM, see (1)) and _usage_body takes scalars instead of the
-- entry's row. Both change their signature or result type, so the old ones
-- are dropped here and sql/functions/ re-creates them in the same
-- transaction.
DROP FUNCTION IF EXISTS billing._low_threshold();
DROP FUNCTION IF EXISTS billing._usage_body(billing.ledger_entries, boolean);
