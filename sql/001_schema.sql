-- 001_schema.sql — schema, tables, roles, append-only ledger.
--
-- Applied by sql/migrate.sh inside the run's one transaction together with its
-- billing.schema_migrations row (do not put BEGIN/COMMIT in migration files).
-- Runs as the schema owner. Money is bigint micro-dollars everywhere.

SET LOCAL client_min_messages = warning;

CREATE SCHEMA IF NOT EXISTS billing;
REVOKE ALL ON SCHEMA billing FROM PUBLIC;

CREATE TABLE IF NOT EXISTS billing.schema_migrations (
    version    int PRIMARY KEY,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- Runtime role: least privilege. Deployments GRANT billing_app TO <login>.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'billing_app') THEN
        CREATE ROLE billing_app NOLOGIN;
    END IF;
END
$$;

-- Functions created from here on are not executable by PUBLIC by default.
ALTER DEFAULT PRIVILEGES IN SCHEMA billing REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;

-- One-row configuration table. A custom GUC billing.balance_low_threshold_micros
-- (e.g. ALTER DATABASE ... SET) overrides the row when set.
CREATE TABLE billing.settings (
    id                           boolean PRIMARY KEY DEFAULT true CHECK (id),
    balance_low_threshold_micros bigint  NOT NULL DEFAULT 1000000
                                 CHECK (balance_low_threshold_micros >= 0),
    outbox_enabled               boolean NOT NULL DEFAULT true
);
INSERT INTO billing.settings DEFAULT VALUES;

CREATE TABLE billing.credit_packages (
    code           text PRIMARY KEY CHECK (code ~ '^[a-z0-9_-]{1,64}$'),
    name           text   NOT NULL,
    price_cents    int    NOT NULL CHECK (price_cents > 0),
    currency       text   NOT NULL DEFAULT 'usd' CHECK (currency = 'usd'),
    credits_micros bigint NOT NULL CHECK (credits_micros > 0),
    active         boolean NOT NULL DEFAULT true
);

-- Versioned prices: a change is a new row (UPDATE is rejected by a trigger).
CREATE TABLE billing.model_prices (
    id                     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    model                  text   NOT NULL CHECK (length(model) BETWEEN 1 AND 128),
    input_micros_per_mtok  bigint NOT NULL CHECK (input_micros_per_mtok >= 0),
    output_micros_per_mtok bigint NOT NULL CHECK (output_micros_per_mtok >= 0),
    effective_from         timestamptz NOT NULL,
    created_at             timestamptz NOT NULL DEFAULT now(),
    UNIQUE (model, effective_from)
);

