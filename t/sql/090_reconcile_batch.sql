-- Group commit: api_reconcile_batch answers every item as api_reconcile
-- would alone, in user-id order (bytewise) and, per user, in arrival order.
\set test_name reconcile_batch
\ir lib/setup.psql

-- Order: user-id order, bytewise ('Z' < 'a'), arrival order within a user;
-- the rows come in that order, each with its item's ordinal.
DO $$
DECLARE
    a text := pg_temp.u('a');
    z text := pg_temp.u('Z');
    v_ord int[];
    v_first bigint;
    v_last bigint;
BEGIN
    PERFORM pg_temp.fund(a, 1000000);
    PERFORM pg_temp.fund(z, 1000000);
    SELECT array_agg(ordinal) INTO v_ord
      FROM billing.api_reconcile_batch(ARRAY[a, z, a, z], ARRAY['gpt-4o', 'gpt-4o', 'gpt-4o', 'gpt-4o'],
                                       ARRAY[1000, 1000, 1000, 1000]::bigint[], ARRAY[500, 500, 500, 500]::bigint[],
                                       ARRAY['k-1', 'k-1', 'k-2', 'k-2'], ARRAY[NULL, NULL, NULL, NULL]::uuid[]);
    ASSERT v_ord = ARRAY[2, 4, 1, 3], format('processed in order %s', v_ord);
    -- the entries were written in that order too
    SELECT max(id) INTO v_first FROM billing.ledger_entries WHERE user_id = z AND type = 'usage';
    SELECT min(id) INTO v_last FROM billing.ledger_entries WHERE user_id = a AND type = 'usage';
    ASSERT v_first < v_last, 'Z''s entries before a''s';
    ASSERT (SELECT balance_after_micros FROM billing.ledger_entries
             WHERE user_id = a AND idempotency_key = 'k-2') = 1000000 - 15000, 'k-2 after k-1';
END $$;

-- Duplicates in one batch behave as sequential requests: the same key and
-- body is a replay of the entry the earlier item wrote, another body 409;
-- a 402, a 422 and a 400 touch only their item, whatever their place.
DO $$
DECLARE
    u text := pg_temp.u('dup');
    v record;
    v_rows jsonb := '{}';
BEGIN
    PERFORM pg_temp.fund(u, 10000);     -- one gpt-4o 1000/500 charge (7500)
    FOR v IN SELECT * FROM billing.api_reconcile_batch(
                 ARRAY[u, u, u, u, u, NULL],
                 ARRAY['nope', 'gpt-4o', 'gpt-4o', 'gpt-4o', 'gpt-4o', 'gpt-4o'],
                 ARRAY[1, 1000, 1000, 1000, 1000, 1]::bigint[], ARRAY[1, 500, 500, 501, 500, 1]::bigint[],
                 ARRAY['m', 'k', 'k', 'k', 'k2', 'n'], ARRAY[NULL, NULL, NULL, NULL, NULL, NULL]::uuid[])
    LOOP
        v_rows := v_rows || jsonb_build_object(v.ordinal::text,
                                               jsonb_build_array(v.status, v.code, v.meta));
    END LOOP;
    ASSERT v_rows = jsonb_build_object(
        '1', jsonb_build_array(422, 'unknown_model', NULL),
        '2', jsonb_build_array(201, NULL, NULL),
        '3', jsonb_build_array(201, NULL, 'replayed'),
        '4', jsonb_build_array(409, 'idempotency_key_reused', NULL),
        '5', jsonb_build_array(402, 'insufficient_credits', NULL),
        '6', jsonb_build_array(400, 'invalid_request', NULL)), format('%s', v_rows);
    ASSERT pg_temp.balance(u) = 2500;
    ASSERT pg_temp.entries(u) = 2;      -- purchase + one usage
END $$;

-- The answers are api_reconcile's own: a batch of one equals the single call.
DO $$
DECLARE
    u text := pg_temp.u('same');
    b billing.api_result;
    s billing.api_result;
