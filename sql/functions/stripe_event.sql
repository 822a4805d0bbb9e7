-- stripe_event.sql — POST /webhooks/stripe after the module verified the
-- signature (docs/spec.md §4.2): the whole event in one transaction; a payment
-- credits its purchase exactly once (invariant 4), a refund debits what the
-- charge's cumulative amount_refunded says.

-- Stripe ids may be a string or an expanded object {"id": ...}.
CREATE OR REPLACE FUNCTION billing._stripe_id(p jsonb) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE jsonb_typeof(p)
               WHEN 'string' THEN p #>> '{}'
               WHEN 'object' THEN p ->> 'id'
           END
$$;

-- Text to uuid without raising; NULL when not a uuid.
CREATE OR REPLACE FUNCTION billing._uuid_or_null(p text) RETURNS uuid
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN p ~* '^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$'
                THEN p::uuid END
$$;

-- Non-negative JSON integer without raising; NULL otherwise.
CREATE OR REPLACE FUNCTION billing._json_int(p jsonb) RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN jsonb_typeof(p) = 'number' AND p::text ~ '^[0-9]{1,15}$'
                THEN p::text::bigint END
$$;

-- Credit a LOCKED purchase once (invariant 4). Returns true if it credited now.
CREATE OR REPLACE FUNCTION billing._purchase_credit(p billing.purchases, p_pi text, p_event_id text) RETURNS boolean
LANGUAGE plpgsql SET search_path = billing, pg_temp AS $$
DECLARE
    v_bal bigint;
    v_new bigint;
BEGIN
    IF p.status NOT IN ('pending', 'failed') THEN
        IF p_pi IS NOT NULL AND p.payment_intent_id IS NULL THEN
            UPDATE purchases SET payment_intent_id = p_pi, updated_at = now() WHERE id = p.id;
        END IF;
        RETURN false;
    END IF;

    INSERT INTO accounts (user_id) VALUES (p.user_id) ON CONFLICT (user_id) DO NOTHING;
    SELECT balance_micros INTO v_bal FROM accounts WHERE user_id = p.user_id FOR UPDATE;
    v_new := v_bal + p.credits_micros;

    INSERT INTO ledger_entries (user_id, type, amount_micros, balance_after_micros, idempotency_key,
                                purchase_id, stripe_event_id)
    VALUES (p.user_id, 'purchase', p.credits_micros, v_new, 'purchase ' || p.id::text,
            p.id, p_event_id);
    UPDATE accounts SET balance_micros = v_new, updated_at = now() WHERE user_id = p.user_id;
    UPDATE purchases
       SET status = 'paid', payment_intent_id = coalesce(p_pi, payment_intent_id), updated_at = now()
     WHERE id = p.id;

    PERFORM _emit('purchase.completed', jsonb_build_object(
        'purchaseId', p.id::text, 'userId', p.user_id, 'packageCode', p.package_code,
        'amountCents', p.amount_cents, 'currency', p.currency,
        'creditsMicros', p.credits_micros, 'balanceMicros', v_new));
    RETURN true;
END
$$;

-- Apply a charge.refunded to a LOCKED, credited purchase.
CREATE OR REPLACE FUNCTION billing._purchase_refund(p billing.purchases, p_amount bigint, p_refunded bigint,
                                         p_event_id text) RETURNS void
LANGUAGE plpgsql SET search_path = billing, pg_temp AS $$
DECLARE
    v_ar     bigint := least(p_refunded, p_amount);
    v_target bigint;
    v_delta  bigint;
    v_bal    bigint;
    v_new    bigint;
    v_status text;
