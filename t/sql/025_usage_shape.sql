-- Migration 012 (sql/012_lean_money_path.sql): a retry is compared with the
-- entry's own fields, not a fingerprint, and the table's key rule is the
-- same rule written without a bounded repetition.
\set test_name usage_shape
\ir lib/setup.psql

-- An entry written before 012 carries the sha256 fingerprint the function
-- computed then; a retry of it is a replay, another body is 409. Such an
-- entry is made here as api_reconcile made it before migration 012.
CREATE FUNCTION pg_temp.old_entry(p_user text, p_model text, p_in bigint, p_out bigint, p_key text,
                                  p_hold uuid) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    v_bal bigint;
    v_charge bigint;
    v_price billing.model_prices;
    v_id bigint;
BEGIN
    SELECT balance_micros INTO v_bal FROM billing.accounts WHERE user_id = p_user FOR UPDATE;
    SELECT * INTO v_price FROM billing.model_prices WHERE model = p_model AND effective_from <= now()
     ORDER BY effective_from DESC LIMIT 1;
    v_charge := billing._charge(p_in, p_out, v_price.input_micros_per_mtok, v_price.output_micros_per_mtok);
    INSERT INTO billing.ledger_entries (user_id, type, amount_micros, balance_after_micros, idempotency_key,
                                        request_fingerprint, price_id, model, input_tokens, output_tokens,
                                        hold_id)
    VALUES (p_user, 'usage', -v_charge, v_bal - v_charge, p_key,
            encode(sha256(convert_to(jsonb_build_array('usage', p_model, p_in, p_out, p_hold::text)::text,
                                     'UTF8')), 'hex'),
            v_price.id, p_model, p_in, p_out, p_hold)
    RETURNING id INTO v_id;
    UPDATE billing.accounts SET balance_micros = v_bal - v_charge WHERE user_id = p_user;
    IF p_hold IS NOT NULL THEN
        UPDATE billing.holds SET status = 'captured', resolved_at = now() WHERE id = p_hold;
    END IF;
    RETURN v_id;
END $$;

DO $$
DECLARE
    u text := pg_temp.u('old');
    v_id bigint;
    v_hold uuid;
    v_hid bigint;
    r billing.api_result;
    b jsonb;
BEGIN
    PERFORM pg_temp.fund(u, 1000000);
    v_id := pg_temp.old_entry(u, 'gpt-4o', 1000, 500, 'before-010', NULL);
    ASSERT (SELECT request_fingerprint FROM billing.ledger_entries WHERE id = v_id) ~ '^[0-9a-f]{64}$';

    r := billing.api_reconcile(u, 'gpt-4o', 1000, 500, 'before-010', NULL);
    ASSERT r.status = 201 AND r.meta = 'replayed', format('%s', r);
    b := r.body::jsonb;
    ASSERT b = jsonb_build_object('entryId', v_id::text, 'userId', u, 'model', 'gpt-4o',
                                  'inputTokens', 1000, 'outputTokens', 500, 'chargedMicros', 7500,
                                  'balanceMicros', 1000000 - 7500, 'replayed', true), b::text;
    -- every field counts
    FOREACH r IN ARRAY ARRAY[
            billing.api_reconcile(u, 'gpt-4o', 1000, 501, 'before-010', NULL),
            billing.api_reconcile(u, 'gpt-4o', 1001, 500, 'before-010', NULL),
            billing.api_reconcile(u, 'gpt-4o-mini', 1000, 500, 'before-010', NULL),
            billing.api_reconcile(u, 'gpt-4o', 1000, 500, 'before-010', gen_random_uuid())] LOOP
        ASSERT r.status = 409 AND r.code = 'idempotency_key_reused', format('%s', r);
    END LOOP;

    -- with a hold: the same hold is a replay, none or another is 409
    v_hold := ((billing.api_hold_create(u, 10000, 'h-old', 600)).body::jsonb ->> 'holdId')::uuid;
    v_hid := pg_temp.old_entry(u, 'gpt-4o-mini', 100, 10, 'before-010-hold', v_hold);
    r := billing.api_reconcile(u, 'gpt-4o-mini', 100, 10, 'before-010-hold', v_hold);
    ASSERT r.status = 201 AND r.meta = 'replayed' AND r.body::jsonb ->> 'entryId' = v_hid::text,
        format('%s', r);
    r := billing.api_reconcile(u, 'gpt-4o-mini', 100, 10, 'before-010-hold', NULL);
    ASSERT r.status = 409 AND r.code = 'idempotency_key_reused', format('%s', r);

    ASSERT pg_temp.entries(u) = 3, 'retries wrote nothing';
    ASSERT pg_temp.balance(u) = 1000000 - 7500 - 21;
    PERFORM pg_temp.assert_healthy();
END $$;

-- New usage entries have no fingerprint; their retries are compared the same way.
DO $$
DECLARE
    u text := pg_temp.u('new');
    r billing.api_result;
BEGIN
    PERFORM pg_temp.fund(u, 1000000);
    r := billing.api_reconcile(u, 'gpt-4o', 1000, 500, 'after-010', NULL);
    ASSERT r.status = 201 AND r.meta IS NULL, format('%s', r);
    ASSERT (SELECT request_fingerprint IS NULL FROM billing.ledger_entries
             WHERE user_id = u AND idempotency_key = 'after-010');
    ASSERT (billing.api_reconcile(u, 'gpt-4o', 1000, 500, 'after-010', NULL)).meta = 'replayed';
    ASSERT (billing.api_reconcile(u, 'gpt-4o', 1000, 499, 'after-010', NULL)).status = 409;
END $$;

-- The table refuses what the key rule refuses, whoever writes (here the
-- owner, directly): ledger_usage_shape as 010 wrote it.
DO $$
DECLARE
    u text := pg_temp.u('shape');
    k text;
    v_ok boolean;
    v_price bigint := (SELECT id FROM billing.model_prices WHERE model = 'gpt-4o' ORDER BY effective_from DESC
                        LIMIT 1);
BEGIN
    PERFORM pg_temp.fund(u, 1000000);
    FOREACH k IN ARRAY ARRAY['', 'a b', 'clé', repeat('k', 256), E'a\tb', 'é', E'\u00a0'] LOOP
        v_ok := false;
        BEGIN
            INSERT INTO billing.ledger_entries (user_id, type, amount_micros, balance_after_micros,
                                                idempotency_key, price_id, model, input_tokens, output_tokens)
            VALUES (u, 'usage', 0, 1000000, k, v_price, 'gpt-4o', 0, 0);
        EXCEPTION WHEN check_violation THEN
            v_ok := SQLERRM LIKE '%ledger_usage_shape%';
        END;
        ASSERT v_ok, format('key %L must be refused by ledger_usage_shape', k);
    END LOOP;
    -- the edges that pass
    INSERT INTO billing.ledger_entries (user_id, type, amount_micros, balance_after_micros, idempotency_key,
                                        price_id, model, input_tokens, output_tokens)
    VALUES (u, 'usage', 0, 1000000, repeat('~', 255), v_price, 'gpt-4o', 0, 0),
           (u, 'usage', 0, 1000000, '!', v_price, 'gpt-4o', 0, 0);
    ASSERT pg_temp.entries(u) = 3;
    PERFORM pg_temp.assert_healthy();
END $$;
