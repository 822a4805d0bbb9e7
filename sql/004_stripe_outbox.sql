-- 004_stripe_outbox.sql — Stripe webhook processing (docs/spec.md §4.2) and the
-- notification outbox (docs/spec.md §4.4).

-- Stripe ids may be a string or an expanded object {"id": ...}.
CREATE FUNCTION billing._stripe_id(p jsonb) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE jsonb_typeof(p)
               WHEN 'string' THEN p #>> '{}'
               WHEN 'object' THEN p ->> 'id'
           END
$$;

-- Text to uuid without raising; NULL when not a uuid.
CREATE FUNCTION billing._uuid_or_null(p text) RETURNS uuid
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN p ~* '^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$'
                THEN p::uuid END
$$;

-- Non-negative JSON integer without raising; NULL otherwise.
CREATE FUNCTION billing._json_int(p jsonb) RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN jsonb_typeof(p) = 'number' AND p::text ~ '^[0-9]{1,15}$'
                THEN p::text::bigint END
$$;

-- Credit a LOCKED purchase once (invariant 4). Returns true if it credited now.
CREATE FUNCTION billing._purchase_credit(p billing.purchases, p_pi text, p_event_id text) RETURNS boolean
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
CREATE FUNCTION billing._purchase_refund(p billing.purchases, p_amount bigint, p_refunded bigint,
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

-- ---------------------------------------------------------------------------
-- POST /webhooks/stripe (after signature verification): the whole event in
-- one transaction. meta: processed | duplicate | ignored | unmatched.
-- ---------------------------------------------------------------------------
CREATE FUNCTION billing.api_stripe_event(p_event jsonb) RETURNS billing.api_result
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
            PERFORM _purchase_credit(v_p, v_pi, v_id);
        ELSE
            -- completed but unpaid (async payment pending): record only
            IF v_pi IS NOT NULL AND v_p.payment_intent_id IS NULL THEN
                UPDATE purchases SET payment_intent_id = v_pi, updated_at = now() WHERE id = v_p.id;
            END IF;
            v_outcome := 'ignored';
        END IF;
    WHEN 'checkout.session.async_payment_succeeded', 'payment_intent.succeeded' THEN
        PERFORM _purchase_credit(v_p, v_pi, v_id);
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
                SELECT * INTO v_p FROM purchases WHERE id = v_p.id;
            END IF;
            IF v_pi IS NOT NULL AND v_p.payment_intent_id IS NULL THEN
                UPDATE purchases SET payment_intent_id = v_pi WHERE id = v_p.id;
            END IF;
            PERFORM _purchase_refund(v_p, v_amount, v_ar, v_id);
        END IF;
    END CASE;

    UPDATE stripe_events SET outcome = v_outcome, purchase_id = v_p.id WHERE id = v_id;
    RETURN _r(200, NULL, c_ok, v_outcome);
END
$$;

-- ---------------------------------------------------------------------------
-- Outbox delivery (at least once). Claiming leases rows by pushing
-- next_attempt_at forward, so other workers/pods skip them meanwhile.
-- attempts counts delivery attempts started.
-- ---------------------------------------------------------------------------
CREATE FUNCTION billing.outbox_claim(p_limit int, p_lease_seconds int)
RETURNS TABLE (id bigint, event_id uuid, type text, payload text, attempts int)
LANGUAGE sql SECURITY DEFINER SET search_path = billing, pg_temp AS $$
    WITH due AS (
        SELECT o.id
          FROM billing.outbox o
         WHERE o.delivered_at IS NULL AND o.next_attempt_at <= now()
         ORDER BY o.next_attempt_at, o.id
         LIMIT greatest(1, least(coalesce(p_limit, 10), 1000))
           FOR UPDATE SKIP LOCKED)
    UPDATE billing.outbox o
       SET next_attempt_at = now() + make_interval(secs => greatest(1, least(coalesce(p_lease_seconds, 60), 3600))),
           attempts = o.attempts + 1
      FROM due
     WHERE o.id = due.id
    RETURNING o.id, o.event_id, o.type, o.payload::text, o.attempts
$$;

CREATE FUNCTION billing.outbox_done(p_id bigint) RETURNS boolean
LANGUAGE sql SECURITY DEFINER SET search_path = billing, pg_temp AS $$
    WITH u AS (
        UPDATE billing.outbox SET delivered_at = now(), last_error = NULL
         WHERE id = p_id AND delivered_at IS NULL
        RETURNING 1)
    SELECT EXISTS (SELECT 1 FROM u)
$$;

-- Exponential backoff: 2^attempts seconds, capped at one hour.
CREATE FUNCTION billing.outbox_retry(p_id bigint, p_error text) RETURNS boolean
LANGUAGE sql SECURITY DEFINER SET search_path = billing, pg_temp AS $$
    WITH u AS (
        UPDATE billing.outbox
           SET next_attempt_at = now() + make_interval(secs => least(3600, power(2, least(greatest(attempts, 1), 12))::int)),
               last_error = left(p_error, 2000)
         WHERE id = p_id AND delivered_at IS NULL
        RETURNING 1)
    SELECT EXISTS (SELECT 1 FROM u)
$$;

CREATE FUNCTION billing.outbox_backlog() RETURNS bigint
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = billing, pg_temp AS $$
    SELECT count(*) FROM billing.outbox WHERE delivered_at IS NULL
$$;

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA billing FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    billing.api_stripe_event(jsonb),
    billing.outbox_claim(int, int),
    billing.outbox_done(bigint),
    billing.outbox_retry(bigint, text),
    billing.outbox_backlog()
TO billing_app;