BEGIN
    -- floor(creditsMicros * amount_refunded / amount), exact (numeric, no float)
    v_target := least(floor(p.credits_micros::numeric * v_ar / p_amount)::bigint, p.credits_micros);
    v_delta := v_target - p.refunded_micros;

    v_status := CASE
        WHEN p.status = 'refunded' OR v_ar >= p_amount THEN 'refunded'
        WHEN v_ar > 0 THEN 'partially_refunded'
        ELSE p.status END;

    IF v_delta > 0 THEN
        SELECT balance_micros INTO v_bal FROM accounts WHERE user_id = p.user_id FOR UPDATE;
        v_new := v_bal - v_delta;     -- may go below zero: the debt is the user's
        INSERT INTO ledger_entries (user_id, type, amount_micros, balance_after_micros, idempotency_key,
                                    purchase_id, stripe_event_id)
        VALUES (p.user_id, 'refund', -v_delta, v_new,
                'refund ' || p.id::text || ' ' || v_ar::text, p.id, p_event_id);
        UPDATE accounts SET balance_micros = v_new, updated_at = now() WHERE user_id = p.user_id;
        UPDATE purchases SET refunded_micros = v_target, status = v_status, updated_at = now()
         WHERE id = p.id;
        PERFORM _emit('purchase.refunded', jsonb_build_object(
            'purchaseId', p.id::text, 'userId', p.user_id, 'status', v_status,
            'amountRefundedCents', v_ar, 'refundedMicros', v_target,
            'debitedMicros', v_delta, 'balanceMicros', v_new));
        PERFORM _balance_changed(p.user_id, v_bal, v_new);
    ELSIF v_status <> p.status THEN
        UPDATE purchases SET status = v_status, updated_at = now() WHERE id = p.id;
    END IF;
END
$$;

-- meta: processed | duplicate | ignored | unmatched. A processed event that
-- credited a purchase answers {"received": true, "creditedMicros": N}.
CREATE OR REPLACE FUNCTION billing.api_stripe_event(p_event jsonb) RETURNS billing.api_result
LANGUAGE plpgsql SECURITY DEFINER SET search_path = billing, pg_temp AS $$
DECLARE
    v_id      text;
    v_type    text;
    v_obj     jsonb;
    v_pid     uuid;
    v_pi      text;
    v_p       purchases;
    v_amount  bigint;
    v_ar      bigint;
    v_outcome text := 'processed';
    v_credited bigint;           -- what this event credited, if anything
    c_ok CONSTANT text := '{"received": true}';
