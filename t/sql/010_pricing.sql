-- Pricing: every seeded model, spec examples, exact ceil, ranges, overflow,
-- unknown model, versioned prices.
\set test_name pricing
\ir lib/setup.psql

-- Seeds are exactly docs/spec.md §2.
DO $$
DECLARE
    v jsonb;
BEGIN
    ASSERT (SELECT count(*) FROM billing.model_prices
             WHERE effective_from = '2024-01-01T00:00:00Z'
               AND (model, input_micros_per_mtok, output_micros_per_mtok) IN (
                   ('gpt-4o', 2500000, 10000000), ('gpt-4o-mini', 150000, 600000),
                   ('gpt-4.1', 2000000, 8000000), ('gpt-4.1-mini', 400000, 1600000),
                   ('o3-mini', 1100000, 4400000), ('claude-3-5-sonnet', 3000000, 15000000),
                   ('claude-3-5-haiku', 800000, 4000000))) = 7, 'seeded model prices';
    SELECT body::jsonb INTO v FROM billing.api_packages();
    ASSERT v = '{"packages":[
        {"code":"starter","name":"Starter","priceCents":500,"currency":"usd","creditsMicros":5000000},
        {"code":"standard","name":"Standard","priceCents":2000,"currency":"usd","creditsMicros":21000000},
        {"code":"pro","name":"Pro","priceCents":5000,"currency":"usd","creditsMicros":55000000}]}'::jsonb,
        format('api_packages body %s', v);
    ASSERT (SELECT status FROM billing.api_packages()) = 200;
END $$;

-- Pure charge function.
DO $$
BEGIN
    ASSERT billing._charge(1000, 500, 2500000, 10000000) = 7500;
    ASSERT billing._charge(0, 0, 2500000, 10000000) = 0;
    ASSERT billing._charge(1000000000, 1000000000, 3000000, 15000000) = 18000000000;
    ASSERT billing._charge(1, 0, 150000, 600000) = 1;
    ASSERT billing._charge(0, 1, 150000, 600000) = 1;
    ASSERT billing._charge(2, 0, 2500000, 10000000) = 5;        -- exact: no rounding up
    ASSERT billing._charge(1, 0, 2500000, 10000000) = 3;        -- 2.5 -> 3
    ASSERT billing._charge(1000000, 0, 1000000, 0) = 1000000;   -- exact
    ASSERT billing._charge(1000001, 0, 1000000, 0) = 1000001;
    ASSERT billing._charge(1000000000, 0, 9223372036854, 0) IS NULL, 'overflow detected';
    ASSERT billing._charge(1000000000, 1000000000, 4611686019, 4611686019) IS NULL, 'overflow on sum';
    ASSERT billing._charge(1000000000, 1000000000, 4611686018, 4611686018) IS NOT NULL;
END $$;

-- Every seeded model through api_reconcile, against an independent numeric computation.
DO $$
DECLARE
    u text := pg_temp.u('models');
    p record;
    r billing.api_result;
    b jsonb;
    v_expected bigint;
    v_bal bigint;
    i int := 0;
    v_in bigint;
    v_out bigint;
BEGIN
    PERFORM pg_temp.fund(u, 100000000000);
    FOR p IN SELECT * FROM billing.model_prices WHERE effective_from = '2024-01-01T00:00:00Z'
                AND model IN ('gpt-4o','gpt-4o-mini','gpt-4.1','gpt-4.1-mini','o3-mini',
                              'claude-3-5-sonnet','claude-3-5-haiku') ORDER BY model LOOP
        FOREACH v_in IN ARRAY ARRAY[0, 1, 999, 1234567, 1000000000] LOOP
            i := i + 1;
            v_out := (v_in * 7 + 3) % 1000000001;
            v_expected := ceil((v_in::numeric * p.input_micros_per_mtok
                                + v_out::numeric * p.output_micros_per_mtok) / 1000000);
            v_bal := pg_temp.balance(u);
            r := billing.api_reconcile(u, p.model, v_in, v_out, 'k-' || i, NULL);
            ASSERT r.status = 201 AND r.code IS NULL AND r.meta IS NULL, format('%s: %s', p.model, r);
            b := r.body::jsonb;
            ASSERT (b ->> 'chargedMicros')::bigint = v_expected,
                format('%s %s/%s charged %s expected %s', p.model, v_in, v_out, b ->> 'chargedMicros', v_expected);
            ASSERT (b ->> 'balanceMicros')::bigint = v_bal - v_expected;
            ASSERT pg_temp.balance(u) = v_bal - v_expected;
            ASSERT (SELECT price_id FROM billing.ledger_entries
                     WHERE user_id = u AND idempotency_key = 'k-' || i) = p.id;
        END LOOP;
    END LOOP;
    ASSERT i = 35, format('tested %s reconciles', i);
