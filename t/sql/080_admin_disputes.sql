-- Admin operations (docs/spec.md §4.7), the usage summary (§4.6), the
-- purchase list and the models (§4), disputes in every order (§4.2), the
-- 402 of a non-positive balance (§3.5), and that the invariants know the new
-- entry types (§3).
\set test_name admin
\ir lib/setup.psql

-- a usage entry at a chosen time, written as the owner the way api_reconcile
-- writes one (the API always writes now()): ledger row, balance, account
CREATE FUNCTION pg_temp.usage_at(p_user text, p_at timestamptz, p_model text, p_in bigint,
                                 p_out bigint) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    v_price billing.model_prices;
    v_charge bigint;
    v_bal bigint;
    v_id bigint;
BEGIN
    SELECT * INTO v_price FROM billing.model_prices WHERE model = p_model
     ORDER BY effective_from DESC LIMIT 1;
    v_charge := billing._charge(p_in, p_out, v_price.input_micros_per_mtok, v_price.output_micros_per_mtok);
    SELECT balance_micros INTO v_bal FROM billing.accounts WHERE user_id = p_user FOR UPDATE;
    INSERT INTO billing.ledger_entries (user_id, type, amount_micros, balance_after_micros, idempotency_key,
                                        request_fingerprint, price_id, model, input_tokens, output_tokens,
                                        created_at)
    VALUES (p_user, 'usage', -v_charge, v_bal - v_charge, 'at-' || gen_random_uuid(), 'fp', v_price.id,
            p_model, p_in, p_out, p_at)
    RETURNING id INTO v_id;
    UPDATE billing.accounts SET balance_micros = v_bal - v_charge WHERE user_id = p_user;
    RETURN v_id;
END $$;

-- the event of a dispute of a purchase paid through payment intent p_pi
CREATE FUNCTION pg_temp.dispute(p_event text, p_type text, p_dispute text, p_pi text, p_amount bigint,
                                p_status text) RETURNS billing.api_result LANGUAGE sql AS $$
    SELECT billing.api_stripe_event(pg_temp.evt(p_event, p_type, jsonb_strip_nulls(jsonb_build_object(
        'id', current_setting('t.run') || ':' || p_dispute, 'object', 'dispute', 'amount', p_amount,
        'charge', 'ch_' || p_pi, 'payment_intent', p_pi, 'currency', 'usd', 'status', p_status))))
$$;

-- a purchase of p_cents for p_micros, paid (payment intent 'pi_fund_<id>')
CREATE FUNCTION pg_temp.paid(p_user text, p_micros bigint, p_cents int) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    v_pid uuid;
BEGIN
    INSERT INTO billing.purchases (user_id, package_code, amount_cents, credits_micros)
    VALUES (p_user, 'pro', p_cents, p_micros) RETURNING id INTO v_pid;
    ASSERT (billing.api_stripe_event(pg_temp.evt('pay-' || v_pid, 'payment_intent.succeeded',
            jsonb_build_object('id', 'pi_fund_' || v_pid, 'object', 'payment_intent',
                               'metadata', jsonb_build_object('purchase_id', v_pid::text))))).meta = 'processed';
    RETURN 'pi_fund_' || v_pid;
END $$;

CREATE FUNCTION pg_temp.count_type(p_user text, p_type text) RETURNS bigint LANGUAGE sql AS
$$ SELECT count(*) FROM billing.ledger_entries WHERE user_id = p_user AND type = p_type $$;

-- Adjustments: credit, replay (by anybody), conflict, debit within and beyond
-- the available balance, validation; every refusal writes nothing.
DO $$
DECLARE
    u text := pg_temp.u('adj');
    k text := current_setting('t.run') || ':adj-1';
    r billing.api_result;
    r2 billing.api_result;
    b jsonb;
    v_hold billing.api_result;