BEGIN
    PERFORM pg_temp.fund(u, 1000000);
    SELECT status, code, body, meta INTO b
      FROM billing.api_reconcile_batch(ARRAY[u], ARRAY['gpt-4o'], ARRAY[1000]::bigint[], ARRAY[500]::bigint[],
                                       ARRAY['k'], ARRAY[NULL]::uuid[]);
    s := billing.api_reconcile(u, 'gpt-4o', 1000, 500, 'k', NULL);
    ASSERT b.status = 201 AND s.status = 201 AND s.meta = 'replayed', format('%s / %s', b, s);
    ASSERT s.body::jsonb = b.body::jsonb || '{"replayed": true}', format('%s / %s', b, s);
END $$;

-- The set-based common path and api_reconcile agree on every kind of item.
-- Twin users: each case runs once in a batch (every user once, so every
-- item is a candidate for the set-based statement) and once as a single
-- call; answers, balances, entries and balance.low events must match.
DO $$
DECLARE
    -- case: (fund micros, hold micros (0: none), prior charge's input tokens
    -- (0: none), model, input, output, key, name the hold)
    c record;
    v_b text[] := '{}'; v_s text[] := '{}';
    v_m text[] := '{}'; v_in bigint[] := '{}'; v_out bigint[] := '{}'; v_k text[] := '{}';
    v_hb uuid[] := '{}'; v_hs uuid[] := '{}';
    v_h uuid;
    v_r billing.api_result;
    v_rows jsonb := '{}';
    v record;
    i int := 0;