BEGIN
    IF p_event IS NULL OR jsonb_typeof(p_event) <> 'object'
       OR jsonb_typeof(p_event -> 'id') IS DISTINCT FROM 'string'
       OR jsonb_typeof(p_event -> 'type') IS DISTINCT FROM 'string' THEN
        RETURN _r(400, 'invalid_request', 'event must be an object with string id and type', NULL);
    END IF;
    v_id := p_event ->> 'id';
    v_type := p_event ->> 'type';
    IF length(v_id) NOT BETWEEN 1 AND 255 OR length(v_type) NOT BETWEEN 1 AND 255 THEN
        RETURN _r(400, 'invalid_request', 'event id and type must be 1..255 characters', NULL);
    END IF;

    INSERT INTO stripe_events (id, type) VALUES (v_id, v_type) ON CONFLICT (id) DO NOTHING;
    IF NOT FOUND THEN
        RETURN _r(200, NULL, '{"received": true, "duplicate": true}', 'duplicate');
    END IF;

    v_obj := p_event -> 'data' -> 'object';
    IF jsonb_typeof(v_obj) IS DISTINCT FROM 'object' THEN
        v_obj := '{}'::jsonb;
    END IF;

    -- Find the purchase.
    IF v_type IN ('checkout.session.completed', 'checkout.session.async_payment_succeeded',
                  'checkout.session.async_payment_failed', 'checkout.session.expired') THEN
        v_pi := _stripe_id(v_obj -> 'payment_intent');
        v_pid := coalesce(_uuid_or_null(v_obj -> 'metadata' ->> 'purchase_id'),
                          _uuid_or_null(v_obj ->> 'client_reference_id'));
        IF v_pid IS NULL AND v_obj ->> 'id' IS NOT NULL THEN
            SELECT id INTO v_pid FROM purchases WHERE checkout_session_id = v_obj ->> 'id' LIMIT 1;
        END IF;
    ELSIF v_type = 'payment_intent.succeeded' THEN
        v_pi := v_obj ->> 'id';
        v_pid := _uuid_or_null(v_obj -> 'metadata' ->> 'purchase_id');
        IF v_pid IS NULL AND v_pi IS NOT NULL THEN
            SELECT id INTO v_pid FROM purchases WHERE payment_intent_id = v_pi LIMIT 1;
        END IF;
    ELSIF v_type = 'charge.refunded' THEN
        v_pi := _stripe_id(v_obj -> 'payment_intent');
        IF v_pi IS NOT NULL THEN
            SELECT id INTO v_pid FROM purchases WHERE payment_intent_id = v_pi LIMIT 1;
        END IF;
        IF v_pid IS NULL THEN
            v_pid := _uuid_or_null(v_obj -> 'metadata' ->> 'purchase_id');
        END IF;
    ELSE
        UPDATE stripe_events SET outcome = 'ignored' WHERE id = v_id;
        RETURN _r(200, NULL, c_ok, 'ignored');
    END IF;

    IF v_pid IS NOT NULL THEN
        SELECT * INTO v_p FROM purchases WHERE id = v_pid FOR UPDATE;
    END IF;
    IF v_pid IS NULL OR v_p.id IS NULL THEN
        -- Unknown purchase: record and acknowledge (Stripe would retry forever).
        UPDATE stripe_events SET outcome = 'unmatched' WHERE id = v_id;
        RETURN _r(200, NULL, c_ok, 'unmatched');
    END IF;

    CASE v_type
    WHEN 'checkout.session.completed' THEN
        IF v_obj ->> 'payment_status' = 'paid' THEN
            IF _purchase_credit(v_p, v_pi, v_id) THEN
                v_credited := v_p.credits_micros;
            END IF;
        ELSE
            -- completed but unpaid (async payment pending): record only
            IF v_pi IS NOT NULL AND v_p.payment_intent_id IS NULL THEN
                UPDATE purchases SET payment_intent_id = v_pi, updated_at = now() WHERE id = v_p.id;
            END IF;
            v_outcome := 'ignored';
        END IF;
    WHEN 'checkout.session.async_payment_succeeded', 'payment_intent.succeeded' THEN
        IF _purchase_credit(v_p, v_pi, v_id) THEN
            v_credited := v_p.credits_micros;
        END IF;
    WHEN 'checkout.session.async_payment_failed', 'checkout.session.expired' THEN
        IF v_p.status = 'pending' THEN
            UPDATE purchases SET status = 'failed', failure_reason = v_type, updated_at = now()
             WHERE id = v_p.id;
        END IF;
    WHEN 'charge.refunded' THEN
        v_amount := coalesce(_json_int(v_obj -> 'amount'), v_p.amount_cents);
        v_ar := _json_int(v_obj -> 'amount_refunded');
        IF v_ar IS NULL OR v_amount <= 0 THEN
            v_outcome := 'ignored';
        ELSE
            -- A refunded charge was a successful charge: credit first if we
            -- have not seen the payment yet (events may arrive in any order).
            IF _purchase_credit(v_p, v_pi, v_id) THEN
                v_credited := v_p.credits_micros;
                SELECT * INTO v_p FROM purchases WHERE id = v_p.id;
            END IF;
            IF v_pi IS NOT NULL AND v_p.payment_intent_id IS NULL THEN
                UPDATE purchases SET payment_intent_id = v_pi WHERE id = v_p.id;
            END IF;
            PERFORM _purchase_refund(v_p, v_amount, v_ar, v_id);
        END IF;
    END CASE;

    UPDATE stripe_events SET outcome = v_outcome, purchase_id = v_p.id WHERE id = v_id;
    IF v_credited IS NOT NULL THEN
        -- the module counts purchased credits from "creditedMicros"
        RETURN _r(200, NULL, json_build_object('received', true, 'creditedMicros', v_credited)::text,
                  v_outcome);
    END IF;
    RETURN _r(200, NULL, c_ok, v_outcome);
END
$$;

GRANT EXECUTE ON FUNCTION billing.api_stripe_event(jsonb) TO billing_app;