BEGIN
    r := billing.api_admin_adjustment('support-1', u, 2000000, 'goodwill credit', k);
    ASSERT r.status = 201 AND r.code IS NULL AND r.meta IS NULL, format('%s', r);
    b := r.body::jsonb;
    ASSERT b - 'entryId' - 'createdAt' = jsonb_build_object('userId', u, 'type', 'adjustment',
        'amountMicros', 2000000, 'reason', 'goodwill credit', 'actor', 'support-1', 'balanceMicros', 2000000), b::text;
    -- the documented key order (docs/api.md, "Answers")
    ASSERT r.body ~ '^\{"entryId":"[0-9]+","userId":.*,"type":"adjustment","amountMicros":2000000,"reason":"goodwill credit","actor":"support-1","createdAt":"[^"]+Z","balanceMicros":2000000\}$', r.body;
    -- the stored entry: who and why
    ASSERT (SELECT actor || '|' || reason || '|' || idempotency_key FROM billing.ledger_entries
             WHERE id = (b ->> 'entryId')::bigint) = 'support-1|goodwill credit|adjustment ' || k;

    -- a replay by a colleague answers the original (actor included), writes nothing
    r2 := billing.api_admin_adjustment('support-2', u, 2000000, 'goodwill credit', k);
    ASSERT r2.status = 201 AND r2.meta = 'replayed' AND r2.body = r.body, format('%s', r2);
    -- the same key with another amount, reason or user: 409
    ASSERT (billing.api_admin_adjustment('support-1', u, 2000001, 'goodwill credit', k)).code = 'idempotency_key_reused';
    ASSERT (billing.api_admin_adjustment('support-1', u, 2000000, 'other', k)).code = 'idempotency_key_reused';
    ASSERT (billing.api_admin_adjustment('support-1', u || 'x', 2000000, 'goodwill credit', k)).code = 'idempotency_key_reused';
    -- ... or another operation
    ASSERT (billing.api_admin_model_price('support-1', 'gpt-4o', 1, 1, NULL, NULL, k)).code = 'idempotency_key_reused';
    ASSERT pg_temp.balance(u) = 2000000 AND pg_temp.entries(u) = 1;

    -- a debit beyond the available balance (balance minus holds): 402, nothing written
    v_hold := billing.api_hold_create(u, 500000, 'adj-hold', 600);
    ASSERT v_hold.status = 201, format('%s', v_hold);
    r := billing.api_admin_adjustment('support-1', u, -1500001, 'correction', k || '-d1');
    ASSERT r.status = 402 AND r.code = 'insufficient_credits'
       AND r.body = 'Debit of 1500001 micros exceeds the available balance of 1500000 micros', format('%s', r);
    ASSERT pg_temp.balance(u) = 2000000 AND pg_temp.entries(u) = 1;
    ASSERT NOT EXISTS (SELECT 1 FROM billing.admin_requests WHERE idempotency_key = k || '-d1');
    -- the same key works once the request fits (402 recorded nothing)
    r := billing.api_admin_adjustment('support-1', u, -1500000, 'correction', k || '-d1');
    ASSERT r.status = 201 AND (r.body::jsonb ->> 'balanceMicros')::bigint = 500000, format('%s', r);
    ASSERT pg_temp.balance(u) = 500000 AND pg_temp.entries(u) = 2;
    -- a debit of a user without an account: 402, no account made
    r := billing.api_admin_adjustment('support-1', pg_temp.u('adj-nobody'), -1, 'x', k || '-d2');
    ASSERT r.status = 402, format('%s', r);
    ASSERT NOT EXISTS (SELECT 1 FROM billing.accounts WHERE user_id = pg_temp.u('adj-nobody'));

    -- validation: one rule per field (sql/functions/_rules.sql), 400, nothing written
    ASSERT (billing.api_admin_adjustment('support-1', u, 0, 'x', k || '-v')).body = 'amountMicros: must not be 0';
    ASSERT (billing.api_admin_adjustment('support-1', u, 1000000000000001, 'x', k || '-v')).body
           = 'amountMicros: must be an integer between -1000000000000000 and 1000000000000000';
    ASSERT (billing.api_admin_adjustment('support-1', u, NULL, 'x', k || '-v')).body = 'amountMicros: field is required';
    ASSERT (billing.api_admin_adjustment('support-1', u, 1, '', k || '-v')).body = 'reason: must be 1 to 500 characters';
    ASSERT (billing.api_admin_adjustment('support-1', u, 1, repeat('é', 501), k || '-v')).body
           = 'reason: must be 1 to 500 characters';
    ASSERT (billing.api_admin_adjustment('support-1', u, 1, NULL, k || '-v')).body = 'reason: field is required';
    ASSERT (billing.api_admin_adjustment('support-1', NULL, 1, 'x', k || '-v')).body = 'userId: field is required';
    ASSERT (billing.api_admin_adjustment('support-1', u, 1, 'x', 'with space')).code = 'invalid_request';
    ASSERT (billing.api_admin_adjustment('', u, 1, 'x', k || '-v')).code = 'invalid_request';
    ASSERT pg_temp.balance(u) = 500000 AND pg_temp.entries(u) = 2;
    -- 500 characters (not bytes) is fine
    r := billing.api_admin_adjustment('support-1', u, 1, repeat('é', 500), k || '-v');
    ASSERT r.status = 201, format('%s', r);
END $$;

-- Usage reversals: exactly what the usage charged, once per usage entry.
DO $$
DECLARE
    u text := pg_temp.u('rev');
    k text := current_setting('t.run') || ':rev';
    r billing.api_result;
    r2 billing.api_result;
    e bigint;
    e0 bigint;
    v_pid uuid;
