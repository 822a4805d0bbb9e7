-- 003_api.sql — API functions: packages, balance, ledger, reconcile, holds,
-- purchases, readyz. Every API function returns exactly one row
-- (status int, code text, body text, meta text) — see docs/design-contract.md.
--
-- All api_* functions are SECURITY DEFINER (owner = schema owner) with a fixed
-- search_path; billing_app only gets EXECUTE on them.

CREATE TYPE billing.api_result AS (status int, code text, body text, meta text);

-- ---------------------------------------------------------------------------
-- Internal helpers (not executable by billing_app)
-- ---------------------------------------------------------------------------
CREATE FUNCTION billing._r(p_status int, p_code text, p_body text, p_meta text)
RETURNS billing.api_result LANGUAGE sql IMMUTABLE AS $$
    SELECT ROW(p_status, p_code, p_body, p_meta)::billing.api_result
$$;

-- RFC 3339 UTC with microseconds.
CREATE FUNCTION billing._ts(p_ts timestamptz) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT to_char(p_ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
$$;

CREATE FUNCTION billing._fingerprint(p_canonical text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT encode(sha256(convert_to(p_canonical, 'UTF8')), 'hex')
$$;

CREATE FUNCTION billing._valid_user(p_user text) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT p_user IS NOT NULL AND length(p_user) BETWEEN 1 AND 255
$$;

-- Client idempotency keys: 1..255 printable ASCII characters without space.
CREATE FUNCTION billing._valid_key(p_key text) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT p_key IS NOT NULL AND p_key ~ '^[!-~]{1,255}$'
$$;

-- balance.low threshold: GUC billing.balance_low_threshold_micros if set,
-- else billing.settings, else 1,000,000.
CREATE FUNCTION billing._low_threshold() RETURNS bigint
LANGUAGE plpgsql STABLE SET search_path = billing, pg_temp AS $$
DECLARE
    v_guc text := current_setting('billing.balance_low_threshold_micros', true);
    v bigint;
BEGIN
    IF v_guc ~ '^\s*[0-9]{1,18}\s*$' THEN
        RETURN trim(v_guc)::bigint;
    END IF;
    SELECT balance_low_threshold_micros INTO v FROM settings LIMIT 1;
    RETURN coalesce(v, 1000000);
END
$$;

-- Write an outbox notification in the current transaction.
CREATE FUNCTION billing._emit(p_type text, p_data jsonb) RETURNS void
LANGUAGE plpgsql SET search_path = billing, pg_temp AS $$
DECLARE
    v_enabled boolean;
    v_eid uuid := gen_random_uuid();
BEGIN
    SELECT outbox_enabled INTO v_enabled FROM settings LIMIT 1;
    IF NOT coalesce(v_enabled, true) THEN
        RETURN;
    END IF;
    INSERT INTO outbox (event_id, type, payload)
    VALUES (v_eid, p_type,
            jsonb_build_object('id', v_eid::text, 'type', p_type,
                               'createdAt', _ts(now()), 'data', p_data));
END
$$;

-- Emit balance.low when a balance crosses from >= threshold to < threshold.
CREATE FUNCTION billing._balance_changed(p_user text, p_before bigint, p_after bigint) RETURNS void
LANGUAGE plpgsql SET search_path = billing, pg_temp AS $$
DECLARE
    v_thr bigint := _low_threshold();
BEGIN
    IF p_before >= v_thr AND p_after < v_thr THEN
        PERFORM _emit('balance.low', jsonb_build_object(
            'userId', p_user, 'balanceMicros', p_after, 'thresholdMicros', v_thr));
    END IF;
END
$$;

-- Price row in force now for a model (NULL fields when none).
CREATE FUNCTION billing._price_in_force(p_model text) RETURNS billing.model_prices
LANGUAGE sql STABLE SET search_path = billing, pg_temp AS $$
    SELECT * FROM model_prices
    WHERE model = p_model AND effective_from <= now()
    ORDER BY effective_from DESC
    LIMIT 1
$$;

-- ceil((in*inPrice + out*outPrice) / 1e6) in bigint; NULL if it would overflow.
CREATE FUNCTION billing._charge(p_in bigint, p_out bigint, p_in_price bigint, p_out_price bigint)
RETURNS bigint LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    c_max CONSTANT bigint := 9223372036854775807 - 999999;
    v_a bigint;
BEGIN
    IF p_in < 0 OR p_out < 0 OR p_in_price < 0 OR p_out_price < 0 THEN
        RETURN NULL;
    END IF;
    IF p_in > 0 AND p_in_price > c_max / p_in THEN
        RETURN NULL;
    END IF;
    v_a := p_in * p_in_price;
    IF p_out > 0 AND p_out_price > (c_max - v_a) / p_out THEN
        RETURN NULL;
    END IF;
    RETURN (v_a + p_out * p_out_price + 999999) / 1000000;
END
$$;

CREATE FUNCTION billing._usage_body(e billing.ledger_entries, p_replayed boolean) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'entryId', e.id::text,
        'userId', e.user_id,
        'model', e.model,
        'inputTokens', e.input_tokens,
        'outputTokens', e.output_tokens,
        'chargedMicros', -e.amount_micros,
        'balanceMicros', e.balance_after_micros,
        'replayed', p_replayed)
$$;

-- Answer for an existing ledger entry with the same (user, key).
CREATE FUNCTION billing._usage_replay(e billing.ledger_entries, p_fp text) RETURNS billing.api_result
LANGUAGE sql STABLE SET search_path = billing, pg_temp AS $$
    SELECT CASE
        WHEN e.type = 'usage' AND e.request_fingerprint = p_fp
            THEN _r(201, NULL, _usage_body(e, true)::text, 'replayed')
        ELSE _r(409, 'idempotency_key_reused',
                'This idempotency key was already used with a different request body', NULL)
    END
$$;

CREATE FUNCTION billing._hold_body(h billing.holds) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = billing, pg_temp AS $$
    SELECT jsonb_build_object(
        'holdId', h.id::text,
        'userId', h.user_id,
        'heldMicros', h.amount_micros,
        'expiresAt', _ts(h.expires_at),
        'availableMicros', h.available_after_micros)
$$;

-- Purchase body. p_full adds checkout fields (even when NULL), timestamps and refunds.
CREATE FUNCTION billing._purchase_body(p billing.purchases, p_full boolean) RETURNS jsonb
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

-- Sum of the user's holds that still count (active, not expired), optionally
-- excluding one hold.
CREATE FUNCTION billing._held(p_user text, p_except uuid) RETURNS bigint
LANGUAGE sql STABLE SET search_path = billing, pg_temp AS $$
    SELECT coalesce(sum(amount_micros), 0)::bigint
    FROM holds
    WHERE user_id = p_user AND status = 'active' AND expires_at > now()
      AND id IS DISTINCT FROM p_except
$$;

-- ---------------------------------------------------------------------------
-- GET /api/packages
-- ---------------------------------------------------------------------------
CREATE FUNCTION billing.api_packages() RETURNS billing.api_result
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = billing, pg_temp AS $$
    SELECT _r(200, NULL, jsonb_build_object('packages', coalesce(
        (SELECT jsonb_agg(jsonb_build_object(
                    'code', code, 'name', name, 'priceCents', price_cents,
                    'currency', currency, 'creditsMicros', credits_micros)
                 ORDER BY price_cents, code)
         FROM credit_packages WHERE active), '[]'::jsonb))::text, NULL)
$$;

-- ---------------------------------------------------------------------------
-- GET /api/balance
-- ---------------------------------------------------------------------------
CREATE FUNCTION billing.api_balance(p_user text) RETURNS billing.api_result
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = billing, pg_temp AS $$
DECLARE
    v_bal bigint;
    v_held bigint;
BEGIN
    IF NOT _valid_user(p_user) THEN
        RETURN _r(400, 'invalid_request', 'userId must be 1..255 characters', NULL);
    END IF;
    SELECT balance_micros INTO v_bal FROM accounts WHERE user_id = p_user;
    v_bal := coalesce(v_bal, 0);
    v_held := _held(p_user, NULL);
    RETURN _r(200, NULL, jsonb_build_object(
        'userId', p_user, 'balanceMicros', v_bal,
        'heldMicros', v_held, 'availableMicros', v_bal - v_held)::text, NULL);
END
$$;

-- ---------------------------------------------------------------------------
-- GET /api/ledger: newest first, id < p_before_id; meta = cursor (last id) when
-- more entries exist.
-- ---------------------------------------------------------------------------
CREATE FUNCTION billing.api_ledger(p_user text, p_limit int, p_before_id bigint) RETURNS billing.api_result
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = billing, pg_temp AS $$
DECLARE
    v_limit int := coalesce(p_limit, 50);
    v_bal bigint;
    v_entries jsonb;
    v_more boolean;
    v_last bigint;
BEGIN
    IF NOT _valid_user(p_user) THEN
        RETURN _r(400, 'invalid_request', 'userId must be 1..255 characters', NULL);
    END IF;
    IF v_limit < 1 OR v_limit > 200 THEN
        RETURN _r(400, 'invalid_request', 'limit must be between 1 and 200', NULL);
    END IF;
    IF p_before_id IS NOT NULL AND p_before_id < 1 THEN
        RETURN _r(400, 'invalid_request', 'invalid cursor', NULL);
    END IF;

    SELECT balance_micros INTO v_bal FROM accounts WHERE user_id = p_user;

    SELECT coalesce(jsonb_agg(t.j ORDER BY t.id DESC) FILTER (WHERE t.rn <= v_limit), '[]'::jsonb),
           coalesce(bool_or(t.rn > v_limit), false),
           min(t.id) FILTER (WHERE t.rn <= v_limit)
      INTO v_entries, v_more, v_last
      FROM (SELECT s.id, s.j, row_number() OVER (ORDER BY s.id DESC) AS rn
              FROM (SELECT e.id,
                           jsonb_build_object(
                               'id', e.id::text,
                               'type', e.type,
                               'amountMicros', e.amount_micros,
                               'balanceAfterMicros', e.balance_after_micros,
                               'createdAt', _ts(e.created_at))
                           || CASE WHEN e.type = 'usage' THEN
                                  jsonb_build_object(
                                      'model', e.model,
                                      'inputTokens', e.input_tokens,
                                      'outputTokens', e.output_tokens,
                                      'idempotencyKey', e.idempotency_key)
                                  || CASE WHEN e.hold_id IS NOT NULL
                                          THEN jsonb_build_object('holdId', e.hold_id::text)
                                          ELSE '{}'::jsonb END
                              ELSE jsonb_build_object('purchaseId', e.purchase_id::text)
                              END AS j
                      FROM ledger_entries e
                     WHERE e.user_id = p_user
                       AND (p_before_id IS NULL OR e.id < p_before_id)
                     ORDER BY e.id DESC
                     LIMIT v_limit + 1) s) t;

    RETURN _r(200, NULL,
              jsonb_build_object('balanceMicros', coalesce(v_bal, 0), 'entries', v_entries)::text,
              CASE WHEN v_more THEN v_last::text END);
END
$$;

-- ---------------------------------------------------------------------------
-- POST /api/usage/reconcile (docs/spec.md §4.1, §4.3)
-- ---------------------------------------------------------------------------
CREATE FUNCTION billing.api_reconcile(p_user text, p_model text, p_input bigint, p_output bigint,
                                      p_key text, p_hold uuid DEFAULT NULL)
RETURNS billing.api_result
LANGUAGE plpgsql SECURITY DEFINER SET search_path = billing, pg_temp AS $$
DECLARE
    v_fp     text;
    v_bal    bigint;
    v_new    bigint;
    v_price  model_prices;
    v_charge bigint;
    v_hold   holds;
    v_avail  bigint;
    v_e      ledger_entries;
BEGIN
    IF NOT _valid_user(p_user) THEN
        RETURN _r(400, 'invalid_request', 'userId must be 1..255 characters', NULL);
    END IF;
    IF p_model IS NULL OR length(p_model) NOT BETWEEN 1 AND 128 THEN
        RETURN _r(400, 'invalid_request', 'model is required', NULL);
    END IF;
    IF p_input IS NULL OR p_input < 0 OR p_input > 1000000000 THEN
        RETURN _r(400, 'invalid_request', 'inputTokens must be an integer between 0 and 1000000000', NULL);
    END IF;
    IF p_output IS NULL OR p_output < 0 OR p_output > 1000000000 THEN
        RETURN _r(400, 'invalid_request', 'outputTokens must be an integer between 0 and 1000000000', NULL);
    END IF;
    IF NOT _valid_key(p_key) THEN
        RETURN _r(400, 'invalid_request',
                  'idempotencyKey must be 1..255 printable ASCII characters without spaces', NULL);
    END IF;

    v_fp := _fingerprint(jsonb_build_array('usage', p_model, p_input, p_output, p_hold::text)::text);

    -- Serialize all money movements of this user on the account row.
    SELECT balance_micros INTO v_bal FROM accounts WHERE user_id = p_user FOR UPDATE;

    IF NOT FOUND THEN
        -- No account: no ledger entries and no holds exist. Decide without writing;
        -- create the account only if we are going to write an entry.
        v_price := _price_in_force(p_model);
        IF v_price.id IS NULL THEN
            RETURN _r(422, 'unknown_model', format('Unknown model %s', p_model), NULL);
        END IF;
        v_charge := _charge(p_input, p_output, v_price.input_micros_per_mtok, v_price.output_micros_per_mtok);
        IF v_charge IS NULL THEN
            RETURN _r(400, 'invalid_request', 'token counts overflow the charge computation', NULL);
        END IF;
        IF p_hold IS NOT NULL THEN
            RETURN _r(404, 'hold_not_found', 'No such hold for this user', NULL);
        END IF;
        IF v_charge > 0 THEN
            RETURN _r(402, 'insufficient_credits',
                      format('Charge of %s micros exceeds the available balance of 0 micros', v_charge), NULL);
        END IF;
        INSERT INTO accounts (user_id) VALUES (p_user) ON CONFLICT (user_id) DO NOTHING;
        SELECT balance_micros INTO v_bal FROM accounts WHERE user_id = p_user FOR UPDATE;
    END IF;

    -- Idempotency: same (user, key) already charged?
    SELECT * INTO v_e FROM ledger_entries WHERE user_id = p_user AND idempotency_key = p_key;
    IF FOUND THEN
        RETURN _usage_replay(v_e, v_fp);
    END IF;

    v_price := _price_in_force(p_model);
    IF v_price.id IS NULL THEN
        RETURN _r(422, 'unknown_model', format('Unknown model %s', p_model), NULL);
    END IF;
    v_charge := _charge(p_input, p_output, v_price.input_micros_per_mtok, v_price.output_micros_per_mtok);
    IF v_charge IS NULL THEN
        RETURN _r(400, 'invalid_request', 'token counts overflow the charge computation', NULL);
    END IF;

    IF p_hold IS NOT NULL THEN
        SELECT * INTO v_hold FROM holds WHERE id = p_hold AND user_id = p_user FOR UPDATE;
        IF NOT FOUND THEN
            RETURN _r(404, 'hold_not_found', 'No such hold for this user', NULL);
        END IF;
        IF v_hold.status <> 'active' OR v_hold.expires_at <= now() THEN
            RETURN _r(409, 'hold_not_active',
                      format('Hold is %s', CASE WHEN v_hold.status = 'active' THEN 'expired'
                                                ELSE v_hold.status END), NULL);
        END IF;
    END IF;

    -- The named hold's amount is available to this charge; other holds are not.
    v_avail := v_bal - _held(p_user, p_hold);
    IF v_charge > 0 AND v_charge > v_avail THEN
        RETURN _r(402, 'insufficient_credits',
                  format('Charge of %s micros exceeds the available balance of %s micros',
                         v_charge, v_avail), NULL);
    END IF;

    v_new := v_bal - v_charge;
    INSERT INTO ledger_entries (user_id, type, amount_micros, balance_after_micros, idempotency_key,
                                request_fingerprint, price_id, model, input_tokens, output_tokens, hold_id)
    VALUES (p_user, 'usage', -v_charge, v_new, p_key,
            v_fp, v_price.id, p_model, p_input, p_output, p_hold)
    ON CONFLICT ON CONSTRAINT ledger_user_key_uniq DO NOTHING
    RETURNING * INTO v_e;
    IF NOT FOUND THEN
        -- Cannot happen under the account lock; answer as a replay/conflict anyway.
        SELECT * INTO v_e FROM ledger_entries WHERE user_id = p_user AND idempotency_key = p_key;
        RETURN _usage_replay(v_e, v_fp);
    END IF;

    UPDATE accounts SET balance_micros = v_new, updated_at = now() WHERE user_id = p_user;
    IF p_hold IS NOT NULL THEN
        UPDATE holds SET status = 'captured', resolved_at = now() WHERE id = p_hold;
    END IF;
    PERFORM _balance_changed(p_user, v_bal, v_new);

    RETURN _r(201, NULL, _usage_body(v_e, false)::text, NULL);
END
$$;

-- ---------------------------------------------------------------------------
-- POST /api/usage/holds (docs/spec.md §4.3)
-- ---------------------------------------------------------------------------
CREATE FUNCTION billing.api_hold_create(p_user text, p_amount bigint, p_key text, p_ttl int DEFAULT 600)
RETURNS billing.api_result
LANGUAGE plpgsql SECURITY DEFINER SET search_path = billing, pg_temp AS $$
DECLARE
    v_ttl   int := coalesce(p_ttl, 600);
    v_fp    text;
    v_bal   bigint;
    v_avail bigint;
    v_h     holds;
BEGIN
    IF NOT _valid_user(p_user) THEN
        RETURN _r(400, 'invalid_request', 'userId must be 1..255 characters', NULL);
    END IF;
    IF p_amount IS NULL OR p_amount < 1 OR p_amount > 1000000000000000 THEN
        RETURN _r(400, 'invalid_request', 'amountMicros must be an integer between 1 and 10^15', NULL);
    END IF;
    IF NOT _valid_key(p_key) THEN
        RETURN _r(400, 'invalid_request',
                  'idempotencyKey must be 1..255 printable ASCII characters without spaces', NULL);
    END IF;
    IF v_ttl < 1 OR v_ttl > 3600 THEN
        RETURN _r(400, 'invalid_request', 'ttlSeconds must be between 1 and 3600', NULL);
    END IF;

    v_fp := _fingerprint(jsonb_build_array('hold', p_amount, v_ttl)::text);

    SELECT balance_micros INTO v_bal FROM accounts WHERE user_id = p_user FOR UPDATE;
    IF NOT FOUND THEN
        -- no account: no holds, nothing available
        RETURN _r(402, 'insufficient_credits',
                  format('Hold of %s micros exceeds the available balance of 0 micros', p_amount), NULL);
    END IF;

    SELECT * INTO v_h FROM holds WHERE user_id = p_user AND idempotency_key = p_key;
    IF FOUND THEN
        IF v_h.request_fingerprint = v_fp THEN
            RETURN _r(201, NULL, _hold_body(v_h)::text, 'replayed');
        END IF;
        RETURN _r(409, 'idempotency_key_reused',
                  'This idempotency key was already used with a different request body', NULL);
    END IF;

    v_avail := v_bal - _held(p_user, NULL);
    IF p_amount > v_avail THEN
        RETURN _r(402, 'insufficient_credits',
                  format('Hold of %s micros exceeds the available balance of %s micros', p_amount, v_avail), NULL);
    END IF;

    INSERT INTO holds (user_id, amount_micros, idempotency_key, request_fingerprint, expires_at,
                       available_after_micros)
    VALUES (p_user, p_amount, p_key, v_fp, now() + make_interval(secs => v_ttl), v_avail - p_amount)
    ON CONFLICT (user_id, idempotency_key) DO NOTHING
    RETURNING * INTO v_h;
    IF NOT FOUND THEN
        SELECT * INTO v_h FROM holds WHERE user_id = p_user AND idempotency_key = p_key;
        IF v_h.request_fingerprint = v_fp THEN
            RETURN _r(201, NULL, _hold_body(v_h)::text, 'replayed');
        END IF;
        RETURN _r(409, 'idempotency_key_reused',
                  'This idempotency key was already used with a different request body', NULL);
    END IF;

    RETURN _r(201, NULL, _hold_body(v_h)::text, NULL);
END
$$;

-- ---------------------------------------------------------------------------
-- DELETE /api/usage/holds/{id}
-- ---------------------------------------------------------------------------
CREATE FUNCTION billing.api_hold_release(p_hold uuid) RETURNS billing.api_result
LANGUAGE plpgsql SECURITY DEFINER SET search_path = billing, pg_temp AS $$
DECLARE
    v_h holds;
BEGIN
    IF p_hold IS NULL THEN
        RETURN _r(400, 'invalid_request', 'hold id is required', NULL);
    END IF;
    SELECT * INTO v_h FROM holds WHERE id = p_hold FOR UPDATE;
    IF NOT FOUND THEN
        RETURN _r(404, 'not_found', 'No such hold', NULL);
    END IF;
    IF v_h.status <> 'active' OR v_h.expires_at <= now() THEN
        RETURN _r(409, 'hold_not_active',
                  format('Hold is %s', CASE WHEN v_h.status = 'active' THEN 'expired' ELSE v_h.status END),
                  NULL);
    END IF;
    UPDATE holds SET status = 'released', resolved_at = now() WHERE id = p_hold;
    RETURN _r(200, NULL, jsonb_build_object('holdId', p_hold::text, 'status', 'released')::text, NULL);
END
$$;

-- ---------------------------------------------------------------------------
-- Purchases: create (step 1), session stored (step 3 ok), failed (step 3 error), get
-- ---------------------------------------------------------------------------
CREATE FUNCTION billing.api_purchase_create(p_user text, p_package text) RETURNS billing.api_result
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
    RETURN _r(201, NULL, _purchase_body(v_p, false)::text, NULL);
END
$$;

CREATE FUNCTION billing.api_purchase_session(p_purchase uuid, p_session_id text, p_url text)
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
    IF NOT FOUND THEN
        RETURN _r(404, 'not_found', 'No such purchase', NULL);
    END IF;
    RETURN _r(201, NULL, _purchase_body(v_p, false)::text, NULL);
END
$$;

CREATE FUNCTION billing.api_purchase_fail(p_purchase uuid, p_reason text) RETURNS billing.api_result
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

CREATE FUNCTION billing.api_purchase_get(p_user text, p_purchase uuid) RETURNS billing.api_result
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = billing, pg_temp AS $$
DECLARE
    v_p purchases;
BEGIN
    SELECT * INTO v_p FROM purchases WHERE id = p_purchase AND user_id = p_user;
    IF NOT FOUND THEN
        RETURN _r(404, 'not_found', 'No such purchase', NULL);
    END IF;
    RETURN _r(200, NULL, _purchase_body(v_p, true)::text, NULL);
END
$$;

-- ---------------------------------------------------------------------------
-- GET /readyz
-- ---------------------------------------------------------------------------
CREATE FUNCTION billing.api_readyz() RETURNS billing.api_result
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = billing, pg_temp AS $$
    SELECT _r(200, NULL,
              jsonb_build_object('schemaVersion',
                                 (SELECT coalesce(max(version), 0) FROM schema_migrations))::text,
              NULL)
$$;

-- ---------------------------------------------------------------------------
-- Privileges
-- ---------------------------------------------------------------------------
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA billing FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    billing.api_packages(),
    billing.api_balance(text),
    billing.api_ledger(text, int, bigint),
    billing.api_reconcile(text, text, bigint, bigint, text, uuid),
    billing.api_hold_create(text, bigint, text, int),
    billing.api_hold_release(uuid),
    billing.api_purchase_create(text, text),
    billing.api_purchase_session(uuid, text, text),
    billing.api_purchase_fail(uuid, text),
    billing.api_purchase_get(text, uuid),
    billing.api_readyz()
TO billing_app;
