-- 006: answers carry what callers need without another round trip.
--   * a Stripe event that credited a purchase says how much
--     ("creditedMicros"): the module counts purchased credits from it;
--   * a new purchase names its package ("packageName") for the Checkout
--     line item.

-- The event logic stays as it is; a thin wrapper adds the credit it made.
ALTER FUNCTION billing.api_stripe_event(jsonb) RENAME TO _stripe_event_apply;
REVOKE ALL ON FUNCTION billing._stripe_event_apply(jsonb) FROM billing_app;

CREATE FUNCTION billing.api_stripe_event(p_event jsonb) RETURNS billing.api_result
LANGUAGE plpgsql SECURITY DEFINER SET search_path = billing, pg_temp AS $$
DECLARE
    r        api_result;
    v_credit bigint;
BEGIN
    r := _stripe_event_apply(p_event);
    IF r.meta = 'processed' THEN
        -- one credit per purchase (ledger_one_credit_per_purchase)
        SELECT e.amount_micros INTO v_credit
          FROM stripe_events s
          JOIN ledger_entries e ON e.purchase_id = s.purchase_id AND e.type = 'purchase'
         WHERE s.id = p_event ->> 'id' AND e.stripe_event_id = s.id;
        IF v_credit IS NOT NULL THEN
            r.body := jsonb_set(r.body::jsonb, '{creditedMicros}', to_jsonb(v_credit))::text;
        END IF;
    END IF;
    RETURN r;
END
$$;

CREATE OR REPLACE FUNCTION billing.api_purchase_create(p_user text, p_package text)
RETURNS billing.api_result
LANGUAGE plpgsql SECURITY DEFINER SET search_path = billing, pg_temp AS $$
DECLARE
    v_pkg credit_packages;
    v_p   purchases;
BEGIN
    IF NOT _valid_user(p_user) THEN
        RETURN _r(400, 'invalid_request', 'userId must be 1..255 characters', NULL);
    END IF;
    SELECT * INTO v_pkg FROM credit_packages WHERE code = p_package AND active;
    IF NOT FOUND THEN
        RETURN _r(422, 'unknown_package', format('Unknown package %s', coalesce(p_package, '(null)')), NULL);
    END IF;
    INSERT INTO purchases (user_id, package_code, amount_cents, currency, credits_micros)
    VALUES (p_user, v_pkg.code, v_pkg.price_cents, v_pkg.currency, v_pkg.credits_micros)
    RETURNING * INTO v_p;
    RETURN _r(201, NULL,
              (_purchase_body(v_p, false) || jsonb_build_object('packageName', v_pkg.name))::text,
              NULL);
END
$$;

REVOKE ALL ON FUNCTION billing.api_stripe_event(jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION billing.api_stripe_event(jsonb) TO billing_app;
