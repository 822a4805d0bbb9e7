-- Idempotency (invariant 3) and insufficient credits (invariant 5).
\set test_name idempotency
\ir lib/setup.psql

-- A replay returns the ORIGINAL body (with replayed=true), writes nothing.
DO $$
DECLARE
    u text := pg_temp.u('replay');
    r1 billing.api_result;
    r2 billing.api_result;
    r3 billing.api_result;
    b1 jsonb;
    b2 jsonb;
BEGIN
    PERFORM pg_temp.fund(u, 1000000);
    r1 := billing.api_reconcile(u, 'gpt-4o', 1000, 500, 'order-1', NULL);
    ASSERT r1.status = 201 AND r1.meta IS NULL, format('%s', r1);
    b1 := r1.body::jsonb;
    ASSERT (b1 ->> 'replayed')::boolean = false;

    -- another charge moves the balance; the replay must still show the original balance
    r3 := billing.api_reconcile(u, 'gpt-4o', 100, 0, 'order-2', NULL);
    ASSERT r3.status = 201, format('%s', r3);

    r2 := billing.api_reconcile(u, 'gpt-4o', 1000, 500, 'order-1', NULL);
    ASSERT r2.status = 201 AND r2.code IS NULL AND r2.meta = 'replayed', format('%s', r2);
    b2 := r2.body::jsonb;
    ASSERT b2 = b1 || '{"replayed": true}'::jsonb, format('%s vs %s', b2, b1);
    ASSERT (b2 ->> 'balanceMicros')::bigint = 1000000 - 7500;
    ASSERT pg_temp.entries(u) = 3;            -- purchase + 2 usage
    ASSERT pg_temp.balance(u) = 1000000 - 7500 - 250;

    -- replay again, identical
    ASSERT (billing.api_reconcile(u, 'gpt-4o', 1000, 500, 'order-1', NULL)).body::jsonb = b2;
END $$;

-- Same key, different body -> 409, nothing written. Keys are scoped per user.
DO $$
DECLARE
    u text := pg_temp.u('conflict');
    u2 text := pg_temp.u('conflict-other');
    r billing.api_result;
    v_hold uuid;
BEGIN
    PERFORM pg_temp.fund(u, 1000000);
    PERFORM pg_temp.fund(u2, 1000000);
    r := billing.api_reconcile(u, 'gpt-4o', 1000, 500, 'dup', NULL);
    ASSERT r.status = 201, format('%s', r);

    r := billing.api_reconcile(u, 'gpt-4o', 1000, 501, 'dup', NULL);
    ASSERT r.status = 409 AND r.code = 'idempotency_key_reused', format('%s', r);
    r := billing.api_reconcile(u, 'gpt-4o', 1001, 500, 'dup', NULL);
    ASSERT r.status = 409 AND r.code = 'idempotency_key_reused', format('%s', r);
    r := billing.api_reconcile(u, 'gpt-4o-mini', 1000, 500, 'dup', NULL);
    ASSERT r.status = 409 AND r.code = 'idempotency_key_reused', format('%s', r);
    r := billing.api_reconcile(u, 'no-such-model', 1000, 500, 'dup', NULL);
    ASSERT r.status = 409 AND r.code = 'idempotency_key_reused', format('%s', r);
    v_hold := ((billing.api_hold_create(u, 10000, 'h-dup', 600)).body::jsonb ->> 'holdId')::uuid;
    r := billing.api_reconcile(u, 'gpt-4o', 1000, 500, 'dup', v_hold);
    ASSERT r.status = 409 AND r.code = 'idempotency_key_reused', format('%s', r);
    ASSERT (SELECT status FROM billing.holds WHERE id = v_hold) = 'active';
    ASSERT pg_temp.entries(u) = 2 AND pg_temp.balance(u) = 1000000 - 7500;

    -- the same key for another user is a different charge
    r := billing.api_reconcile(u2, 'gpt-4o', 1000, 501, 'dup', NULL);
    ASSERT r.status = 201 AND r.meta IS NULL, format('%s', r);
    ASSERT pg_temp.balance(u2) = 1000000 - 7510;
END $$;

-- 402 writes nothing; the same key succeeds after a top-up.
DO $$
DECLARE
    u text := pg_temp.u('poor');
    nobody text := pg_temp.u('nobody');
    r billing.api_result;
    v_outbox bigint;
