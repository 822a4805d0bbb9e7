-- table_guards.sql — trigger functions that keep the tables honest
-- (docs/spec.md §3 invariant 1; versioned prices, docs/spec.md §2).
--
-- Tables depend on these (their triggers are created by 001_schema.sql), so
-- 001 includes this file with \ir before it creates the triggers; migrate.sh
-- applies it again with every other function file. Keep these bodies free of
-- references to objects that 001 does not create (sql/README.md, "Order").

-- Append-only ledger: rejects UPDATE, DELETE and TRUNCATE for every role,
-- owner and superuser included.
CREATE OR REPLACE FUNCTION billing.ledger_append_only() RETURNS trigger
LANGUAGE plpgsql SET search_path = billing, pg_temp AS $$
BEGIN
    RAISE EXCEPTION 'billing.ledger_entries is append-only: % rejected', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

-- Prices are versioned: never UPDATE a price row, insert a new one.
CREATE OR REPLACE FUNCTION billing.model_prices_immutable() RETURNS trigger
LANGUAGE plpgsql SET search_path = billing, pg_temp AS $$
BEGIN
    RAISE EXCEPTION 'billing.model_prices rows are immutable; insert a new row with a later effective_from'
        USING ERRCODE = 'insufficient_privilege';
END
$$;

-- Append-only audit tables (billing.admin_requests, migration 011): the same
-- refusal as the ledger's, naming the table.
CREATE OR REPLACE FUNCTION billing.append_only() RETURNS trigger
LANGUAGE plpgsql SET search_path = billing, pg_temp AS $$
BEGIN
    RAISE EXCEPTION 'billing.% is append-only: % rejected', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
