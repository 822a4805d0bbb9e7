-- purchases.sql — POST /api/purchases and GET /api/purchases/{id}
-- (docs/spec.md §4, §4.5): a pending purchase (step 1), the Checkout Session
-- stored (step 3) or the purchase failed (Stripe error), and the owner's view.
-- The Stripe events that pay or refund it are stripe_event.sql.

-- Purchase body. p_full adds checkout fields (even when NULL), timestamps and refunds.
CREATE OR REPLACE FUNCTION billing._purchase_body(p billing.purchases, p_full boolean) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = billing, pg_temp AS $$
    SELECT jsonb_build_object(
        'purchaseId', p.id::text,
        'packageCode', p.package_code,
        'amountCents', p.amount_cents,
        'currency', p.currency,
        'creditsMicros', p.credits_micros,
        'status', p.status)
      || CASE WHEN p_full OR p.checkout_session_id IS NOT NULL OR p.checkout_url IS NOT NULL
              THEN jsonb_build_object('checkoutSessionId', p.checkout_session_id,
                                      'checkoutUrl', p.checkout_url)
              ELSE '{}'::jsonb END
      || CASE WHEN p_full
              THEN jsonb_build_object('refundedMicros', p.refunded_micros,
                                      'createdAt', _ts(p.created_at),
                                      'updatedAt', _ts(p.updated_at))
              ELSE '{}'::jsonb END
$$;

-- The answer for a purchase row: 404 when there is none (all fields NULL).
CREATE OR REPLACE FUNCTION billing._purchase_answer(p billing.purchases, p_status int, p_full boolean)
RETURNS billing.api_result LANGUAGE sql STABLE SET search_path = billing, pg_temp AS $$
    SELECT CASE WHEN p.id IS NULL THEN _r(404, 'not_found', 'No such purchase', NULL)
                ELSE _r(p_status, NULL, _purchase_body(p, p_full)::text, NULL) END
$$;

-- The answer names the package ("packageName") for the Checkout line item.
CREATE OR REPLACE FUNCTION billing.api_purchase_create(p_user text, p_package text)
RETURNS billing.api_result
LANGUAGE plpgsql SECURITY DEFINER SET search_path = billing, pg_temp AS $$
DECLARE
    v_err text := coalesce(_check_user_id(p_user), _check_package_code(p_package));
    v_pkg credit_packages;
    v_p   purchases;
BEGIN
    IF v_err IS NOT NULL THEN
        RETURN _r(400, 'invalid_request', v_err, NULL);
    END IF;
    SELECT * INTO v_pkg FROM credit_packages WHERE code = p_package AND active;
    IF NOT FOUND THEN
        RETURN _r(422, 'unknown_package', format('Unknown package %s', p_package), NULL);
    END IF;
    INSERT INTO purchases (user_id, package_code, amount_cents, currency, credits_micros)
    VALUES (p_user, v_pkg.code, v_pkg.price_cents, v_pkg.currency, v_pkg.credits_micros)
    RETURNING * INTO v_p;
    RETURN _r(201, NULL,
              (_purchase_body(v_p, false) || jsonb_build_object('packageName', v_pkg.name))::text,
              NULL);
END
$$;
GRANT EXECUTE ON FUNCTION billing.api_purchase_create(text, text) TO billing_app;

CREATE OR REPLACE FUNCTION billing.api_purchase_session(p_purchase uuid, p_session_id text, p_url text)
RETURNS billing.api_result
LANGUAGE plpgsql SECURITY DEFINER SET search_path = billing, pg_temp AS $$
DECLARE
    v_p purchases;
BEGIN
    IF p_session_id IS NULL OR p_session_id = '' THEN
        RETURN _r(400, 'invalid_request', 'checkout session id is required', NULL);
    END IF;
    UPDATE purchases
       SET checkout_session_id = p_session_id, checkout_url = p_url, updated_at = now()
     WHERE id = p_purchase
    RETURNING * INTO v_p;
    RETURN _purchase_answer(v_p, 201, false);
END
$$;
GRANT EXECUTE ON FUNCTION billing.api_purchase_session(uuid, text, text) TO billing_app;

CREATE OR REPLACE FUNCTION billing.api_purchase_fail(p_purchase uuid, p_reason text) RETURNS billing.api_result
LANGUAGE plpgsql SECURITY DEFINER SET search_path = billing, pg_temp AS $$
BEGIN
    UPDATE purchases
       SET status = 'failed', failure_reason = left(coalesce(p_reason, 'stripe error'), 1000),
           updated_at = now()
     WHERE id = p_purchase AND status = 'pending';
    RETURN _r(502, 'stripe_error',
              format('The payment provider could not create a checkout session (%s); the purchase was marked failed and nothing was charged',
                     left(coalesce(p_reason, 'unknown error'), 200)),
              NULL);
END
$$;
GRANT EXECUTE ON FUNCTION billing.api_purchase_fail(uuid, text) TO billing_app;

CREATE OR REPLACE FUNCTION billing.api_purchase_get(p_user text, p_purchase uuid) RETURNS billing.api_result
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = billing, pg_temp AS $$
DECLARE
    v_p purchases;
BEGIN
    SELECT * INTO v_p FROM purchases WHERE id = p_purchase AND user_id = p_user;
    RETURN _purchase_answer(v_p, 200, true);
END
$$;
GRANT EXECUTE ON FUNCTION billing.api_purchase_get(text, uuid) TO billing_app;
