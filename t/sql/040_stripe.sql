-- Purchases and Stripe webhooks (docs/spec.md §4.2, invariant 4), outbox (docs/spec.md §4.4).
\set test_name stripe
\ir lib/setup.psql

-- helper: a checkout session object for a purchase
CREATE FUNCTION pg_temp.session(p_pid uuid, p_status text, p_pi text) RETURNS jsonb LANGUAGE sql AS
$$ SELECT jsonb_build_object('id', 'cs_' || p_pid, 'object', 'checkout.session',
                             'client_reference_id', p_pid::text, 'payment_status', p_status,
                             'payment_intent', p_pi,
                             'metadata', jsonb_build_object('purchase_id', p_pid::text, 'user_id', 'x')) $$;
CREATE FUNCTION pg_temp.purchase(p_user text, p_package text) RETURNS uuid LANGUAGE plpgsql AS $$
DECLARE r billing.api_result;
BEGIN
    r := billing.api_purchase_create(p_user, p_package);
    ASSERT r.status = 201, format('%s', r);
    RETURN (r.body::jsonb ->> 'purchaseId')::uuid;
END $$;
CREATE FUNCTION pg_temp.credits(p_pid uuid) RETURNS bigint LANGUAGE sql AS
$$ SELECT count(*) FROM billing.ledger_entries WHERE purchase_id = p_pid AND type = 'purchase' $$;

-- Purchase API: create, session, fail, get.
DO $$
DECLARE
    u text := pg_temp.u('buyer');
    r billing.api_result;
    b jsonb;
    pid uuid;
BEGIN
    r := billing.api_purchase_create(u, 'enterprise');
    ASSERT r.status = 422 AND r.code = 'unknown_package', format('%s', r);
    -- a missing code is malformed, a well-formed one of no package is unknown
    ASSERT (billing.api_purchase_create(u, NULL)).status = 400;
    ASSERT (billing.api_purchase_create(NULL, 'pro')).status = 400;

    r := billing.api_purchase_create(u, 'standard');
    ASSERT r.status = 201 AND r.code IS NULL, format('%s', r);
    b := r.body::jsonb;
    pid := (b ->> 'purchaseId')::uuid;
    ASSERT b = jsonb_build_object('purchaseId', pid::text, 'packageCode', 'standard', 'amountCents', 2000,
                                  'currency', 'usd', 'creditsMicros', 21000000, 'status', 'pending',
                                  'packageName', 'Standard'), b::text;
    b := b - 'packageName';

    r := billing.api_purchase_session(pid, 'cs_test_123', 'https://checkout.stripe.com/c/pay/cs_test_123');
    ASSERT r.status = 201 AND r.body::jsonb = b || jsonb_build_object(
        'checkoutSessionId', 'cs_test_123', 'checkoutUrl', 'https://checkout.stripe.com/c/pay/cs_test_123'),
        format('%s', r);
    ASSERT (billing.api_purchase_session(gen_random_uuid(), 'cs_x', 'u')).status = 404;

    r := billing.api_purchase_get(u, pid);
    ASSERT r.status = 200, format('%s', r);
    b := r.body::jsonb;
    ASSERT b ->> 'status' = 'pending' AND (b ->> 'refundedMicros')::bigint = 0
       AND b ->> 'checkoutSessionId' = 'cs_test_123' AND b ? 'createdAt', b::text;
    r := billing.api_purchase_get(pg_temp.u('someone-else'), pid);
    ASSERT r.status = 404 AND r.code = 'not_found', format('%s', r);
    ASSERT (billing.api_purchase_get(u, gen_random_uuid())).status = 404;

    -- Stripe failure: 502, purchase failed, no credit
    pid := pg_temp.purchase(u, 'starter');
    r := billing.api_purchase_fail(pid, 'timeout');
    ASSERT r.status = 502 AND r.code = 'stripe_error' AND r.body IS NOT NULL, format('%s', r);
    ASSERT (billing.api_purchase_get(u, pid)).body::jsonb ->> 'status' = 'failed';
    ASSERT pg_temp.credits(pid) = 0 AND pg_temp.balance(u) = 0;

    -- ...and a later payment event for it still credits it (the money was taken)
    r := billing.api_stripe_event(pg_temp.evt('late-paid', 'checkout.session.completed',
                                               pg_temp.session(pid, 'paid', 'pi_late_' || pid)));
    ASSERT r.status = 200 AND r.meta = 'processed', format('%s', r);
    ASSERT (billing.api_purchase_get(u, pid)).body::jsonb ->> 'status' = 'paid';
    ASSERT pg_temp.credits(pid) = 1 AND pg_temp.balance(u) = 5000000;