BEGIN
    FOR c IN SELECT * FROM (VALUES
        ('ok',      2000000::bigint, 0::bigint, 0::bigint, 'gpt-4o', 1000::bigint, 500::bigint, 'k', false),
        ('low',     1005000, 0, 0, 'gpt-4o', 1000, 500, 'k', false),     -- crosses balance.low
        ('zero',    100,     0, 0, 'gpt-4o', 0, 0, 'k', false),          -- a free usage
        ('exact',   7500,    0, 0, 'gpt-4o', 1000, 500, 'k', false),     -- available to the micro
        ('held',    10000,   5000, 0, 'gpt-4o', 1000, 500, 'k', false),  -- 402: a hold counts
        ('replay',  1000000, 0, 1000, 'gpt-4o', 1000, 500, 'k', false),  -- 201 replayed
        ('reuse',   1000000, 0, 999, 'gpt-4o', 1000, 500, 'k', false),   -- 409
        ('noacct',  0,       0, 0, 'gpt-4o', 1000, 500, 'k', false),     -- 402: no account
        ('model',   1000000, 0, 0, 'no-such-model', 1000, 500, 'k', false), -- 422
        ('key',     1000000, 0, 0, 'gpt-4o', 1000, 500, 'a b', false),   -- 400
        ('tokens',  1000000, 0, 0, 'gpt-4o', -1, 500, 'k', false),       -- 400
        ('capture', 100000,  50000, 0, 'gpt-4o', 1000, 500, 'k', true)   -- a named hold
    ) AS t(name, fund, hold, prior, model, inp, outp, k, named)
    LOOP
        i := i + 1;
        v_b := v_b || pg_temp.u('twin-b-' || c.name);
        v_s := v_s || pg_temp.u('twin-s-' || c.name);
        FOR v IN SELECT * FROM unnest(ARRAY[v_b[i], v_s[i]]) AS w(u) LOOP
            IF c.fund > 0 THEN
                PERFORM pg_temp.fund(v.u, c.fund);
            END IF;
            v_h := NULL;
            IF c.hold > 0 THEN
                v_r := billing.api_hold_create(v.u, c.hold, 'h', 600);
                ASSERT v_r.status = 201, format('hold: %s', v_r);
                v_h := (v_r.body::jsonb ->> 'holdId')::uuid;
            END IF;
            IF c.prior > 0 THEN
                v_r := billing.api_reconcile(v.u, 'gpt-4o', c.prior, 500, 'k', NULL);
                ASSERT v_r.status = 201, format('prior: %s', v_r);
            END IF;
            IF v.u = v_b[i] THEN
                v_hb := v_hb || CASE WHEN c.named THEN v_h END;
            ELSE
                v_hs := v_hs || CASE WHEN c.named THEN v_h END;
            END IF;
        END LOOP;
        v_m := v_m || c.model::text; v_in := v_in || c.inp; v_out := v_out || c.outp; v_k := v_k || c.k::text;
    END LOOP;

    FOR v IN SELECT * FROM billing.api_reconcile_batch(v_b, v_m, v_in, v_out, v_k, v_hb) LOOP
        v_rows := v_rows || jsonb_build_object(v.ordinal::text, jsonb_build_array(v.status, v.code, v.meta,
                                               CASE WHEN v.status = 201 THEN v.body::jsonb - 'entryId' - 'userId'
                                                    ELSE to_jsonb(v.body) END));
    END LOOP;
    FOR i IN 1 .. cardinality(v_s) LOOP
        v_r := billing.api_reconcile(v_s[i], v_m[i], v_in[i], v_out[i], v_k[i], v_hs[i]);
        ASSERT v_rows -> i::text = jsonb_build_array(v_r.status, v_r.code, v_r.meta,
                                                     CASE WHEN v_r.status = 201 THEN v_r.body::jsonb - 'entryId' - 'userId'
                                                          ELSE to_jsonb(v_r.body) END),
               format('item %s: batch %s, alone %s', i, v_rows -> i::text, v_r);
        ASSERT pg_temp.balance(v_b[i]) = pg_temp.balance(v_s[i]), format('item %s: balance', i);
        ASSERT pg_temp.entries(v_b[i]) = pg_temp.entries(v_s[i]), format('item %s: entries', i);
        ASSERT (SELECT count(*) FROM billing.outbox WHERE payload -> 'data' ->> 'userId' = v_b[i])
             = (SELECT count(*) FROM billing.outbox WHERE payload -> 'data' ->> 'userId' = v_s[i]),
               format('item %s: outbox', i);
        ASSERT (SELECT array_agg(status ORDER BY created_at) FROM billing.holds WHERE user_id = v_b[i])
               IS NOT DISTINCT FROM
               (SELECT array_agg(status ORDER BY created_at) FROM billing.holds WHERE user_id = v_s[i]),
               format('item %s: holds', i);
    END LOOP;
    -- the cases cover what they say
    ASSERT (SELECT array_agg((v_rows -> n::text ->> 0)::int ORDER BY n) FROM generate_series(1, 12) n)
           = ARRAY[201, 201, 201, 201, 402, 201, 409, 402, 422, 400, 400, 201], format('%s', v_rows);
    ASSERT (SELECT count(*) FROM billing.outbox
             WHERE type = 'balance.low' AND payload -> 'data' ->> 'userId' = v_b[2]) = 1, 'balance.low';
    ASSERT pg_temp.balance(v_b[4]) = 0, 'exact: nothing left';
END $$;

-- Arrays of different lengths, or not from 1, are refused as a whole.
DO $$
BEGIN
    BEGIN
        PERFORM billing.api_reconcile_batch(ARRAY['a', 'b'], ARRAY['gpt-4o'], ARRAY[1, 1]::bigint[],
                                            ARRAY[1, 1]::bigint[], ARRAY['k', 'l'], ARRAY[NULL, NULL]::uuid[]);
        ASSERT false, 'lengths differ: refused';
    EXCEPTION WHEN invalid_parameter_value THEN NULL;
    END;
    BEGIN
        PERFORM billing.api_reconcile_batch('[0:0]={a}', '{gpt-4o}', '{1}', '{1}', '{k}', '{NULL}');
        ASSERT false, 'not from 1: refused';
    EXCEPTION WHEN invalid_parameter_value THEN NULL;
    END;
END $$;