BEGIN
    v_pid := pg_temp.fund(u, 1000000);
    e := (billing.api_reconcile(u, 'gpt-4o', 1000, 500, 'use-1', NULL)).body::jsonb ->> 'entryId';
    ASSERT pg_temp.balance(u) = 992500;

    r := billing.api_admin_usage_reversal('support-1', e, 'the model failed', k || '-1');
    ASSERT r.status = 201 AND r.meta IS NULL, format('%s', r);
    ASSERT r.body ~ ('^\{"entryId":"[0-9]+","userId":"[^"]+","type":"usage_reversal","reversedEntryId":"' || e
                     || '","amountMicros":7500,"reason":"the model failed","actor":"support-1","createdAt":"[^"]+","balanceMicros":1000000\}$'),
           r.body;
    ASSERT pg_temp.balance(u) = 1000000;
    r2 := billing.api_admin_usage_reversal('support-9', e, 'the model failed', k || '-1');
    ASSERT r2.status = 201 AND r2.meta = 'replayed' AND r2.body = r.body, format('%s', r2);
    r2 := billing.api_admin_usage_reversal('support-1', e, 'again', k || '-2');
    ASSERT r2.status = 409 AND r2.code = 'already_reversed', format('%s', r2);
    ASSERT (billing.api_admin_usage_reversal('support-1', e, 'another reason', k || '-1')).code = 'idempotency_key_reused';
    ASSERT pg_temp.balance(u) = 1000000 AND pg_temp.count_type(u, 'usage_reversal') = 1;

    -- not usage (the purchase credit), unknown: 404, nothing written
    r := billing.api_admin_usage_reversal('support-1',
            (SELECT id FROM billing.ledger_entries WHERE purchase_id = v_pid), 'x', k || '-3');
    ASSERT r.status = 404 AND r.code = 'not_found', format('%s', r);
    r := billing.api_admin_usage_reversal('support-1', (SELECT max(id) + 1000 FROM billing.ledger_entries),
                                          'x', k || '-3');
    ASSERT r.status = 404, format('%s', r);
    ASSERT (billing.api_admin_usage_reversal('support-1', e, NULL, k || '-3')).body = 'reason: field is required';
    ASSERT (billing.api_admin_usage_reversal('support-1', NULL, 'x', k || '-3')).body = 'entryId: field is required';
    ASSERT NOT EXISTS (SELECT 1 FROM billing.admin_requests WHERE idempotency_key = k || '-3');

    -- a free usage entry is reversed by a zero entry, once
    e0 := (billing.api_reconcile(u, 'gpt-4o', 0, 0, 'use-0', NULL)).body::jsonb ->> 'entryId';
    r := billing.api_admin_usage_reversal('support-1', e0, 'free', k || '-4');
    ASSERT r.status = 201 AND (r.body::jsonb ->> 'amountMicros')::bigint = 0, format('%s', r);
    ASSERT (billing.api_admin_usage_reversal('support-1', e0, 'free', k || '-5')).code = 'already_reversed';

    -- the user's ledger shows the reversal and its reason, not the actor
    ASSERT ((billing.api_ledger(u, 1, NULL)).body::jsonb -> 'entries' -> 0) - 'id' - 'createdAt'
           = jsonb_build_object('type', 'usage_reversal', 'amountMicros', 0, 'balanceAfterMicros', 1000000,
                                'reversedEntryId', e0::text, 'reason', 'free'),
           (billing.api_ledger(u, 1, NULL)).body;
END $$;

-- Prices: a new version from now or later, a new model, never retroactive.
DO $$
DECLARE
    m text := current_setting('t.run') || '/model';
    k text := current_setting('t.run') || ':price';
    r billing.api_result;
    r2 billing.api_result;
    v_models jsonb;