END $$;

-- spec examples through the API.
DO $$
DECLARE
    u text := pg_temp.u('examples');
    r billing.api_result;
    b jsonb;
BEGIN
    PERFORM pg_temp.fund(u, 20000000000);
    r := billing.api_reconcile(u, 'gpt-4o', 1000, 500, 'ex-1', NULL);
    b := r.body::jsonb;
    ASSERT r.status = 201, format('%s', r);
    ASSERT b = jsonb_build_object('entryId', b ->> 'entryId', 'userId', u, 'model', 'gpt-4o',
                                  'inputTokens', 1000, 'outputTokens', 500, 'chargedMicros', 7500,
                                  'balanceMicros', 20000000000 - 7500, 'replayed', false), b::text;
    ASSERT (b ->> 'entryId') ~ '^[0-9]+$';
    ASSERT jsonb_typeof(b -> 'entryId') = 'string';

    r := billing.api_reconcile(u, 'gpt-4o', 0, 0, 'ex-2', NULL);
    ASSERT r.status = 201 AND (r.body::jsonb ->> 'chargedMicros')::bigint = 0, format('%s', r);

    r := billing.api_reconcile(u, 'claude-3-5-sonnet', 1000000000, 1000000000, 'ex-3', NULL);
    ASSERT r.status = 201 AND (r.body::jsonb ->> 'chargedMicros')::bigint = 18000000000, format('%s', r);
    ASSERT (r.body::jsonb ->> 'balanceMicros')::bigint = 20000000000 - 7500 - 18000000000;

    r := billing.api_reconcile(u, 'gpt-4o-mini', 1, 0, 'ex-4', NULL);
    ASSERT r.status = 201 AND (r.body::jsonb ->> 'chargedMicros')::bigint = 1, format('%s', r);
    r := billing.api_reconcile(u, 'gpt-4o-mini', 0, 1, 'ex-5', NULL);
    ASSERT r.status = 201 AND (r.body::jsonb ->> 'chargedMicros')::bigint = 1, format('%s', r);
    r := billing.api_reconcile(u, 'gpt-4o', 1, 0, 'ex-6', NULL);
    ASSERT r.status = 201 AND (r.body::jsonb ->> 'chargedMicros')::bigint = 3, format('%s', r);
    ASSERT pg_temp.balance(u) = 20000000000 - 7500 - 18000000000 - 1 - 1 - 3;
END $$;

-- Validation (400), unknown model (422); nothing written, no account created.
DO $$
DECLARE
    u text := pg_temp.u('invalid');
    r billing.api_result;
BEGIN
    r := billing.api_reconcile(u, 'gpt-4o', -1, 0, 'v-1', NULL);
    ASSERT r.status = 400 AND r.code = 'invalid_request', format('%s', r);
    r := billing.api_reconcile(u, 'gpt-4o', 0, 1000000001, 'v-1', NULL);
    ASSERT r.status = 400 AND r.code = 'invalid_request', format('%s', r);
    r := billing.api_reconcile(u, 'gpt-4o', NULL, 0, 'v-1', NULL);
    ASSERT r.status = 400 AND r.code = 'invalid_request', format('%s', r);
    r := billing.api_reconcile(u, 'gpt-4o', 1, 0, 'has space', NULL);
    ASSERT r.status = 400 AND r.code = 'invalid_request', format('%s', r);
    r := billing.api_reconcile(u, 'gpt-4o', 1, 0, '', NULL);
    ASSERT r.status = 400 AND r.code = 'invalid_request', format('%s', r);
    r := billing.api_reconcile(u, 'gpt-4o', 1, 0, repeat('k', 256), NULL);
    ASSERT r.status = 400 AND r.code = 'invalid_request', format('%s', r);
    r := billing.api_reconcile(u, 'gpt-4o', 1, 0, E'tab\tkey', NULL);
    ASSERT r.status = 400 AND r.code = 'invalid_request', format('%s', r);
    r := billing.api_reconcile(u, 'gpt-4o', 1, 0, 'caf' || chr(233), NULL);
    ASSERT r.status = 400 AND r.code = 'invalid_request', format('%s', r);
    r := billing.api_reconcile(NULL, 'gpt-4o', 1, 0, 'v-1', NULL);
    ASSERT r.status = 400 AND r.code = 'invalid_request', format('%s', r);
    r := billing.api_reconcile('', 'gpt-4o', 1, 0, 'v-1', NULL);
    ASSERT r.status = 400 AND r.code = 'invalid_request', format('%s', r);
    r := billing.api_reconcile(u, NULL, 1, 0, 'v-1', NULL);
    ASSERT r.status = 400 AND r.code = 'invalid_request', format('%s', r);
    r := billing.api_reconcile(u, 'gpt-5-imaginary', 1, 0, 'v-1', NULL);
    ASSERT r.status = 422 AND r.code = 'unknown_model', format('%s', r);
    -- a 255-character key of every printable character class is fine; usage
    -- needs a positive balance, even a free one (docs/spec.md §3.5)
    r := billing.api_reconcile(u, 'gpt-4o', 0, 0, repeat('!~', 127) || 'z', NULL);
    ASSERT r.status = 402 AND r.code = 'insufficient_credits', format('%s', r);
    ASSERT pg_temp.entries(u) = 0;
    PERFORM pg_temp.fund(u, 1);
    r := billing.api_reconcile(u, 'gpt-4o', 0, 0, repeat('!~', 127) || 'z', NULL);
    ASSERT r.status = 201, format('%s', r);
    ASSERT pg_temp.entries(u) = 2;