-- The runtime role may execute it, and nothing else of it.
DO $$
BEGIN
    ASSERT has_function_privilege('billing_app',
        'billing.api_reconcile_batch(text[], text[], bigint[], bigint[], text[], uuid[])', 'EXECUTE');
    ASSERT NOT has_function_privilege('public',
        'billing.api_reconcile_batch(text[], text[], bigint[], bigint[], text[], uuid[])', 'EXECUTE');
END $$;

-- Holds: the same order and the same duplicate rules (api_hold_create per
-- item): a second hold beyond the available balance is 402, a repeated
-- key a replay, another amount under it 409.
DO $$
DECLARE
    u text := pg_temp.u('holds');
    w text := pg_temp.u('Holds');
    v record;
    v_rows jsonb := '{}';
    v_ord int[] := '{}';
BEGIN
    PERFORM pg_temp.fund(u, 10000);
    PERFORM pg_temp.fund(w, 10000);
    FOR v IN SELECT * FROM billing.api_hold_create_batch(ARRAY[u, w, u, u, u],
                                                         ARRAY[6000, 1, 6000, 6000, 5000]::bigint[],
                                                         ARRAY['h1', 'h1', 'h2', 'h1', 'h1'],
                                                         ARRAY[600, 600, 600, 600, 600])
    LOOP
        v_ord := v_ord || v.ordinal;
        v_rows := v_rows || jsonb_build_object(v.ordinal::text,
                                               jsonb_build_array(v.status, v.code, v.meta));
    END LOOP;
    ASSERT v_ord = ARRAY[2, 1, 3, 4, 5], format('processed in order %s', v_ord);
    ASSERT v_rows = jsonb_build_object(
        '1', jsonb_build_array(201, NULL, NULL),
        '2', jsonb_build_array(201, NULL, NULL),
        '3', jsonb_build_array(402, 'insufficient_credits', NULL),
        '4', jsonb_build_array(201, NULL, 'replayed'),
        '5', jsonb_build_array(409, 'idempotency_key_reused', NULL)), format('%s', v_rows);
    ASSERT (SELECT count(*) FROM billing.holds WHERE user_id = u) = 1;
    ASSERT has_function_privilege('billing_app',
        'billing.api_hold_create_batch(text[], bigint[], text[], int[])', 'EXECUTE');
END $$;

-- Balance reads: api_balance_batch answers each item as api_balance does
-- (funded, with a hold, no account, an invalid id, the same user twice).
DO $$
DECLARE
    f text := pg_temp.u('bal-funded');
    h text := pg_temp.u('bal-held');
    n text := pg_temp.u('bal-none');
    v_users text[];
    v record;
    v_r billing.api_result;
    v_seen int := 0;
BEGIN
    PERFORM pg_temp.fund(f, 20000);
    PERFORM pg_temp.fund(h, 30000);
    PERFORM billing.api_hold_create(h, 5000, 'h', 600);
    v_users := ARRAY[f, h, n, '', f];
    FOR v IN SELECT * FROM billing.api_balance_batch(v_users) LOOP
        v_r := billing.api_balance(v_users[v.ordinal]);
        ASSERT (v.status, v.code, v.body, v.meta) IS NOT DISTINCT FROM (v_r.status, v_r.code, v_r.body, v_r.meta),
               format('item %s: batch %s, alone %s', v.ordinal, v, v_r);
        v_seen := v_seen + 1;
    END LOOP;
    ASSERT v_seen = 5, format('%s rows', v_seen);
    ASSERT (SELECT body::jsonb ->> 'availableMicros' FROM billing.api_balance_batch(ARRAY[h])) = '25000';
    ASSERT has_function_privilege('billing_app', 'billing.api_balance_batch(text[])', 'EXECUTE');
    BEGIN
        PERFORM billing.api_balance_batch('[0:0]={a}');
        ASSERT false, 'not from 1: refused';
    EXCEPTION WHEN invalid_parameter_value THEN NULL;
    END;
END $$;

DO $$ BEGIN PERFORM pg_temp.assert_healthy(); END $$;
\echo ok 090_reconcile_batch