BEGIN
    -- a future version of a new model: created, but not in force yet
    r := billing.api_admin_model_price('support-1', m, 1000000, 2000000, '2999-01-01T00:00:00+01:00', 'launch', k || '-1');
    ASSERT r.status = 201 AND r.body::jsonb = jsonb_build_object('model', m, 'inputMicrosPerMTok', 1000000,
        'outputMicrosPerMTok', 2000000, 'effectiveFrom', '2998-12-31T23:00:00.000000Z'), format('%s', r);
    -- (spaced as PostgreSQL writes it; the module compacts)
    ASSERT r.body ~ '^\{"model" : .*, "inputMicrosPerMTok" : 1000000, "outputMicrosPerMTok" : 2000000, "effectiveFrom" : "2998-12-31T23:00:00.000000Z"\}$', r.body;
    ASSERT NOT (billing.api_models()).body::jsonb -> 'models' @> jsonb_build_array(jsonb_build_object('model', m));
    ASSERT (billing.api_reconcile(pg_temp.u('price'), m, 1, 1, 'x', NULL)).code = 'unknown_model';
    -- now: in force at once; the replay answers the same version
    r := billing.api_admin_model_price('support-1', m, 3000000, 4000000, NULL, NULL, k || '-2');
    ASSERT r.status = 201, format('%s', r);
    r2 := billing.api_admin_model_price('support-2', m, 3000000, 4000000, NULL, NULL, k || '-2');
    ASSERT r2.status = 201 AND r2.meta = 'replayed' AND r2.body = r.body, format('%s', r2);
    v_models := (billing.api_models()).body::jsonb -> 'models';
    ASSERT v_models @> jsonb_build_array(r.body::jsonb), v_models::text;
    ASSERT v_models @> '[{"model": "gpt-4o", "inputMicrosPerMTok": 2500000, "outputMicrosPerMTok": 10000000}]', v_models::text;
    PERFORM pg_temp.fund(pg_temp.u('price'), 1000000);
    r2 := billing.api_reconcile(pg_temp.u('price'), m, 100000, 100000, 'y', NULL);
    ASSERT r2.status = 201 AND (r2.body::jsonb ->> 'chargedMicros')::bigint = 700000, format('%s', r2);

    -- in the past: 422, nothing written; the same instant twice: 409
    r := billing.api_admin_model_price('support-1', m, 1, 1, '2020-01-01T00:00:00Z', NULL, k || '-3');
    ASSERT r.status = 422 AND r.code = 'retroactive_price', format('%s', r);
    r := billing.api_admin_model_price('support-1', m, 1, 1, '2999-01-01T00:00:00+01:00', NULL, k || '-3');
    ASSERT r.status = 409 AND r.code = 'price_version_exists', format('%s', r);
    ASSERT NOT EXISTS (SELECT 1 FROM billing.admin_requests WHERE idempotency_key = k || '-3');
    ASSERT (SELECT count(*) FROM billing.model_prices WHERE model = m) = 2;

    -- validation
    ASSERT (billing.api_admin_model_price('support-1', m, -1, 1, NULL, NULL, k || '-4')).body
           = 'inputMicrosPerMTok: must be an integer between 0 and 1000000000000';
    ASSERT (billing.api_admin_model_price('support-1', m, 1, NULL, NULL, NULL, k || '-4')).body
           = 'outputMicrosPerMTok: field is required';
    ASSERT (billing.api_admin_model_price('support-1', repeat('m', 129), 1, 1, NULL, NULL, k || '-4')).body
           = 'model: must be 1 to 128 characters';
    ASSERT (billing.api_admin_model_price('support-1', m, 1, 1, NULL, '', k || '-4')).body
           = 'reason: must be 1 to 500 characters';
    ASSERT (billing.api_admin_model_price('support-1', m, 1, 1, 'tomorrow', NULL, k || '-4')).code = 'invalid_request';
    ASSERT billing._is_timestamp('2030-01-01T00:00:00Z') AND billing._is_timestamp('2030-01-01t00:00:00.123456z')
       AND billing._is_timestamp('2030-02-28T23:59:59-12:30') AND billing._is_timestamp('2028-02-29T00:00:00Z');
    ASSERT NOT billing._is_timestamp('2030-01-01T00:00:00') AND NOT billing._is_timestamp('2030-01-01 00:00:00Z')
       AND NOT billing._is_timestamp('2030-02-29T00:00:00Z') AND NOT billing._is_timestamp('2030-01-01T24:00:00Z')
       AND NOT billing._is_timestamp('2030-01-01T00:00:60Z') AND NOT billing._is_timestamp('2030-01-01T00:00:00.1234567Z')
       AND NOT billing._is_timestamp('2030-01-01T00:00:00+24:00') AND NOT billing._is_timestamp('0000-01-01T00:00:00Z');
END $$;

-- The usage summary: UTC days, both ends included, by model, net of
-- reversals, only the caller's usage, at most 366 days.
DO $$
DECLARE
    u text := pg_temp.u('sum');
    r billing.api_result;
    e bigint;
