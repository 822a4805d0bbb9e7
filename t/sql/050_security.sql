-- Invariant 1 (append-only ledger, for every role) and least privilege of billing_app.
\set test_name security
\ir lib/setup.psql

DO $$
DECLARE
    u text := pg_temp.u('owner');
    v_id bigint;
    v_ok boolean;
BEGIN
    PERFORM pg_temp.fund(u, 1000000);
    SELECT id INTO v_id FROM billing.ledger_entries WHERE user_id = u;

    v_ok := false;
    BEGIN
        UPDATE billing.ledger_entries SET amount_micros = 0 WHERE id = v_id;
    EXCEPTION WHEN insufficient_privilege THEN
        v_ok := SQLERRM LIKE '%append-only%';
    END;
    ASSERT v_ok, 'owner UPDATE of the ledger must be rejected by the trigger';

    v_ok := false;
    BEGIN
        DELETE FROM billing.ledger_entries WHERE id = v_id;
    EXCEPTION WHEN insufficient_privilege THEN
        v_ok := SQLERRM LIKE '%append-only%';
    END;
    ASSERT v_ok, 'owner DELETE of the ledger must be rejected by the trigger';

    v_ok := false;
    BEGIN
        TRUNCATE billing.ledger_entries CASCADE;
    EXCEPTION WHEN insufficient_privilege THEN
        v_ok := SQLERRM LIKE '%append-only%';
    END;
    ASSERT v_ok, 'owner TRUNCATE of the ledger must be rejected by the trigger';

    -- even with triggers "disabled" for replication
    v_ok := false;
    BEGIN
        SET LOCAL session_replication_role = replica;
        UPDATE billing.ledger_entries SET amount_micros = 0 WHERE id = v_id;
    EXCEPTION WHEN insufficient_privilege THEN
        v_ok := true;
    END;
    ASSERT v_ok, 'append-only trigger must fire under session_replication_role=replica';
    ASSERT current_setting('session_replication_role') = 'origin';

    ASSERT (SELECT amount_micros FROM billing.ledger_entries WHERE id = v_id) = 1000000;

    -- privileges of billing_app
    ASSERT NOT has_table_privilege('billing_app', 'billing.ledger_entries', 'UPDATE');
    ASSERT NOT has_table_privilege('billing_app', 'billing.ledger_entries', 'DELETE');
    ASSERT NOT has_table_privilege('billing_app', 'billing.ledger_entries', 'TRUNCATE');
    ASSERT NOT has_table_privilege('billing_app', 'billing.ledger_entries', 'INSERT');
    ASSERT NOT has_table_privilege('billing_app', 'billing.accounts', 'UPDATE');
    ASSERT NOT has_table_privilege('billing_app', 'billing.purchases', 'UPDATE');
    ASSERT NOT has_table_privilege('billing_app', 'billing.holds', 'INSERT');
    ASSERT NOT has_table_privilege('billing_app', 'billing.model_prices', 'INSERT');
    ASSERT has_schema_privilege('billing_app', 'billing', 'USAGE');
    ASSERT NOT has_schema_privilege('billing_app', 'billing', 'CREATE');
    ASSERT (SELECT NOT rolcanlogin AND NOT rolsuper FROM pg_roles WHERE rolname = 'billing_app');
    ASSERT has_function_privilege('billing_app', 'billing.api_reconcile(text,text,bigint,bigint,text,uuid)', 'EXECUTE');
    ASSERT has_function_privilege('billing_app', 'billing.api_stripe_event(jsonb)', 'EXECUTE');
    ASSERT has_function_privilege('billing_app', 'billing.outbox_claim(int,int)', 'EXECUTE');
    ASSERT has_function_privilege('billing_app', 'billing.invariant_violations()', 'EXECUTE');
    ASSERT NOT has_function_privilege('billing_app', 'billing._charge(bigint,bigint,bigint,bigint)', 'EXECUTE');
    ASSERT NOT has_function_privilege('billing_app', 'billing._purchase_credit(billing.purchases,text,text)', 'EXECUTE');
    -- PUBLIC may execute nothing in the schema
    ASSERT NOT EXISTS (
        SELECT 1 FROM pg_proc p
         WHERE p.pronamespace = 'billing'::regnamespace
           AND (p.proacl IS NULL OR EXISTS (SELECT 1 FROM aclexplode(p.proacl) a
                                             WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE'))),
        'a billing function is executable by PUBLIC';
    -- all api_* functions are SECURITY DEFINER with a fixed search_path
    ASSERT NOT EXISTS (
        SELECT 1 FROM pg_proc p
         WHERE p.pronamespace = 'billing'::regnamespace
           AND (p.proname LIKE 'api\_%' OR p.proname LIKE 'outbox\_%')
           AND NOT (p.prosecdef AND p.proconfig::text LIKE '%search_path=billing, pg_temp%')),
        'api function without SECURITY DEFINER / search_path';
END $$;

-- As billing_app: the API works, direct writes are refused.
SELECT pg_temp.u('app') AS app_user \gset
-- usage needs a positive balance (docs/spec.md §3.5): fund as the owner first
SELECT pg_temp.fund(:'app_user', 1) IS NOT NULL AS funded \gset
SET ROLE billing_app;
DO $$
DECLARE
    r billing.api_result;
    v_ok boolean;
    u text := current_setting('t.run') || ':app';
BEGIN
    r := billing.api_reconcile(u, 'gpt-4o', 0, 0, 'as-app', NULL);
    ASSERT r.status = 201, format('%s', r);
    ASSERT (billing.api_balance(u)).status = 200;
    ASSERT (billing.api_packages()).status = 200;
    ASSERT (billing.api_readyz()).status = 200;
    PERFORM billing.outbox_backlog();

    v_ok := false;
    BEGIN
        UPDATE billing.ledger_entries SET amount_micros = 0 WHERE user_id = u;
    EXCEPTION WHEN insufficient_privilege THEN
        v_ok := SQLERRM LIKE 'permission denied%';
    END;
    ASSERT v_ok, 'billing_app UPDATE of the ledger must be refused';

    v_ok := false;
    BEGIN
        DELETE FROM billing.ledger_entries WHERE user_id = u;
    EXCEPTION WHEN insufficient_privilege THEN
        v_ok := true;
    END;
    ASSERT v_ok, 'billing_app DELETE of the ledger must be refused';

    v_ok := false;
    BEGIN
        INSERT INTO billing.ledger_entries (user_id, type, amount_micros, balance_after_micros, idempotency_key)
        VALUES (u, 'usage', 0, 0, 'x');
    EXCEPTION WHEN insufficient_privilege THEN
        v_ok := true;
    END;
    ASSERT v_ok, 'billing_app INSERT into the ledger must be refused';

    v_ok := false;
    BEGIN
        UPDATE billing.accounts SET balance_micros = 1000000000 WHERE user_id = u;
    EXCEPTION WHEN insufficient_privilege THEN
        v_ok := true;
    END;
    ASSERT v_ok, 'billing_app UPDATE of accounts must be refused';

    v_ok := false;
    BEGIN
        PERFORM billing._charge(1, 1, 1, 1);
    EXCEPTION WHEN insufficient_privilege THEN
        v_ok := true;
    END;
    ASSERT v_ok, 'billing_app must not execute internal helpers';
END $$;
RESET ROLE;

DO $$
BEGIN
    ASSERT pg_temp.balance(pg_temp.u('app')) = 1 AND pg_temp.entries(pg_temp.u('app')) = 2;
    ASSERT (SELECT count(*) FROM billing.invariant_violations()) = 0;
    -- readyz reports the applied schema version
    ASSERT ((billing.api_readyz()).body::jsonb ->> 'schemaVersion')::int
           = (SELECT max(version) FROM billing.schema_migrations);
    ASSERT ((billing.api_readyz()).body::jsonb ->> 'schemaVersion')::int >= 5;
END $$;

-- invariant_violations() detects a broken account (made inside a rolled-back transaction).
BEGIN;
DO $$
DECLARE
    u text := pg_temp.u('owner');
BEGIN
    UPDATE billing.accounts SET balance_micros = balance_micros + 1 WHERE user_id = u;
    ASSERT EXISTS (SELECT 1 FROM billing.invariant_violations() WHERE invariant = 2 AND user_id = u);
    ALTER TABLE billing.ledger_entries DISABLE TRIGGER ledger_entries_no_update_delete;
    ASSERT EXISTS (SELECT 1 FROM billing.invariant_violations() WHERE invariant = 1);
    GRANT UPDATE ON billing.ledger_entries TO billing_app;
    ASSERT (SELECT count(*) FROM billing.invariant_violations() WHERE invariant = 1) = 2;
END $$;
ROLLBACK;

DO $$ BEGIN PERFORM pg_temp.assert_healthy(); END $$;
\echo ok 050_security
