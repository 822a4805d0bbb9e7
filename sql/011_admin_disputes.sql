-- 011_admin_disputes.sql — the entry types of docs/spec.md §3 beyond purchase,
-- usage and refund: administrative adjustments and usage reversals
-- (docs/spec.md §4.7), Stripe disputes (§4.2); the admin requests'
-- idempotency keys; the index of the usage summary (§4.6).
--
-- Every statement here is short on a ledger of any size, except the index,
-- which migrate.sh builds beforehand with CREATE INDEX CONCURRENTLY on a
-- database that already has a ledger (sql/online/011_*.sql, sql/README.md
-- "Indexes on a live ledger"); the CREATE INDEX below only builds it where
-- the ledger was created in this same run, so it is empty.
--
-- Nothing that runs in the previous module version changes meaning: new
-- columns are nullable, new tables are new, and the previous module never
-- writes the new entry types.

-- ALTER TABLE takes the ledger's ACCESS EXCLUSIVE lock until the run
-- commits: give up rather than queue every ledger write behind a long
-- transaction (run migrate.sh again).
SET LOCAL lock_timeout = '10s';

-- ---------------------------------------------------------------------------
-- The ledger: who and why (admin entries), what an entry reverses, which
-- dispute it belongs to. Nullable, no default: no table rewrite.
-- ---------------------------------------------------------------------------
ALTER TABLE billing.ledger_entries
    ADD COLUMN actor text,
    ADD COLUMN reason text,
    ADD COLUMN reversed_entry_id bigint,
    ADD COLUMN dispute_id text;