BEGIN
    PERFORM pg_temp.fund(u, 100000000);
    PERFORM pg_temp.usage_at(u, '2025-02-28T23:59:59.999999Z', 'gpt-4o', 1000, 500);       -- 7500
    PERFORM pg_temp.usage_at(u, '2025-03-01T00:00:00Z', 'gpt-4o', 2000, 0);               -- 5000
    PERFORM pg_temp.usage_at(u, '2025-03-01T12:00:00+05:00', 'gpt-4o-mini', 1000000, 0);  -- 150000
    e := pg_temp.usage_at(u, '2025-03-01T23:00:00Z', 'gpt-4o', 4000, 0);                  -- 10000, reversed below
    PERFORM pg_temp.usage_at(u, '2025-03-02T00:00:00Z', 'o3-mini', 1000, 1000);           -- 5500
    PERFORM pg_temp.fund(pg_temp.u('sum-other'), 1000000);
    PERFORM pg_temp.usage_at(pg_temp.u('sum-other'), '2025-03-01T10:00:00Z', 'gpt-4o', 1000, 0);
    ASSERT (billing.api_admin_usage_reversal('support-1', e, 'outage', current_setting('t.run') || ':sum')).status = 201;

    r := billing.api_usage_summary(u, '2025-03-01', '2025-03-01', 'day');
    ASSERT r.status = 200 AND r.body::jsonb = '{"from": "2025-03-01", "to": "2025-03-01", "groupBy": "day",
        "groups": [{"key": "2025-03-01", "requests": 2, "inputTokens": 1002000, "outputTokens": 0,
                    "chargedMicros": 155000}]}'::jsonb, format('%s', r);
    r := billing.api_usage_summary(u, '2025-02-28', '2025-03-02', NULL);
    ASSERT r.body::jsonb -> 'groups' = '[
        {"key": "2025-02-28", "requests": 1, "inputTokens": 1000, "outputTokens": 500, "chargedMicros": 7500},
        {"key": "2025-03-01", "requests": 2, "inputTokens": 1002000, "outputTokens": 0, "chargedMicros": 155000},
        {"key": "2025-03-02", "requests": 1, "inputTokens": 1000, "outputTokens": 1000, "chargedMicros": 5500}]'::jsonb
        AND r.body::jsonb ->> 'groupBy' = 'day', format('%s', r);
    r := billing.api_usage_summary(u, '2025-01-01', '2025-12-31', 'model');
    ASSERT r.body::jsonb -> 'groups' = '[
        {"key": "gpt-4o", "requests": 2, "inputTokens": 3000, "outputTokens": 500, "chargedMicros": 12500},
        {"key": "gpt-4o-mini", "requests": 1, "inputTokens": 1000000, "outputTokens": 0, "chargedMicros": 150000},
        {"key": "o3-mini", "requests": 1, "inputTokens": 1000, "outputTokens": 1000, "chargedMicros": 5500}]'::jsonb,
        format('%s', r);
    -- the documented key order
    ASSERT r.body ~ '^\{"from" : "2025-01-01", "to" : "2025-12-31", "groupBy" : "model", "groups" : \[\{"key" : "gpt-4o", "requests" : 2, "inputTokens" : 3000, "outputTokens" : 500, "chargedMicros" : 12500\}', r.body;
    r := billing.api_usage_summary(u, '2025-03-03', '2025-03-03', 'day');
    ASSERT r.body::jsonb -> 'groups' = '[]'::jsonb, format('%s', r);

    -- 366 days at most (a leap year is 366 days)
    ASSERT (billing.api_usage_summary(u, '2024-01-01', '2024-12-31', 'day')).status = 200;
    ASSERT (billing.api_usage_summary(u, '2025-01-01', '2026-01-01', 'day')).status = 200;
    r := billing.api_usage_summary(u, '2025-01-01', '2026-01-02', 'day');
    ASSERT r.status = 400 AND r.body = 'from..to: must span at most 366 days', format('%s', r);
    ASSERT (billing.api_usage_summary(u, '2025-01-02', '2025-01-01', 'day')).body = 'to: must not be before from';
    ASSERT (billing.api_usage_summary(u, '2025-02-29', '2025-03-01', 'day')).body = 'from: must be a date YYYY-MM-DD';
    ASSERT (billing.api_usage_summary(u, '2025-01-01', '2025-1-2', 'day')).body = 'to: must be a date YYYY-MM-DD';
    ASSERT (billing.api_usage_summary(u, NULL, '2025-01-02', 'day')).body = 'from: field is required';
    ASSERT (billing.api_usage_summary(u, '2025-01-01', '2025-01-02', 'week')).body = 'groupBy: must be day or model';
    ASSERT (billing.api_usage_summary(NULL, '2025-01-01', '2025-01-02', 'day')).code = 'invalid_request';
    ASSERT billing._is_date('2024-02-29') AND billing._is_date('0001-01-01') AND billing._is_date('9999-12-31');
    ASSERT NOT billing._is_date('2023-02-29') AND NOT billing._is_date('2024-04-31') AND NOT billing._is_date('0000-01-01')
       AND NOT billing._is_date('2024-00-10') AND NOT billing._is_date('2024-13-01') AND NOT billing._is_date(' 2024-01-01');
END $$;

-- The purchase list: newest first, pages through a cursor of the caller's.
DO $$
DECLARE
    u text := pg_temp.u('plist');
    r billing.api_result;
    v_ids uuid[];
    v_seen uuid[] := '{}';
    v_after uuid;
    i int;