END $$;

-- A payment credits exactly once whatever events arrive, any number of times.
DO $$
DECLARE
    u text := pg_temp.u('once');
    r billing.api_result;
    pid uuid;
    e jsonb;
BEGIN
    pid := pg_temp.purchase(u, 'pro');
    e := pg_temp.evt('once-1', 'checkout.session.completed', pg_temp.session(pid, 'paid', 'pi_once_' || pid));
    r := billing.api_stripe_event(e);
    ASSERT r.status = 200 AND r.code IS NULL AND r.meta = 'processed'
       AND r.body::jsonb = '{"received": true, "creditedMicros": 55000000}', format('%s', r);
    ASSERT pg_temp.balance(u) = 55000000;
    ASSERT (SELECT status FROM billing.purchases WHERE id = pid) = 'paid';
    ASSERT (SELECT payment_intent_id FROM billing.purchases WHERE id = pid) = 'pi_once_' || pid;
    ASSERT (SELECT idempotency_key FROM billing.ledger_entries WHERE purchase_id = pid) = 'purchase ' || pid;
    ASSERT (SELECT stripe_event_id FROM billing.ledger_entries WHERE purchase_id = pid) = e ->> 'id';

    -- same event id again: duplicate no-op
    r := billing.api_stripe_event(e);
    ASSERT r.status = 200 AND r.meta = 'duplicate'
       AND r.body::jsonb = '{"received": true, "duplicate": true}', format('%s', r);
    -- the other event types for the same payment: no second credit
    r := billing.api_stripe_event(pg_temp.evt('once-2', 'payment_intent.succeeded',
            jsonb_build_object('id', 'pi_once_' || pid, 'object', 'payment_intent',
                               'metadata', jsonb_build_object('purchase_id', pid::text))));
    ASSERT r.status = 200 AND r.meta = 'processed', format('%s', r);
    r := billing.api_stripe_event(pg_temp.evt('once-3', 'checkout.session.async_payment_succeeded',
                                               pg_temp.session(pid, 'paid', 'pi_once_' || pid)));
    ASSERT r.status = 200, format('%s', r);
    -- an expiry/failure after payment does not un-pay
    r := billing.api_stripe_event(pg_temp.evt('once-4', 'checkout.session.expired', pg_temp.session(pid, 'unpaid', NULL)));
    ASSERT r.status = 200, format('%s', r);
    ASSERT pg_temp.credits(pid) = 1 AND pg_temp.balance(u) = 55000000;
    ASSERT (SELECT status FROM billing.purchases WHERE id = pid) = 'paid';
    ASSERT (SELECT count(*) FROM billing.outbox
             WHERE type = 'purchase.completed' AND payload -> 'data' ->> 'purchaseId' = pid::text) = 1;
    ASSERT (SELECT outcome FROM billing.stripe_events WHERE id = e ->> 'id') = 'processed';
END $$;

-- PaymentIntent found by payment_intent id only (no metadata), async payments,
-- expired then paid.
DO $$
DECLARE
    u text := pg_temp.u('async');
    r billing.api_result;
    p1 uuid;
    p2 uuid;
    p3 uuid;