-- The new constraints are NOT VALID: checking them would scan the ledger
-- under the lock, and no row older than this migration can break them (every
-- such row passed the narrower type check of 001 and has NULL in the new
-- columns). PostgreSQL enforces a NOT VALID constraint on every new row;
-- "ALTER TABLE billing.ledger_entries VALIDATE CONSTRAINT <name>" marks it
-- checked at any time without blocking writes (docs/operations.md).
ALTER TABLE billing.ledger_entries
    DROP CONSTRAINT ledger_entries_type_check,
    ADD CONSTRAINT ledger_entry_type CHECK (type IN (
        'purchase', 'usage', 'refund', 'adjustment', 'usage_reversal',
        'dispute', 'dispute_reversal')) NOT VALID,
    ADD CONSTRAINT ledger_reversed_entry_fk FOREIGN KEY (reversed_entry_id)
        REFERENCES billing.ledger_entries (id) NOT VALID,
    -- admin entries: who and why; system keys contain a space, so they never
    -- collide with a client key (001's note), and the key of a reversal or a
    -- dispute entry names what it belongs to: the unique (user_id,
    -- idempotency_key) makes "at most once per usage entry / per dispute"
    -- structural, with no new index on the ledger
    ADD CONSTRAINT ledger_adjustment_shape CHECK (
        type <> 'adjustment' OR (
            amount_micros <> 0 AND actor IS NOT NULL
            AND length(reason) BETWEEN 1 AND 500 AND request_fingerprint IS NOT NULL
            AND purchase_id IS NULL AND idempotency_key LIKE 'adjustment %')) NOT VALID,
    ADD CONSTRAINT ledger_usage_reversal_shape CHECK (
        type <> 'usage_reversal' OR (
            amount_micros >= 0 AND actor IS NOT NULL
            AND length(reason) BETWEEN 1 AND 500 AND request_fingerprint IS NOT NULL
            AND reversed_entry_id IS NOT NULL AND purchase_id IS NULL
            AND idempotency_key = 'usage_reversal ' || reversed_entry_id::text)) NOT VALID,
    ADD CONSTRAINT ledger_dispute_shape CHECK (
        type <> 'dispute' OR (
            amount_micros < 0 AND purchase_id IS NOT NULL AND dispute_id IS NOT NULL
            AND idempotency_key = 'dispute ' || dispute_id)) NOT VALID,
    ADD CONSTRAINT ledger_dispute_reversal_shape CHECK (
        type <> 'dispute_reversal' OR (
            amount_micros > 0 AND purchase_id IS NOT NULL AND dispute_id IS NOT NULL
            AND idempotency_key = 'dispute_reversal ' || dispute_id)) NOT VALID;

-- ---------------------------------------------------------------------------
-- Admin requests: the idempotency keys of docs/spec.md §4.7, one namespace
-- for all admin operations (whoever sends them: a retry by a colleague after
-- an unknown outcome is a replay, not a second credit), and the audit of
-- who did what and why. Append-only, like the ledger.
-- ---------------------------------------------------------------------------
CREATE TABLE billing.admin_requests (
    idempotency_key     text PRIMARY KEY CHECK (idempotency_key ~ '^[!-~]{1,255}$'),
    operation           text NOT NULL
                        CHECK (operation IN ('adjustment', 'usage_reversal', 'model_price')),
    request_fingerprint text NOT NULL,
    actor               text NOT NULL CHECK (length(actor) BETWEEN 1 AND 255),
    reason              text CHECK (length(reason) BETWEEN 1 AND 500),
    entry_id            bigint REFERENCES billing.ledger_entries (id),
    price_id            bigint REFERENCES billing.model_prices (id),
    created_at          timestamptz NOT NULL DEFAULT now(),
    CHECK ((entry_id IS NOT NULL) = (operation IN ('adjustment', 'usage_reversal'))),
    CHECK ((price_id IS NOT NULL) = (operation = 'model_price')),
    CHECK (reason IS NOT NULL OR operation = 'model_price')
);

-- ---------------------------------------------------------------------------
-- Disputes (docs/spec.md §4.2): one row per Stripe dispute id, whatever
-- order its events arrive in; what it debited and credited back.
-- ---------------------------------------------------------------------------
CREATE TABLE billing.disputes (
    id                   text PRIMARY KEY CHECK (length(id) BETWEEN 1 AND 255),
    purchase_id          uuid   NOT NULL REFERENCES billing.purchases (id),
    user_id              text   NOT NULL,
    amount_cents         bigint NOT NULL CHECK (amount_cents >= 0),
    status               text   NOT NULL,            -- Stripe's, as last seen
    debited_micros       bigint NOT NULL DEFAULT 0 CHECK (debited_micros >= 0),
    credited_back_micros bigint NOT NULL DEFAULT 0
                         CHECK (credited_back_micros IN (0, debited_micros)),
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX disputes_purchase_idx ON billing.disputes (purchase_id);

-- ---------------------------------------------------------------------------
-- The usage summary's index (docs/spec.md §4.6): a user's usage entries by
-- time. Already built by the online step where the ledger existed before
-- this run (sql/online/011_ledger_usage_summary_idx.sql).
-- ---------------------------------------------------------------------------
CREATE INDEX IF NOT EXISTS ledger_usage_summary_idx
    ON billing.ledger_entries (user_id, created_at) WHERE type = 'usage';

-- ---------------------------------------------------------------------------
-- Append-only admin audit; the runtime role writes only through functions.
-- ---------------------------------------------------------------------------
-- the trigger function lives in table_guards.sql (sql/README.md, "Order")
\ir functions/table_guards.sql

CREATE TRIGGER admin_requests_no_update_delete
    BEFORE UPDATE OR DELETE ON billing.admin_requests
    FOR EACH ROW EXECUTE FUNCTION billing.append_only();
CREATE TRIGGER admin_requests_no_truncate
    BEFORE TRUNCATE ON billing.admin_requests
    FOR EACH STATEMENT EXECUTE FUNCTION billing.append_only();
ALTER TABLE billing.admin_requests ENABLE ALWAYS TRIGGER admin_requests_no_update_delete;
ALTER TABLE billing.admin_requests ENABLE ALWAYS TRIGGER admin_requests_no_truncate;

REVOKE ALL ON billing.admin_requests, billing.disputes FROM PUBLIC, billing_app;