BEGIN
    r := billing.api_purchases(u, NULL, NULL);
    ASSERT r.status = 200 AND r.meta IS NULL AND r.body::jsonb = '{"purchases": []}'::jsonb, format('%s', r);
    FOR i IN 1..5 LOOP
        -- one transaction: equal created_at, so the id decides the order
        v_ids := v_ids || ((billing.api_purchase_create(u, 'starter')).body::jsonb ->> 'purchaseId')::uuid;
    END LOOP;
    LOOP
        r := billing.api_purchases(u, 2, v_after);
        ASSERT r.status = 200, format('%s', r);
        v_seen := v_seen || ARRAY(SELECT (x ->> 'purchaseId')::uuid
                                    FROM jsonb_array_elements(r.body::jsonb -> 'purchases') x);
        EXIT WHEN r.meta IS NULL;
        v_after := r.meta::uuid;
    END LOOP;
    ASSERT v_seen = ARRAY(SELECT unnest(v_ids) ORDER BY 1 DESC), format('%s vs %s', v_seen, v_ids);
    ASSERT (billing.api_purchases(u, 1, NULL)).body::jsonb -> 'purchases' -> 0 ? 'refundedMicros';
    -- someone else's purchase is no cursor of mine
    ASSERT (billing.api_purchases(pg_temp.u('plist-other'), 2, v_ids[1])).body = 'cursor is not valid';
    ASSERT (billing.api_purchases(u, 0, NULL)).status = 400;
    ASSERT (billing.api_purchases(u, 201, NULL)).status = 400;
END $$;

-- Disputes, every order and repetition: the end state depends only on the
-- outcome (debited unless won), and each dispute moves money at most twice.
DO $$
DECLARE
    u text;
    pi text;
    r billing.api_result;
    v_case record;
    v_ev text;
    v_seq text[];
    v_n int := 0;
BEGIN
    FOR v_case IN SELECT * FROM (VALUES
            -- events in order of arrival: c = created, w = closed won, l = closed lost
            ('c',      -2500000, 1, 0),
            ('cc',     -2500000, 1, 0),
            ('cw',            0, 1, 1),
            ('cww',           0, 1, 1),
            ('ccww',          0, 1, 1),
            ('wc',            0, 0, 0),
            ('wcw',           0, 0, 0),
            ('cl',     -2500000, 1, 0),
            ('lc',     -2500000, 1, 0),
            ('lcl',    -2500000, 1, 0)) AS t(seq, net, debits, credits)
    LOOP
        v_n := v_n + 1;
        u := pg_temp.u('dispute-' || v_case.seq);
        pi := pg_temp.paid(u, 5000000, 500);
        FOR i IN 1..length(v_case.seq) LOOP
            v_ev := 'dp-' || v_case.seq || '-' || i;
            r := pg_temp.dispute(v_ev,
                    CASE substr(v_case.seq, i, 1) WHEN 'c' THEN 'charge.dispute.created' ELSE 'charge.dispute.closed' END,
                    'dp_' || v_n, pi, 250,
                    CASE substr(v_case.seq, i, 1) WHEN 'c' THEN 'needs_response' WHEN 'w' THEN 'won' ELSE 'lost' END);
            ASSERT r.status = 200 AND r.meta = 'processed', format('%s: %s', v_case.seq, r);
        END LOOP;
        ASSERT pg_temp.balance(u) = 5000000 + v_case.net,
               format('%s: balance %s', v_case.seq, pg_temp.balance(u));
        ASSERT pg_temp.count_type(u, 'dispute') = v_case.debits
           AND pg_temp.count_type(u, 'dispute_reversal') = v_case.credits, v_case.seq;
    END LOOP;

    -- the same event delivered twice is a duplicate
    u := pg_temp.u('dispute-dup');
    pi := pg_temp.paid(u, 5000000, 500);
    ASSERT (pg_temp.dispute('dp-dup', 'charge.dispute.created', 'dp_dup', pi, 500, 'needs_response')).meta = 'processed';
    ASSERT (pg_temp.dispute('dp-dup', 'charge.dispute.created', 'dp_dup', pi, 500, 'needs_response')).meta = 'duplicate';
    ASSERT pg_temp.balance(u) = 0;

    -- a dispute before the payment event credits the purchase first
    u := pg_temp.u('dispute-first');
    INSERT INTO billing.purchases (user_id, package_code, amount_cents, credits_micros, payment_intent_id)
    VALUES (u, 'starter', 500, 5000000, 'pi_first_' || current_setting('t.run'));
    r := pg_temp.dispute('dp-first', 'charge.dispute.created', 'dp_first', 'pi_first_' || current_setting('t.run'),
                         100, 'needs_response');
    ASSERT r.status = 200 AND r.body::jsonb = '{"received": true, "creditedMicros": 5000000}', format('%s', r);
    ASSERT pg_temp.balance(u) = 4000000;     -- floor(5,000,000 x 100 / 500)

    -- a debt refuses all usage (docs/spec.md §3.5) until the balance is positive again
    u := pg_temp.u('dispute-debt');
    pi := pg_temp.paid(u, 5000000, 500);
    ASSERT (billing.api_reconcile(u, 'gpt-4o', 1000000, 200000, 'spend', NULL)).status = 201;   -- 4,500,000
    ASSERT (pg_temp.dispute('dp-debt-1', 'charge.dispute.created', 'dp_debt', pi, 500, 'needs_response')).meta = 'processed';
    ASSERT pg_temp.balance(u) = -4500000;
    ASSERT (billing.api_balance(u)).body::jsonb ->> 'availableMicros' = '-4500000';
    r := billing.api_reconcile(u, 'gpt-4o', 0, 0, 'free', NULL);
    ASSERT r.status = 402 AND r.body = 'The balance is -4500000 micros; usage needs a positive balance', format('%s', r);
    ASSERT (billing.api_hold_create(u, 1, 'hold', 60)).status = 402;
    ASSERT (billing.api_admin_adjustment('support-1', u, 4500000, 'settle', current_setting('t.run') || ':debt')).status = 201;
    ASSERT (billing.api_reconcile(u, 'gpt-4o', 0, 0, 'free', NULL)).status = 402;   -- zero is not positive
    ASSERT (pg_temp.dispute('dp-debt-2', 'charge.dispute.closed', 'dp_debt', pi, 500, 'won')).meta = 'processed';
    ASSERT pg_temp.balance(u) = 5000000;
    ASSERT (billing.api_reconcile(u, 'gpt-4o', 0, 0, 'free', NULL)).status = 201;

    -- an unknown purchase: recorded and acknowledged; no amount: ignored
    ASSERT (pg_temp.dispute('dp-none', 'charge.dispute.created', 'dp_none', 'pi_nobody', 500, 'needs_response')).meta = 'unmatched';
    u := pg_temp.u('dispute-noamount');
    pi := pg_temp.paid(u, 5000000, 500);
    ASSERT (pg_temp.dispute('dp-na', 'charge.dispute.created', 'dp_na', pi, NULL, 'needs_response')).meta = 'ignored';
    ASSERT pg_temp.balance(u) = 5000000 AND NOT EXISTS (SELECT 1 FROM billing.disputes WHERE purchase_id IN
        (SELECT id FROM billing.purchases WHERE user_id = u));

    -- the user's ledger names the dispute
    u := pg_temp.u('dispute-cw');
    ASSERT (billing.api_ledger(u, 1, NULL)).body::jsonb -> 'entries' -> 0 ->> 'disputeId'
           = current_setting('t.run') || ':dp_3', (billing.api_ledger(u, 1, NULL)).body;
