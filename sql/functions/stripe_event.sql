-- stripe_event.sql — POST /webhooks/stripe after the module verified the
-- signature (docs/spec.md §4.2): the whole event in one transaction; a payment
-- credits its purchase exactly once (invariant 4), a refund debits what the
-- charge's cumulative amount_refunded says, a dispute debits once and a won
-- dispute credits that back once.

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

-- One ledger entry of a dispute on the LOCKED account of a purchase: the
-- debit ('dispute', may leave a debt) or the credit back
-- ('dispute_reversal'); its key names the dispute, so the unique (user_id,
-- idempotency_key) allows each once.
CREATE OR REPLACE FUNCTION billing._dispute_entry(p billing.purchases, p_dispute text, p_type text,
                                                  p_amount bigint, p_event_id text) RETURNS void
LANGUAGE plpgsql SET search_path = billing, pg_temp AS $$
DECLARE
    v_bal bigint;
    v_new bigint;
BEGIN
    SELECT balance_micros INTO v_bal FROM accounts WHERE user_id = p.user_id FOR UPDATE;
    v_new := v_bal + p_amount;
    INSERT INTO ledger_entries (user_id, type, amount_micros, balance_after_micros, idempotency_key,
                                purchase_id, stripe_event_id, dispute_id)
    VALUES (p.user_id, p_type, p_amount, v_new, p_type || ' ' || p_dispute, p.id, p_event_id, p_dispute);
    UPDATE accounts SET balance_micros = v_new, updated_at = now() WHERE user_id = p.user_id;
    PERFORM _balance_changed(p.user_id, v_bal, v_new);
END
$$;

-- charge.dispute.created / charge.dispute.closed for a LOCKED, credited
-- purchase (docs/spec.md §4.2): the dispute debits floor(creditsMicros x
-- dispute amount / charge amount) once, and a won dispute credits that back
-- once, whatever order and however often the events arrive:
--   created, dispute unknown        -> debit
--   closed (won), dispute unknown   -> recorded as won; nothing to debit,
--                                      and a later created debits nothing
--   closed (lost...), unknown       -> debit (the money is gone; a later
--                                      created finds it done)
--   closed (won), debited           -> credit back, once
--   anything else                   -> the status is recorded, no money moves
-- Returns the outcome: processed, or ignored (no dispute id, or no amount
-- where one is needed, or a dispute id of another purchase).
CREATE OR REPLACE FUNCTION billing._dispute_event(p billing.purchases, p_type text, p_obj jsonb,
                                                  p_event_id text) RETURNS text
LANGUAGE plpgsql SET search_path = billing, pg_temp AS $$
DECLARE
    v_id     text := CASE WHEN jsonb_typeof(p_obj -> 'id') = 'string' THEN p_obj ->> 'id' END;
    v_status text := coalesce(p_obj ->> 'status', '');
    v_amount bigint := _json_int(p_obj -> 'amount');
    v_closed boolean := p_type = 'charge.dispute.closed';
    v_debit  bigint;
    v_d      disputes;
BEGIN
    IF v_id IS NULL OR length(v_id) NOT BETWEEN 1 AND 255 THEN
        RETURN 'ignored';
    END IF;
    SELECT * INTO v_d FROM disputes WHERE id = v_id FOR UPDATE;

    IF NOT FOUND THEN
        IF v_closed AND v_status = 'won' THEN
            INSERT INTO disputes (id, purchase_id, user_id, amount_cents, status)
            VALUES (v_id, p.id, p.user_id, coalesce(v_amount, 0), v_status);
            RETURN 'processed';
        END IF;
        IF v_amount IS NULL THEN
            RETURN 'ignored';
        END IF;
        -- exact (numeric, no float), at most what the purchase credited
        v_debit := least(floor(p.credits_micros::numeric * least(v_amount, p.amount_cents)
                               / p.amount_cents)::bigint, p.credits_micros);
        INSERT INTO disputes (id, purchase_id, user_id, amount_cents, status, debited_micros)
        VALUES (v_id, p.id, p.user_id, v_amount, v_status, v_debit);
        IF v_debit > 0 THEN
            PERFORM _dispute_entry(p, v_id, 'dispute', -v_debit, p_event_id);
        END IF;
        RETURN 'processed';
    END IF;

    IF v_d.purchase_id <> p.id THEN
        RETURN 'ignored';
    END IF;
    IF NOT v_closed THEN
        RETURN 'processed';           -- once per dispute id
    END IF;
    IF v_status = 'won' AND v_d.debited_micros > 0 AND v_d.credited_back_micros = 0 THEN
        PERFORM _dispute_entry(p, v_id, 'dispute_reversal', v_d.debited_micros, p_event_id);
        v_d.credited_back_micros := v_d.debited_micros;
    END IF;
    UPDATE disputes
       SET status = v_status, credited_back_micros = v_d.credited_back_micros, updated_at = now()
     WHERE id = v_id;
    RETURN 'processed';
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
    ELSIF v_type IN ('charge.refunded', 'charge.dispute.created', 'charge.dispute.closed') THEN
        -- a charge or a dispute of one: its payment intent, else our metadata
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
    WHEN 'charge.dispute.created', 'charge.dispute.closed' THEN
        -- a disputed charge was a successful charge: credit first if we have
        -- not seen the payment yet (events may arrive in any order)
        IF _purchase_credit(v_p, v_pi, v_id) THEN
            v_credited := v_p.credits_micros;
            SELECT * INTO v_p FROM purchases WHERE id = v_p.id;
        END IF;
        v_outcome := _dispute_event(v_p, v_type, v_obj, v_id);
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