END $$;

-- Unknown model on an existing account; overflow is 400.
DO $$
DECLARE
    u text := pg_temp.u('overflow');
    m text := pg_temp.u('huge-model');
    r billing.api_result;
BEGIN
    PERFORM pg_temp.fund(u, 1000000);
    r := billing.api_reconcile(u, 'no-such-model', 1, 0, 'o-1', NULL);
    ASSERT r.status = 422 AND r.code = 'unknown_model', format('%s', r);
    INSERT INTO billing.model_prices (model, input_micros_per_mtok, output_micros_per_mtok, effective_from)
    VALUES (m, 9000000000000, 9000000000000, '2024-01-01T00:00:00Z');
    r := billing.api_reconcile(u, m, 1000000000, 1000000000, 'o-2', NULL);
    ASSERT r.status = 400 AND r.code = 'invalid_request', format('%s', r);
    ASSERT pg_temp.entries(u) = 1 AND pg_temp.balance(u) = 1000000;
END $$;

-- Versioned prices: a new row (effective in the past) is used by later
-- reconciles; older entries keep their price_id; a future row is not used yet.
SELECT pg_temp.u('versioned-model') AS vmodel \gset
INSERT INTO billing.model_prices (model, input_micros_per_mtok, output_micros_per_mtok, effective_from)
VALUES (:'vmodel', 1000000, 2000000, '2024-01-01T00:00:00Z');

DO $$
DECLARE
    u text := pg_temp.u('versioned');
    m text := pg_temp.u('versioned-model');
    r billing.api_result;
BEGIN
    PERFORM pg_temp.fund(u, 100000000);
    r := billing.api_reconcile(u, m, 1000, 1000, 'p-1', NULL);
    ASSERT r.status = 201 AND (r.body::jsonb ->> 'chargedMicros')::bigint = 3000, format('%s', r);
END $$;

INSERT INTO billing.model_prices (model, input_micros_per_mtok, output_micros_per_mtok, effective_from)
VALUES (:'vmodel', 5000000, 7000000, clock_timestamp() - interval '1 millisecond'),
       (:'vmodel', 9000000, 9000000, now() + interval '1 day');

DO $$
DECLARE
    u text := pg_temp.u('versioned');
    m text := pg_temp.u('versioned-model');
    r billing.api_result;
    v_old bigint;
    v_new bigint;
BEGIN
    SELECT id INTO v_old FROM billing.model_prices WHERE model = m AND effective_from = '2024-01-01T00:00:00Z';
    SELECT id INTO v_new FROM billing.model_prices WHERE model = m
       AND effective_from > '2024-01-01T00:00:00Z' AND effective_from <= now();
    r := billing.api_reconcile(u, m, 1000, 1000, 'p-2', NULL);
    ASSERT r.status = 201 AND (r.body::jsonb ->> 'chargedMicros')::bigint = 12000, format('%s', r);
    ASSERT (SELECT price_id FROM billing.ledger_entries WHERE user_id = u AND idempotency_key = 'p-1') = v_old;
    ASSERT (SELECT price_id FROM billing.ledger_entries WHERE user_id = u AND idempotency_key = 'p-2') = v_new;
    -- a replay of the old key still answers with the old charge
    r := billing.api_reconcile(u, m, 1000, 1000, 'p-1', NULL);
    ASSERT r.status = 201 AND r.meta = 'replayed' AND (r.body::jsonb ->> 'chargedMicros')::bigint = 3000,
        format('%s', r);
    -- price rows are immutable
    BEGIN
        UPDATE billing.model_prices SET input_micros_per_mtok = 1 WHERE id = v_old;
        RAISE EXCEPTION 'model_prices UPDATE was not rejected';
    EXCEPTION WHEN insufficient_privilege THEN
        NULL;
    END;
END $$;

DO $$ BEGIN PERFORM pg_temp.assert_healthy(); END $$;
\echo ok 010_pricing
