-- Holds (docs/spec.md §4.3): create, 402, idempotency, capture via reconcile, release,
-- expiry.
\set test_name holds
\ir lib/setup.psql

DO $$
DECLARE
    u text := pg_temp.u('h');
    other text := pg_temp.u('h-other');
    r billing.api_result;
    b jsonb;
    h1 uuid;
    h2 uuid;
    v_expired uuid;
BEGIN
    PERFORM pg_temp.fund(u, 100000);

    -- validation
    ASSERT (billing.api_hold_create(u, 0, 'x', 60)).status = 400;
    ASSERT (billing.api_hold_create(u, 1000000000000001, 'x', 60)).status = 400;
    ASSERT (billing.api_hold_create(u, 1, 'x', 0)).status = 400;
    ASSERT (billing.api_hold_create(u, 1, 'x', 3601)).status = 400;
    ASSERT (billing.api_hold_create(u, 1, 'bad key', 60)).status = 400;
    ASSERT (billing.api_hold_create(NULL, 1, 'x', 60)).status = 400;

    -- 402 when the amount exceeds the available balance; nothing written
    r := billing.api_hold_create(u, 100001, 'too-big', 60);
    ASSERT r.status = 402 AND r.code = 'insufficient_credits', format('%s', r);
    ASSERT NOT EXISTS (SELECT 1 FROM billing.holds WHERE user_id = u);
    r := billing.api_hold_create(pg_temp.u('h-nobody'), 1, 'x', 60);
    ASSERT r.status = 402 AND r.code = 'insufficient_credits', format('%s', r);
    ASSERT NOT EXISTS (SELECT 1 FROM billing.accounts WHERE user_id = pg_temp.u('h-nobody'));

    -- create
    r := billing.api_hold_create(u, 60000, 'hold-1', 600);
    ASSERT r.status = 201 AND r.code IS NULL AND r.meta IS NULL, format('%s', r);
    b := r.body::jsonb;
    h1 := (b ->> 'holdId')::uuid;
    ASSERT b = jsonb_build_object('holdId', h1::text, 'userId', u, 'heldMicros', 60000,
                                  'expiresAt', b ->> 'expiresAt', 'availableMicros', 40000), b::text;
    ASSERT (b ->> 'expiresAt') ~ '^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$', b ->> 'expiresAt';
    ASSERT (b ->> 'expiresAt')::timestamptz BETWEEN now() + interval '599 seconds' AND now() + interval '601 seconds';
    ASSERT (billing.api_balance(u)).body::jsonb = jsonb_build_object(
        'userId', u, 'balanceMicros', 100000, 'heldMicros', 60000, 'availableMicros', 40000);

    -- idempotent: same body -> original body, meta replayed; different -> 409
    r := billing.api_hold_create(u, 60000, 'hold-1', 600);
    ASSERT r.status = 201 AND r.meta = 'replayed' AND r.body::jsonb = b, format('%s', r);
    r := billing.api_hold_create(u, 60001, 'hold-1', 600);
    ASSERT r.status = 409 AND r.code = 'idempotency_key_reused', format('%s', r);
    r := billing.api_hold_create(u, 60000, 'hold-1', 601);
    ASSERT r.status = 409 AND r.code = 'idempotency_key_reused', format('%s', r);
    ASSERT (SELECT count(*) FROM billing.holds WHERE user_id = u) = 1;

    -- a second hold larger than what is left: 402
    r := billing.api_hold_create(u, 40001, 'hold-2', 600);
    ASSERT r.status = 402, format('%s', r);
    -- usage without the hold cannot use the held amount
    r := billing.api_reconcile(u, 'gpt-4o', 16001, 0, 'no-hold', NULL);   -- 40003 > 40000
    ASSERT r.status = 402 AND r.code = 'insufficient_credits', format('%s', r);
    r := billing.api_reconcile(u, 'gpt-4o', 16000, 0, 'no-hold', NULL);   -- 40000
    ASSERT r.status = 201, format('%s', r);
    ASSERT pg_temp.balance(u) = 60000;
    ASSERT ((billing.api_balance(u)).body::jsonb ->> 'availableMicros')::bigint = 0;

    -- capture via reconcile: may use held amount plus the rest (here nothing else)
    r := billing.api_reconcile(u, 'gpt-4o', 24001, 0, 'cap-1', h1);        -- 60003 > 60000
    ASSERT r.status = 402 AND r.code = 'insufficient_credits', format('%s', r);
    ASSERT (SELECT status FROM billing.holds WHERE id = h1) = 'active', 'hold untouched by 402';
    r := billing.api_reconcile(u, 'gpt-4o', 10000, 0, 'cap-1', h1);        -- 25000
    ASSERT r.status = 201 AND r.meta IS NULL, format('%s', r);
    ASSERT (SELECT status FROM billing.holds WHERE id = h1) = 'captured';
    ASSERT (SELECT hold_id FROM billing.ledger_entries WHERE user_id = u AND idempotency_key = 'cap-1') = h1;
    ASSERT (billing.api_balance(u)).body::jsonb = jsonb_build_object(
        'userId', u, 'balanceMicros', 35000, 'heldMicros', 0, 'availableMicros', 35000);
    -- replay of the capture works after the hold is resolved
    r := billing.api_reconcile(u, 'gpt-4o', 10000, 0, 'cap-1', h1);
    ASSERT r.status = 201 AND r.meta = 'replayed', format('%s', r);
    -- a hold is resolved exactly once
    r := billing.api_reconcile(u, 'gpt-4o', 1, 0, 'cap-2', h1);
    ASSERT r.status = 409 AND r.code = 'hold_not_active', format('%s', r);
    r := billing.api_hold_release(h1);
    ASSERT r.status = 409 AND r.code = 'hold_not_active', format('%s', r);

    -- release
    r := billing.api_hold_create(u, 30000, 'hold-3', 60);
    ASSERT r.status = 201, format('%s', r);
    h2 := (r.body::jsonb ->> 'holdId')::uuid;
    ASSERT ((billing.api_balance(u)).body::jsonb ->> 'availableMicros')::bigint = 5000;
    r := billing.api_hold_release(h2);
    ASSERT r.status = 200 AND r.code IS NULL
       AND r.body::jsonb = jsonb_build_object('holdId', h2::text, 'status', 'released'), format('%s', r);
    ASSERT ((billing.api_balance(u)).body::jsonb ->> 'availableMicros')::bigint = 35000;
    r := billing.api_hold_release(h2);
    ASSERT r.status = 409 AND r.code = 'hold_not_active', format('%s', r);
    r := billing.api_reconcile(u, 'gpt-4o', 1, 0, 'rel-1', h2);
    ASSERT r.status = 409 AND r.code = 'hold_not_active', format('%s', r);
    r := billing.api_hold_release(gen_random_uuid());
    ASSERT r.status = 404 AND r.code = 'not_found', format('%s', r);
    ASSERT (billing.api_hold_release(NULL)).status = 400;

    -- a hold of another user / unknown hold: 404 hold_not_found
    PERFORM pg_temp.fund(other, 100000);
    r := billing.api_hold_create(other, 1000, 'other-hold', 60);
    r := billing.api_reconcile(u, 'gpt-4o', 1, 0, 'foreign', (r.body::jsonb ->> 'holdId')::uuid);
    ASSERT r.status = 404 AND r.code = 'hold_not_found', format('%s', r);
    r := billing.api_reconcile(u, 'gpt-4o', 1, 0, 'foreign', gen_random_uuid());
    ASSERT r.status = 404 AND r.code = 'hold_not_found', format('%s', r);
    r := billing.api_reconcile(pg_temp.u('h-nobody'), 'gpt-4o', 0, 0, 'foreign', gen_random_uuid());
    ASSERT r.status = 404 AND r.code = 'hold_not_found', format('%s', r);

    -- expiry: an expired hold no longer counts and cannot be captured or released
    INSERT INTO billing.holds (user_id, amount_micros, idempotency_key, request_fingerprint, expires_at,
                               available_after_micros, created_at)
    VALUES (u, 20000, 'expired-1', 'test', now() - interval '1 second', 15000, now() - interval '10 minutes')
    RETURNING id INTO v_expired;
    ASSERT (billing.api_balance(u)).body::jsonb = jsonb_build_object(
        'userId', u, 'balanceMicros', 35000, 'heldMicros', 0, 'availableMicros', 35000);
    r := billing.api_reconcile(u, 'gpt-4o', 1, 0, 'exp-1', v_expired);
    ASSERT r.status = 409 AND r.code = 'hold_not_active', format('%s', r);
    r := billing.api_hold_release(v_expired);
    ASSERT r.status = 409 AND r.code = 'hold_not_active', format('%s', r);
    r := billing.api_hold_create(u, 35000, 'after-expiry', 60);
    ASSERT r.status = 201 AND (r.body::jsonb ->> 'availableMicros')::bigint = 0, format('%s', r);
    ASSERT pg_temp.balance(u) = 35000;