CREATE TABLE billing.accounts (
    user_id        text PRIMARY KEY CHECK (length(user_id) BETWEEN 1 AND 255),
    balance_micros bigint NOT NULL DEFAULT 0,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE billing.purchases (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id             text   NOT NULL CHECK (length(user_id) BETWEEN 1 AND 255),
    package_code        text   NOT NULL REFERENCES billing.credit_packages (code),
    amount_cents        int    NOT NULL CHECK (amount_cents > 0),
    currency            text   NOT NULL DEFAULT 'usd',
    credits_micros      bigint NOT NULL CHECK (credits_micros > 0),
    status              text   NOT NULL DEFAULT 'pending'
                        CHECK (status IN ('pending','paid','failed','partially_refunded','refunded')),
    checkout_session_id text,
    checkout_url        text,
    payment_intent_id   text,
    refunded_micros     bigint NOT NULL DEFAULT 0 CHECK (refunded_micros >= 0),
    failure_reason      text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CHECK (refunded_micros <= credits_micros)
);
CREATE INDEX purchases_user_idx    ON billing.purchases (user_id, created_at DESC);
CREATE INDEX purchases_session_idx ON billing.purchases (checkout_session_id)
    WHERE checkout_session_id IS NOT NULL;
CREATE INDEX purchases_pi_idx      ON billing.purchases (payment_intent_id)
    WHERE payment_intent_id IS NOT NULL;

CREATE TABLE billing.holds (
    id                     uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id                text   NOT NULL REFERENCES billing.accounts (user_id),
    amount_micros          bigint NOT NULL CHECK (amount_micros > 0),
    idempotency_key        text   NOT NULL,
    request_fingerprint    text   NOT NULL,
    status                 text   NOT NULL DEFAULT 'active'
                           CHECK (status IN ('active','captured','released')),
    expires_at             timestamptz NOT NULL,
    available_after_micros bigint,           -- availableMicros of the original 201 (for replays)
    resolved_at            timestamptz,
    created_at             timestamptz NOT NULL DEFAULT now(),
    UNIQUE (user_id, idempotency_key)
);
CREATE INDEX holds_active_idx ON billing.holds (user_id) WHERE status = 'active';

CREATE TABLE billing.ledger_entries (
    id                   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id              text   NOT NULL REFERENCES billing.accounts (user_id),
    type                 text   NOT NULL CHECK (type IN ('purchase','usage','refund')),
    amount_micros        bigint NOT NULL,
    balance_after_micros bigint NOT NULL,
    idempotency_key      text   NOT NULL,
    request_fingerprint  text,
    price_id             bigint REFERENCES billing.model_prices (id),
    model                text,
    input_tokens         bigint,
    output_tokens        bigint,
    purchase_id          uuid REFERENCES billing.purchases (id),
    hold_id              uuid REFERENCES billing.holds (id),
    stripe_event_id      text,
    created_at           timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ledger_user_key_uniq UNIQUE (user_id, idempotency_key),
    -- usage keys are client keys (printable ASCII without space); system keys
    -- ('purchase <id>', 'refund <id> <n>') contain a space, so they can never
    -- collide with a client key.
    CONSTRAINT ledger_usage_shape CHECK (
        type <> 'usage' OR (
            amount_micros <= 0 AND price_id IS NOT NULL AND model IS NOT NULL
            AND input_tokens BETWEEN 0 AND 1000000000
            AND output_tokens BETWEEN 0 AND 1000000000
            AND request_fingerprint IS NOT NULL AND purchase_id IS NULL
            AND idempotency_key ~ '^[!-~]{1,255}$')),
    CONSTRAINT ledger_purchase_shape CHECK (
        type <> 'purchase' OR (amount_micros > 0 AND purchase_id IS NOT NULL
                               AND idempotency_key LIKE 'purchase %')),
    CONSTRAINT ledger_refund_shape CHECK (
        type <> 'refund' OR (amount_micros < 0 AND purchase_id IS NOT NULL
                             AND idempotency_key LIKE 'refund %'))
);
CREATE INDEX ledger_user_id_idx ON billing.ledger_entries (user_id, id DESC);
-- Invariant 4 structurally: at most one credit per purchase.
CREATE UNIQUE INDEX ledger_one_credit_per_purchase ON billing.ledger_entries (purchase_id)
    WHERE type = 'purchase';
CREATE INDEX ledger_purchase_idx ON billing.ledger_entries (purchase_id)
    WHERE purchase_id IS NOT NULL;

CREATE TABLE billing.stripe_events (
    id          text PRIMARY KEY,
    type        text NOT NULL,
    purchase_id uuid,
    outcome     text,
    received_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE billing.outbox (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id        uuid NOT NULL DEFAULT gen_random_uuid() UNIQUE,
    type            text NOT NULL,
    payload         jsonb NOT NULL,
    attempts        int  NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX outbox_due_idx ON billing.outbox (next_attempt_at, id) WHERE delivered_at IS NULL;

-- ---------------------------------------------------------------------------
-- Append-only ledger (invariant 1): rejects UPDATE, DELETE and TRUNCATE for
-- every role, owner and superuser included. ENABLE ALWAYS keeps the triggers
-- firing even under session_replication_role = replica.
-- ---------------------------------------------------------------------------
-- The trigger functions live in sql/functions/table_guards.sql; the triggers
-- need them now (sql/README.md, "Order").
\ir functions/table_guards.sql

CREATE TRIGGER ledger_entries_no_update_delete
    BEFORE UPDATE OR DELETE ON billing.ledger_entries
    FOR EACH ROW EXECUTE FUNCTION billing.ledger_append_only();
CREATE TRIGGER ledger_entries_no_truncate
    BEFORE TRUNCATE ON billing.ledger_entries
    FOR EACH STATEMENT EXECUTE FUNCTION billing.ledger_append_only();
ALTER TABLE billing.ledger_entries ENABLE ALWAYS TRIGGER ledger_entries_no_update_delete;
ALTER TABLE billing.ledger_entries ENABLE ALWAYS TRIGGER ledger_entries_no_truncate;

-- Prices are versioned: never UPDATE a price row, insert a new one.
CREATE TRIGGER model_prices_no_update
    BEFORE UPDATE ON billing.model_prices
    FOR EACH ROW EXECUTE FUNCTION billing.model_prices_immutable();

-- ---------------------------------------------------------------------------
-- Table privileges: billing_app writes only through SECURITY DEFINER functions.
-- ---------------------------------------------------------------------------
REVOKE ALL ON ALL TABLES IN SCHEMA billing FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA billing FROM billing_app;
GRANT USAGE ON SCHEMA billing TO billing_app;
GRANT SELECT ON billing.credit_packages, billing.model_prices,
                billing.schema_migrations, billing.ledger_entries TO billing_app;
