-- GET /api/ledger and /api/balance shapes, pagination and cursors.
\set test_name ledger
\ir lib/setup.psql

DO $$
DECLARE
    u text := pg_temp.u('l');
    r billing.api_result;
    b jsonb;
    pid uuid;
    i int;
    v_ids bigint[];
    v_seen bigint[] := '{}';
    v_cursor bigint;
    v_pages int := 0;
    e jsonb;
BEGIN
    -- unknown user: zeros, no account created
    r := billing.api_ledger(u, 50, NULL);
    ASSERT r.status = 200 AND r.meta IS NULL
       AND r.body::jsonb = '{"balanceMicros": 0, "entries": []}'::jsonb, format('%s', r);
    ASSERT NOT EXISTS (SELECT 1 FROM billing.accounts WHERE user_id = u);
    ASSERT (billing.api_ledger(u, 0, NULL)).status = 400;
    ASSERT (billing.api_ledger(u, 201, NULL)).status = 400;
    ASSERT (billing.api_ledger(u, 10, 0)).status = 400;
    ASSERT (billing.api_ledger(NULL, 10, NULL)).status = 400;

    pid := pg_temp.fund(u, 10000000);
    FOR i IN 1..6 LOOP
        r := billing.api_reconcile(u, 'gpt-4o', 1000 * i, 0, 'use-' || i, NULL);
        ASSERT r.status = 201, format('%s', r);
    END LOOP;
    r := billing.api_stripe_event(pg_temp.evt('l-ref', 'charge.refunded',
            jsonb_build_object('id', 'ch_l', 'amount', 5000, 'amount_refunded', 500,
                               'metadata', jsonb_build_object('purchase_id', pid))));
    ASSERT r.status = 200 AND r.meta = 'processed', format('%s', r);
    SELECT array_agg(id ORDER BY id DESC) INTO v_ids FROM billing.ledger_entries WHERE user_id = u;
    ASSERT array_length(v_ids, 1) = 8;

    -- default limit, all entries newest first
    r := billing.api_ledger(u, NULL, NULL);
    b := r.body::jsonb;
    ASSERT r.status = 200 AND r.meta IS NULL, format('%s', r);
    ASSERT (b ->> 'balanceMicros')::bigint = pg_temp.balance(u);
    ASSERT (SELECT array_agg((x ->> 'id')::bigint ORDER BY ord) FROM jsonb_array_elements(b -> 'entries')
            WITH ORDINALITY AS t(x, ord)) = v_ids;

    -- entry shapes
    e := b -> 'entries' -> 0;   -- refund
    ASSERT e ->> 'type' = 'refund' AND jsonb_typeof(e -> 'id') = 'string'
       AND (e ->> 'amountMicros')::bigint = -1000000 AND e ->> 'purchaseId' = pid::text
       AND (e ->> 'balanceAfterMicros')::bigint = pg_temp.balance(u)
       AND e ->> 'createdAt' ~ '^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$'
       AND NOT e ? 'idempotencyKey', e::text;
    e := b -> 'entries' -> 1;   -- last usage
    ASSERT e - 'id' - 'createdAt' = jsonb_build_object(
        'type', 'usage', 'amountMicros', -15000, 'balanceAfterMicros', e -> 'balanceAfterMicros',
        'model', 'gpt-4o', 'inputTokens', 6000, 'outputTokens', 0, 'idempotencyKey', 'use-6'), e::text;
    e := b -> 'entries' -> 7;   -- purchase
    ASSERT e ->> 'type' = 'purchase' AND (e ->> 'amountMicros')::bigint = 10000000
       AND (e ->> 'balanceAfterMicros')::bigint = 10000000 AND e ->> 'purchaseId' = pid::text, e::text;

    -- pages of 3: 3 + 3 + 2, cursors = last id of each page, no overlap, no gap
    v_cursor := NULL;
    LOOP
        r := billing.api_ledger(u, 3, v_cursor);
        ASSERT r.status = 200, format('%s', r);
        v_pages := v_pages + 1;
        v_seen := v_seen || (SELECT array_agg((x ->> 'id')::bigint ORDER BY ord)
                               FROM jsonb_array_elements(r.body::jsonb -> 'entries') WITH ORDINALITY AS t(x, ord));
        EXIT WHEN r.meta IS NULL;
        ASSERT r.meta::bigint = v_seen[array_length(v_seen, 1)], format('cursor %s', r.meta);
        v_cursor := r.meta::bigint;
        ASSERT v_pages < 10;
    END LOOP;
    ASSERT v_pages = 3 AND v_seen = v_ids, format('%s pages, %s', v_pages, v_seen);

    -- exactly limit entries left: no cursor
    r := billing.api_ledger(u, 8, NULL);
    ASSERT r.meta IS NULL AND jsonb_array_length(r.body::jsonb -> 'entries') = 8, format('%s', r.meta);
    r := billing.api_ledger(u, 7, NULL);
    ASSERT r.meta = v_ids[7]::text, format('%s', r.meta);
    -- only own entries
    ASSERT (SELECT count(*) FROM jsonb_array_elements((billing.api_ledger(pg_temp.u('l-other'), 200, NULL)).body::jsonb -> 'entries')) = 0;
END $$;

DO $$ BEGIN PERFORM pg_temp.assert_healthy(); END $$;
\echo ok 060_ledger