BEGIN
    -- completed but unpaid: recorded, no credit; then async success credits
    p1 := pg_temp.purchase(u, 'starter');
    r := billing.api_stripe_event(pg_temp.evt('a-1', 'checkout.session.completed',
                                               pg_temp.session(p1, 'unpaid', 'pi_a1_' || p1)));
    ASSERT r.status = 200 AND r.meta = 'ignored', format('%s', r);
    ASSERT pg_temp.credits(p1) = 0 AND (SELECT status FROM billing.purchases WHERE id = p1) = 'pending';
    ASSERT EXISTS (SELECT 1 FROM billing.stripe_events WHERE id = pg_temp.u('a-1'));
    r := billing.api_stripe_event(pg_temp.evt('a-2', 'checkout.session.async_payment_succeeded',
                                               pg_temp.session(p1, 'paid', 'pi_a1_' || p1)));
    ASSERT r.status = 200 AND r.meta = 'processed', format('%s', r);
    ASSERT pg_temp.credits(p1) = 1 AND pg_temp.balance(u) = 5000000;

    -- async failure marks a pending purchase failed
    p2 := pg_temp.purchase(u, 'starter');
    r := billing.api_stripe_event(pg_temp.evt('a-3', 'checkout.session.async_payment_failed',
                                               pg_temp.session(p2, 'unpaid', NULL)));
    ASSERT r.status = 200 AND r.meta = 'processed', format('%s', r);
    ASSERT (SELECT status FROM billing.purchases WHERE id = p2) = 'failed' AND pg_temp.credits(p2) = 0;

    -- expired, then paid: credits and becomes paid
    p3 := pg_temp.purchase(u, 'standard');
    r := billing.api_stripe_event(pg_temp.evt('a-4', 'checkout.session.expired', pg_temp.session(p3, 'unpaid', NULL)));
    ASSERT r.status = 200, format('%s', r);
    ASSERT (SELECT status FROM billing.purchases WHERE id = p3) = 'failed';
    UPDATE billing.purchases SET payment_intent_id = 'pi_a3_' || p3 WHERE id = p3;
    -- payment_intent.succeeded without metadata: found through the stored payment_intent id
    r := billing.api_stripe_event(pg_temp.evt('a-5', 'payment_intent.succeeded',
            jsonb_build_object('id', 'pi_a3_' || p3, 'object', 'payment_intent')));
    ASSERT r.status = 200 AND r.meta = 'processed', format('%s', r);
    ASSERT (SELECT status FROM billing.purchases WHERE id = p3) = 'paid' AND pg_temp.credits(p3) = 1;
    ASSERT pg_temp.balance(u) = 5000000 + 21000000;
END $$;

-- Refunds: cumulative amount_refunded decides; floor; partial then full;
-- stale/duplicate refund events change nothing; the balance may go negative.
DO $$
DECLARE
    u text := pg_temp.u('refund');
    r billing.api_result;
    pid uuid;
    pi text;
    v_pid2 uuid;