END $$;

-- As billing_app: the new functions only; the new tables are out of reach.
SET ROLE billing_app;
DO $$
DECLARE
    v_ok boolean;
BEGIN
    ASSERT (billing.api_models()).status = 200;
    ASSERT (billing.api_usage_summary(current_setting('t.run'), '2025-01-01', '2025-01-01', 'day')).status = 200;
    ASSERT (billing.api_admin_adjustment('support-1', current_setting('t.run') || ':app', -1, 'x',
                                         current_setting('t.run') || ':app')).status = 402;
    BEGIN
        PERFORM count(*) FROM billing.admin_requests;
        v_ok := true;
    EXCEPTION WHEN insufficient_privilege THEN v_ok := false;
    END;
    ASSERT NOT v_ok, 'billing_app reads admin_requests';
    BEGIN
        INSERT INTO billing.disputes (id, purchase_id, user_id, amount_cents, status)
        VALUES ('x', gen_random_uuid(), 'x', 1, 'x');
        v_ok := true;
    EXCEPTION WHEN insufficient_privilege THEN v_ok := false;
    END;
    ASSERT NOT v_ok, 'billing_app writes disputes';
END $$;
RESET ROLE;

-- The admin audit is append-only for every role, the owner included.
DO $$
DECLARE
    v_ok boolean;
BEGIN
    BEGIN
        UPDATE billing.admin_requests SET reason = 'rewritten'
         WHERE idempotency_key LIKE current_setting('t.run') || '%';
        v_ok := true;
    EXCEPTION WHEN insufficient_privilege THEN v_ok := false;
    END;
    ASSERT NOT v_ok, 'admin_requests UPDATE allowed';
    BEGIN
        DELETE FROM billing.admin_requests WHERE idempotency_key LIKE current_setting('t.run') || '%';
        v_ok := true;
    EXCEPTION WHEN insufficient_privilege THEN v_ok := false;
    END;
    ASSERT NOT v_ok, 'admin_requests DELETE allowed';
    BEGIN
        TRUNCATE billing.admin_requests;
        v_ok := true;
    EXCEPTION WHEN insufficient_privilege THEN v_ok := false;
    END;
    ASSERT NOT v_ok, 'admin_requests TRUNCATE allowed';