END $$;

-- Capture may use the held amount plus the rest of the available balance.
DO $$
DECLARE
    u text := pg_temp.u('h2');
    r billing.api_result;
    h uuid;
    h_other uuid;
BEGIN
    PERFORM pg_temp.fund(u, 100000);
    h := ((billing.api_hold_create(u, 10000, 'a', 600)).body::jsonb ->> 'holdId')::uuid;
    h_other := ((billing.api_hold_create(u, 50000, 'b', 600)).body::jsonb ->> 'holdId')::uuid;
    -- available for a capture of h: 100000 - 50000 = 50000
    r := billing.api_reconcile(u, 'gpt-4o', 20001, 0, 'use', h);   -- 50003
    ASSERT r.status = 402, format('%s', r);
    r := billing.api_reconcile(u, 'gpt-4o', 20000, 0, 'use', h);   -- 50000
    ASSERT r.status = 201, format('%s', r);
    ASSERT (billing.api_balance(u)).body::jsonb = jsonb_build_object(
        'userId', u, 'balanceMicros', 50000, 'heldMicros', 50000, 'availableMicros', 0);
    ASSERT (SELECT status FROM billing.holds WHERE id = h_other) = 'active';
END $$;

DO $$ BEGIN PERFORM pg_temp.assert_healthy(); END $$;
\echo ok 030_holds