BEGIN
    pid := pg_temp.purchase(u, 'pro');
    pi := 'pi_r_' || pid;
    r := billing.api_stripe_event(pg_temp.evt('r-0', 'payment_intent.succeeded',
            jsonb_build_object('id', pi, 'metadata', jsonb_build_object('purchase_id', pid::text))));
    ASSERT r.status = 200 AND pg_temp.balance(u) = 55000000, format('%s', r);
    r := billing.api_reconcile(u, 'gpt-4o', 20000000, 0, 'spend', NULL);   -- 50,000,000
    ASSERT r.status = 201, format('%s', r);
    ASSERT pg_temp.balance(u) = 5000000;

    -- partial: 1000 of 5000 cents -> floor(55e6 * 1000 / 5000) = 11e6
    r := billing.api_stripe_event(pg_temp.evt('r-1', 'charge.refunded',
            jsonb_build_object('id', 'ch_' || pid, 'object', 'charge', 'payment_intent', pi,
                               'amount', 5000, 'amount_refunded', 1000)));
    ASSERT r.status = 200 AND r.meta = 'processed', format('%s', r);
    ASSERT pg_temp.balance(u) = 5000000 - 11000000;
    ASSERT (SELECT status FROM billing.purchases WHERE id = pid) = 'partially_refunded';
    ASSERT (SELECT refunded_micros FROM billing.purchases WHERE id = pid) = 11000000;
    -- the same cumulative amount in another event: no change
    r := billing.api_stripe_event(pg_temp.evt('r-1b', 'charge.refunded',
            jsonb_build_object('id', 'ch_' || pid, 'payment_intent', pi, 'amount', 5000, 'amount_refunded', 1000)));
    ASSERT r.status = 200, format('%s', r);
    ASSERT pg_temp.balance(u) = -6000000;
    -- cumulative 2500 -> 27.5e6 total, debit 16.5e6 more
    r := billing.api_stripe_event(pg_temp.evt('r-2', 'charge.refunded',
            jsonb_build_object('id', 'ch_' || pid, 'payment_intent', jsonb_build_object('id', pi),
                               'amount', 5000, 'amount_refunded', 2500)));
    ASSERT r.status = 200, format('%s', r);
    ASSERT pg_temp.balance(u) = -6000000 - 16500000;
    -- stale smaller amount arriving late: no change
    r := billing.api_stripe_event(pg_temp.evt('r-stale', 'charge.refunded',
            jsonb_build_object('id', 'ch_' || pid, 'payment_intent', pi, 'amount', 5000, 'amount_refunded', 1000)));
    ASSERT r.status = 200, format('%s', r);
    ASSERT pg_temp.balance(u) = -22500000;
    ASSERT (SELECT status FROM billing.purchases WHERE id = pid) = 'partially_refunded';
    -- full refund
    r := billing.api_stripe_event(pg_temp.evt('r-3', 'charge.refunded',
            jsonb_build_object('id', 'ch_' || pid, 'payment_intent', pi, 'amount', 5000, 'amount_refunded', 5000)));
    ASSERT r.status = 200, format('%s', r);
    ASSERT pg_temp.balance(u) = 55000000 - 50000000 - 55000000;
    ASSERT (SELECT status FROM billing.purchases WHERE id = pid) = 'refunded';
    ASSERT (SELECT refunded_micros FROM billing.purchases WHERE id = pid) = 55000000;
    ASSERT (SELECT array_agg(amount_micros ORDER BY id) FROM billing.ledger_entries
             WHERE purchase_id = pid AND type = 'refund') = ARRAY[-11000000, -16500000, -27500000]::bigint[];
    ASSERT (SELECT count(*) FROM billing.outbox WHERE type = 'purchase.refunded'
             AND payload -> 'data' ->> 'purchaseId' = pid::text) = 3;
    -- a negative balance: usage is refused, the debt is shown
    r := billing.api_reconcile(u, 'gpt-4o', 1, 0, 'in-debt', NULL);
    ASSERT r.status = 402, format('%s', r);
    ASSERT (billing.api_balance(u)).body::jsonb ->> 'balanceMicros' = '-50000000';
    ASSERT (billing.api_purchase_get(u, pid)).body::jsonb ->> 'refundedMicros' = '55000000';
    -- crossing the low-balance threshold by a refund emits balance.low once
    ASSERT (SELECT count(*) FROM billing.outbox WHERE type = 'balance.low'
             AND payload -> 'data' ->> 'userId' = u) = 1;

    -- floor with an inexact ratio; found through metadata.purchase_id
    INSERT INTO billing.purchases (user_id, package_code, amount_cents, credits_micros)
    VALUES (u, 'starter', 3, 1000003) RETURNING id INTO v_pid2;
    r := billing.api_stripe_event(pg_temp.evt('f-0', 'payment_intent.succeeded',
            jsonb_build_object('id', 'pi_f_' || v_pid2, 'metadata', jsonb_build_object('purchase_id', v_pid2))));
    ASSERT r.status = 200;
    r := billing.api_stripe_event(pg_temp.evt('f-1', 'charge.refunded',
            jsonb_build_object('id', 'ch_f', 'amount', 3, 'amount_refunded', 1,
                               'metadata', jsonb_build_object('purchase_id', v_pid2))));
    ASSERT r.status = 200 AND (SELECT refunded_micros FROM billing.purchases WHERE id = v_pid2) = 333334,
        format('%s', r);
    r := billing.api_stripe_event(pg_temp.evt('f-2', 'charge.refunded',
            jsonb_build_object('id', 'ch_f', 'payment_intent', 'pi_f_' || v_pid2, 'amount', 3, 'amount_refunded', 2)));
    ASSERT (SELECT refunded_micros FROM billing.purchases WHERE id = v_pid2) = 666668;
    r := billing.api_stripe_event(pg_temp.evt('f-3', 'charge.refunded',
            jsonb_build_object('id', 'ch_f', 'payment_intent', 'pi_f_' || v_pid2, 'amount', 3, 'amount_refunded', 3)));
    ASSERT (SELECT refunded_micros FROM billing.purchases WHERE id = v_pid2) = 1000003;
    ASSERT (SELECT status FROM billing.purchases WHERE id = v_pid2) = 'refunded';