END $$;

-- The ledger refuses new-type rows of the wrong shape, whoever writes them.
DO $$
DECLARE
    u text := pg_temp.u('adj');
    v_ok boolean;
BEGIN
    BEGIN
        INSERT INTO billing.ledger_entries (user_id, type, amount_micros, balance_after_micros, idempotency_key)
        VALUES (u, 'adjustment', 1, 1, 'adjustment x');          -- no actor, no reason
        v_ok := true;
    EXCEPTION WHEN check_violation THEN v_ok := false;
    END;
    ASSERT NOT v_ok, 'an adjustment without actor and reason';
    BEGIN
        INSERT INTO billing.ledger_entries (user_id, type, amount_micros, balance_after_micros, idempotency_key)
        VALUES (u, 'bonus', 1, 1, 'bonus x');
        v_ok := true;
    EXCEPTION WHEN check_violation THEN v_ok := false;
    END;
    ASSERT NOT v_ok, 'an unknown entry type';
END $$;

-- invariant_violations() knows the new types (made inside a rolled-back transaction).
BEGIN;
DO $$
DECLARE
    u text := pg_temp.u('dispute-c');
    v_e billing.ledger_entries;
BEGIN
    -- a dispute that says it debited more than its entry did
    UPDATE billing.disputes SET debited_micros = debited_micros + 1 WHERE user_id = u;
    ASSERT EXISTS (SELECT 1 FROM billing.invariant_violations() WHERE invariant = 4 AND user_id = u
                      AND detail LIKE 'dispute %'), 'dispute debit';
    -- a second debit of one dispute (written around the key)
    SELECT * INTO v_e FROM billing.ledger_entries WHERE user_id = u AND type = 'dispute';
    INSERT INTO billing.ledger_entries (user_id, type, amount_micros, balance_after_micros, idempotency_key,
                                        purchase_id, dispute_id)
    VALUES (u, 'dispute', -1, (SELECT balance_micros FROM billing.accounts WHERE user_id = u) - 1,
            'dispute x', v_e.purchase_id, 'x');
    ASSERT EXISTS (SELECT 1 FROM billing.invariant_violations() WHERE invariant = 4 AND user_id = u
                      AND detail LIKE '%names dispute x%'), 'orphan dispute entry';
    -- an adjustment without its admin request; a debt left by an admin debit
    u := pg_temp.u('adj');
    INSERT INTO billing.ledger_entries (user_id, type, amount_micros, balance_after_micros, idempotency_key,
                                        request_fingerprint, actor, reason)
    VALUES (u, 'adjustment', -10000000, (SELECT balance_micros FROM billing.accounts WHERE user_id = u) - 10000000,
            'adjustment rogue', 'fp', 'someone', 'rogue');
    ASSERT EXISTS (SELECT 1 FROM billing.invariant_violations() WHERE invariant = 3 AND user_id = u), 'rogue adjustment';
    ASSERT EXISTS (SELECT 1 FROM billing.invariant_violations() WHERE invariant = 5 AND user_id = u), 'admin debt';
    -- a reversal that credits more than the usage charged
    -- a "reversal" of an entry that is not usage (the purchase credit)
    u := pg_temp.u('rev');
    INSERT INTO billing.ledger_entries (user_id, type, amount_micros, balance_after_micros, idempotency_key,
                                        request_fingerprint, actor, reason, reversed_entry_id)
    SELECT u, 'usage_reversal', 1, (SELECT balance_micros FROM billing.accounts WHERE user_id = u) + 1,
           'usage_reversal ' || id, 'fp', 'someone', 'rogue', id
      FROM billing.ledger_entries WHERE user_id = u AND type = 'purchase';
    ASSERT EXISTS (SELECT 1 FROM billing.invariant_violations() WHERE invariant = 4 AND user_id = u
                      AND detail LIKE 'usage_reversal %: not a usage entry'), 'reversal of a purchase';
    -- the admin audit's trigger disabled
    ALTER TABLE billing.admin_requests DISABLE TRIGGER admin_requests_no_truncate;
    ASSERT EXISTS (SELECT 1 FROM billing.invariant_violations() WHERE invariant = 1
                      AND detail LIKE '%admin_requests_no_truncate'), 'admin trigger';
END $$;
ROLLBACK;

DO $$ BEGIN PERFORM pg_temp.assert_healthy(); END $$;
\echo ok 080_admin_disputes
