-- purchases.sql — POST /api/purchases, GET /api/purchases and GET /api/purchases/{id}
-- (docs/spec.md §4, §4.5): a pending purchase (step 1), the Checkout Session
-- stored (step 3) or the purchase failed (Stripe error), and the owner's view.
-- The Stripe events that pay or refund it are stripe_event.sql.

-- Purchase body, identifier first (docs/api.md "Answers"). The checkout
-- fields come when a session exists (always when p_full, then possibly
-- null); p_full adds refunds and timestamps; p_extra (the package's name for
-- the Checkout line item) comes last.
CREATE OR REPLACE FUNCTION billing._purchase_body(p billing.purchases, p_full boolean,
                                                  p_package_name text DEFAULT NULL) RETURNS json
LANGUAGE sql STABLE SET search_path = billing, pg_temp AS $$
    SELECT json_object_agg(k, v ORDER BY n)
      FROM (VALUES (1, 'purchaseId', to_json(p.id::text)),
                   (2, 'packageCode', to_json(p.package_code)),
                   (3, 'amountCents', to_json(p.amount_cents)),
                   (4, 'currency', to_json(p.currency)),
                   (5, 'creditsMicros', to_json(p.credits_micros)),
                   (6, 'status', to_json(p.status)),
                   (7, 'checkoutSessionId', to_json(p.checkout_session_id)),
                   (8, 'checkoutUrl', to_json(p.checkout_url)),
                   (9, 'refundedMicros', to_json(p.refunded_micros)),
                   (10, 'createdAt', to_json(_ts(p.created_at))),
                   (11, 'updatedAt', to_json(_ts(p.updated_at))),
                   (12, 'packageName', to_json(p_package_name))) f(n, k, v)
     WHERE n <= 6
        OR (n <= 8 AND (p_full OR p.checkout_session_id IS NOT NULL OR p.checkout_url IS NOT NULL))
        OR (n <= 11 AND p_full)
        OR (n = 12 AND p_package_name IS NOT NULL)
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
              _purchase_body(v_p, false, v_pkg.name)::text,
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

-- GET /api/purchases?limit=&cursor=: the caller's purchases, newest first
-- (created_at, then id), after p_after (the last purchase of the previous
-- page, which the module turns into the opaque cursor and back); meta = the
-- last id shown when more purchases exist.
CREATE OR REPLACE FUNCTION billing.api_purchases(p_user text, p_limit int, p_after uuid)
RETURNS billing.api_result
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = billing, pg_temp AS $$
DECLARE
    v_limit int := coalesce(p_limit, 50);
    v_err   text := coalesce(_check_user_id(p_user),
                             -- the module's own words (it checks the limit first)
                             CASE WHEN v_limit NOT BETWEEN 1 AND 200
                                  THEN 'limit must be an integer from 1 to 200' END);
    v_after timestamptz;
    v_list  json;
    v_more  boolean;
    v_last  uuid;
BEGIN
    IF v_err IS NOT NULL THEN
        RETURN _r(400, 'invalid_request', v_err, NULL);
    END IF;
    IF p_after IS NOT NULL THEN
        SELECT created_at INTO v_after FROM purchases WHERE id = p_after AND user_id = p_user;
        IF NOT FOUND THEN
            RETURN _r(400, 'invalid_request', 'cursor is not valid', NULL);
        END IF;
    END IF;

    SELECT coalesce(json_agg(_purchase_body(t.p, true) ORDER BY t.rn) FILTER (WHERE t.rn <= v_limit),
                    '[]'::json),
           coalesce(bool_or(t.rn > v_limit), false),
           (array_agg((t.p).id ORDER BY t.rn DESC) FILTER (WHERE t.rn <= v_limit))[1]
      INTO v_list, v_more, v_last
      FROM (SELECT p, row_number() OVER (ORDER BY p.created_at DESC, p.id DESC) AS rn
              FROM purchases p
             WHERE p.user_id = p_user
               AND (p_after IS NULL OR (p.created_at, p.id) < (v_after, p_after))
             ORDER BY p.created_at DESC, p.id DESC
             LIMIT v_limit + 1) t;

    RETURN _r(200, NULL, json_build_object('purchases', v_list)::text,
              CASE WHEN v_more THEN v_last::text END);
END
$$;
GRANT EXECUTE ON FUNCTION billing.api_purchases(text, int, uuid) TO billing_app;