END $$;

-- Refund arriving before any payment event: the charge succeeded, so it is
-- credited once and then refunded; the late payment event credits nothing.
DO $$
DECLARE
    u text := pg_temp.u('ooo');
    r billing.api_result;
    pid uuid;
BEGIN
    pid := pg_temp.purchase(u, 'starter');
    r := billing.api_stripe_event(pg_temp.evt('o-1', 'charge.refunded',
            jsonb_build_object('id', 'ch_o', 'payment_intent', 'pi_o_' || pid, 'amount', 500, 'amount_refunded', 250,
                               'metadata', jsonb_build_object('purchase_id', pid))));
    ASSERT r.status = 200 AND r.meta = 'processed', format('%s', r);
    ASSERT pg_temp.credits(pid) = 1 AND pg_temp.balance(u) = 2500000;
    ASSERT (SELECT status FROM billing.purchases WHERE id = pid) = 'partially_refunded';
    r := billing.api_stripe_event(pg_temp.evt('o-2', 'checkout.session.completed',
                                               pg_temp.session(pid, 'paid', 'pi_o_' || pid)));
    ASSERT r.status = 200, format('%s', r);
    ASSERT pg_temp.credits(pid) = 1 AND pg_temp.balance(u) = 2500000;
    ASSERT (SELECT status FROM billing.purchases WHERE id = pid) = 'partially_refunded';
END $$;

-- Unmatched, ignored and malformed events.
DO $$
DECLARE
    r billing.api_result;
BEGIN
    r := billing.api_stripe_event(pg_temp.evt('u-1', 'payment_intent.succeeded',
            jsonb_build_object('id', 'pi_unknown', 'metadata', jsonb_build_object('purchase_id', gen_random_uuid()))));
    ASSERT r.status = 200 AND r.meta = 'unmatched' AND r.body::jsonb = '{"received": true}', format('%s', r);
    ASSERT (SELECT outcome FROM billing.stripe_events WHERE id = pg_temp.u('u-1')) = 'unmatched';
    r := billing.api_stripe_event(pg_temp.evt('u-2', 'checkout.session.completed',
            jsonb_build_object('id', 'cs_unknown', 'payment_status', 'paid', 'metadata', jsonb_build_object('purchase_id', 'not-a-uuid'))));
    ASSERT r.status = 200 AND r.meta = 'unmatched', format('%s', r);
    r := billing.api_stripe_event(pg_temp.evt('u-3', 'charge.refunded',
            jsonb_build_object('id', 'ch_unknown', 'payment_intent', 'pi_nope', 'amount', 1, 'amount_refunded', 1)));
    ASSERT r.status = 200 AND r.meta = 'unmatched', format('%s', r);
    r := billing.api_stripe_event(pg_temp.evt('u-4', 'checkout.session.completed', NULL));
    ASSERT r.status = 200 AND r.meta = 'unmatched', format('%s', r);
    -- repeated unmatched id is a duplicate
    r := billing.api_stripe_event(pg_temp.evt('u-1', 'payment_intent.succeeded', '{}'));
    ASSERT r.status = 200 AND r.meta = 'duplicate', format('%s', r);

    r := billing.api_stripe_event(pg_temp.evt('i-1', 'customer.created', '{"id": "cus_1"}'));
    ASSERT r.status = 200 AND r.meta = 'ignored' AND r.body::jsonb = '{"received": true}', format('%s', r);
    ASSERT EXISTS (SELECT 1 FROM billing.stripe_events WHERE id = pg_temp.u('i-1') AND outcome = 'ignored');

    ASSERT (billing.api_stripe_event(NULL)).status = 400;
    ASSERT (billing.api_stripe_event('[]')).code = 'invalid_request';
    ASSERT (billing.api_stripe_event('{"type": "payment_intent.succeeded"}')).status = 400;
    ASSERT (billing.api_stripe_event('{"id": "evt_x"}')).status = 400;
    ASSERT (billing.api_stripe_event('{"id": 5, "type": "x"}')).status = 400;
    ASSERT (billing.api_stripe_event('{"id": "", "type": "x"}')).status = 400;