BEGIN
    -- unknown user: 402, no account row, no ledger row
    r := billing.api_reconcile(nobody, 'gpt-4o', 1000, 500, 'k', NULL);
    ASSERT r.status = 402 AND r.code = 'insufficient_credits', format('%s', r);
    ASSERT NOT EXISTS (SELECT 1 FROM billing.accounts WHERE user_id = nobody);
    ASSERT pg_temp.entries(nobody) = 0;
    r := billing.api_balance(nobody);
    ASSERT r.status = 200 AND r.body::jsonb = jsonb_build_object(
        'userId', nobody, 'balanceMicros', 0, 'heldMicros', 0, 'availableMicros', 0), format('%s', r);
    ASSERT NOT EXISTS (SELECT 1 FROM billing.accounts WHERE user_id = nobody);

    PERFORM pg_temp.fund(u, 7499);
    SELECT count(*) INTO v_outbox FROM billing.outbox;
    r := billing.api_reconcile(u, 'gpt-4o', 1000, 500, 'retry-me', NULL);
    ASSERT r.status = 402 AND r.code = 'insufficient_credits', format('%s', r);
    ASSERT pg_temp.entries(u) = 1 AND pg_temp.balance(u) = 7499;
    ASSERT (SELECT count(*) FROM billing.outbox) = v_outbox, 'no outbox row on 402';

    -- exactly the balance is fine
    PERFORM pg_temp.fund(u, 1);
    r := billing.api_reconcile(u, 'gpt-4o', 1000, 500, 'retry-me', NULL);
    ASSERT r.status = 201 AND r.meta IS NULL, format('%s', r);
    ASSERT pg_temp.balance(u) = 0;
    ASSERT (r.body::jsonb ->> 'balanceMicros')::bigint = 0;

    -- zero balance: no usage at all, not even zero tokens (docs/spec.md §3.5)
    r := billing.api_reconcile(u, 'gpt-4o', 0, 0, 'zero', NULL);
    ASSERT r.status = 402 AND r.code = 'insufficient_credits', format('%s', r);
    r := billing.api_reconcile(u, 'gpt-4o-mini', 1, 0, 'one', NULL);
    ASSERT r.status = 402, format('%s', r);
    ASSERT pg_temp.balance(u) = 0;
END $$;

-- A usage key can never collide with the system keys of purchases/refunds.
DO $$
DECLARE
    u text := pg_temp.u('keys');
    v_pid uuid;
    r billing.api_result;
BEGIN
    PERFORM pg_temp.fund(u, 1);     -- usage needs a positive balance
    INSERT INTO billing.purchases (user_id, package_code, amount_cents, credits_micros)
    VALUES (u, 'starter', 500, 5000000) RETURNING id INTO v_pid;
    r := billing.api_reconcile(u, 'gpt-4o', 0, 0, 'purchase:' || v_pid, NULL);
    ASSERT r.status = 201, format('%s', r);
    r := billing.api_stripe_event(pg_temp.evt('keys-1', 'payment_intent.succeeded',
            jsonb_build_object('id', 'pi_keys_' || v_pid, 'metadata', jsonb_build_object('purchase_id', v_pid))));
    ASSERT r.status = 200 AND r.meta = 'processed', format('%s', r);
    ASSERT pg_temp.balance(u) = 5000001;
END $$;

-- balance.low is emitted when a charge crosses the threshold (default 1,000,000).
DO $$
DECLARE
    u text := pg_temp.u('low');
    r billing.api_result;
BEGIN
    PERFORM pg_temp.fund(u, 1005000);
    r := billing.api_reconcile(u, 'gpt-4o', 1000, 0, 'low-1', NULL);   -- 2500 -> 1002500, still above
    ASSERT r.status = 201;
    ASSERT NOT EXISTS (SELECT 1 FROM billing.outbox WHERE type = 'balance.low' AND payload -> 'data' ->> 'userId' = u);
    r := billing.api_reconcile(u, 'gpt-4o', 2000, 0, 'low-2', NULL);   -- 5000 -> 997500, crosses
    ASSERT r.status = 201;
    r := billing.api_reconcile(u, 'gpt-4o', 1000, 0, 'low-3', NULL);   -- below already: no second event
    ASSERT r.status = 201;
    ASSERT (SELECT count(*) FROM billing.outbox
             WHERE type = 'balance.low' AND payload -> 'data' ->> 'userId' = u) = 1;
    ASSERT (SELECT payload -> 'data' FROM billing.outbox
             WHERE type = 'balance.low' AND payload -> 'data' ->> 'userId' = u)
           = jsonb_build_object('userId', u, 'balanceMicros', 997500, 'thresholdMicros', 1000000);
END $$;

DO $$ BEGIN PERFORM pg_temp.assert_healthy(); END $$;
\echo ok 020_idempotency