END $$;

-- Outbox: claim (lease, SKIP LOCKED), done, retry with backoff. Done inside a
-- transaction that is rolled back, so a delivery worker sharing this database
-- is not disturbed.
BEGIN;
DO $$
DECLARE
    c record;
    n int := 0;
    e1 uuid;
    v_next timestamptz;
BEGIN
    INSERT INTO billing.outbox (type, payload, next_attempt_at)
    VALUES ('test.a', '{"x": 1}', '1970-01-01'), ('test.b', '{"x": 2}', '1970-01-02'),
           ('test.future', '{"x": 3}', now() + interval '1 hour');
    FOR c IN SELECT * FROM billing.outbox_claim(2, 30) LOOP
        n := n + 1;
        ASSERT c.type IN ('test.a', 'test.b') AND c.attempts = 1, format('%s', c);
        ASSERT c.payload::jsonb ? 'x';
        IF c.type = 'test.a' THEN
            ASSERT billing.outbox_done(c.id);
            ASSERT NOT billing.outbox_done(c.id), 'done twice';
            e1 := c.event_id;
        ELSE
            ASSERT (SELECT next_attempt_at FROM billing.outbox WHERE id = c.id) = now() + interval '30 seconds';
            ASSERT billing.outbox_retry(c.id, 'HTTP 500');
            SELECT next_attempt_at INTO v_next FROM billing.outbox WHERE id = c.id;
            ASSERT v_next = now() + interval '2 seconds', format('backoff %s', v_next - now());
            ASSERT (SELECT last_error FROM billing.outbox WHERE id = c.id) = 'HTTP 500';
        END IF;
    END LOOP;
    ASSERT n = 2, format('claimed %s', n);
    ASSERT (SELECT delivered_at FROM billing.outbox WHERE event_id = e1) IS NOT NULL;
    -- backoff grows and is capped at one hour
    UPDATE billing.outbox SET attempts = 20 WHERE type = 'test.b';
    PERFORM billing.outbox_retry((SELECT id FROM billing.outbox WHERE type = 'test.b'), 'again');
    ASSERT (SELECT next_attempt_at FROM billing.outbox WHERE type = 'test.b') = now() + interval '1 hour';
    ASSERT billing.outbox_backlog() >= 2;
    -- notification payload shape
    ASSERT (SELECT bool_and(payload ? 'id' AND payload ? 'type' AND payload ? 'createdAt' AND payload ? 'data'
                            AND payload ->> 'id' = event_id::text AND payload ->> 'type' = type)
              FROM billing.outbox WHERE type IN ('purchase.completed', 'purchase.refunded', 'balance.low'));
END $$;
ROLLBACK;

DO $$ BEGIN PERFORM pg_temp.assert_healthy(); END $$;
\echo ok 040_stripe
