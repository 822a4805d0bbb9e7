-- admin.sql — the administrative writes of docs/spec.md §4.7 (scope
-- billing:admin, checked by the module): an adjustment, the reversal of a
-- usage entry, a new price version. Each is one call, idempotent by its key
-- like reconcile: the keys of all admin operations share one namespace
-- (billing.admin_requests, whoever sends them), a replay answers the original
-- status and body (meta 'replayed'), the same key with another request is
-- 409. Every entry records the token's subject (actor) and a reason.
-- The support views (a user's balance and ledger) are api_balance and
-- api_ledger called with the path's user id.

-- An adjustment or a usage reversal as the admin answers show it: the entry,
-- then what it did to the balance.
CREATE OR REPLACE FUNCTION billing._admin_entry_body(e billing.ledger_entries) RETURNS json
LANGUAGE sql STABLE SET search_path = billing, pg_temp AS $$
    SELECT json_strip_nulls(json_build_object(
        'entryId', e.id::text,
        'userId', e.user_id,
        'type', e.type,
        'reversedEntryId', e.reversed_entry_id::text,
        'amountMicros', e.amount_micros,
        'reason', e.reason,
        'actor', e.actor,
        'createdAt', _ts(e.created_at),
        'balanceMicros', e.balance_after_micros))
$$;

-- Serializes the requests that carry one admin key (whatever they do), so
-- that the second sees the first's outcome; then the answer for an existing
-- key: a replay of the same request, 409 for another; a NULL status: the
-- key is new.
CREATE OR REPLACE FUNCTION billing._admin_key(p_key text, p_operation text, p_fp text)
RETURNS billing.api_result
LANGUAGE plpgsql SET search_path = billing, pg_temp AS $$
DECLARE
    v_k admin_requests;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('billing admin key ' || p_key, 0));
    SELECT * INTO v_k FROM admin_requests WHERE idempotency_key = p_key;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF v_k.operation <> p_operation OR v_k.request_fingerprint <> p_fp THEN
        RETURN _r(409, 'idempotency_key_reused',
                  'This idempotency key was already used with a different request', NULL);
    END IF;
    IF v_k.operation = 'model_price' THEN
        RETURN _r(201, NULL, (SELECT _price_body(p) FROM model_prices p WHERE p.id = v_k.price_id)::text,
                  'replayed');
    END IF;
    RETURN _r(201, NULL, (SELECT _admin_entry_body(e) FROM ledger_entries e WHERE e.id = v_k.entry_id)::text,
              'replayed');
END
$$;

-- POST /api/admin/adjustments: a signed, non-zero amount; a debit may not
-- exceed the available balance (402, nothing written).
CREATE OR REPLACE FUNCTION billing.api_admin_adjustment(p_actor text, p_user text, p_amount bigint,
                                                        p_reason text, p_key text)
RETURNS billing.api_result
LANGUAGE plpgsql SECURITY DEFINER SET search_path = billing, pg_temp AS $$
DECLARE
    v_err   text := coalesce(_check_actor(p_actor), _check_user_id(p_user),
                             _check_int('amountMicros', p_amount, -1000000000000000, 1000000000000000),
                             CASE WHEN p_amount = 0 THEN 'amountMicros: must not be 0' END,
                             _check_reason(p_reason), _check_idempotency_key(p_key));
    v_fp    text;
    v_ans   api_result;
    v_bal   bigint;
    v_avail bigint;
    v_new   bigint;
    v_e     ledger_entries;
BEGIN
    IF v_err IS NOT NULL THEN
        RETURN _r(400, 'invalid_request', v_err, NULL);
    END IF;
    v_fp := _fingerprint(jsonb_build_array('adjustment', p_user, p_amount, p_reason)::text);
    v_ans := _admin_key(p_key, 'adjustment', v_fp);
    IF v_ans.status IS NOT NULL THEN
        RETURN v_ans;
    END IF;

    IF p_amount > 0 THEN
        INSERT INTO accounts (user_id) VALUES (p_user) ON CONFLICT (user_id) DO NOTHING;
    END IF;
    SELECT balance_micros INTO v_bal FROM accounts WHERE user_id = p_user FOR UPDATE;
    SELECT coalesce(v_bal, 0) - h INTO v_avail FROM _held(p_user, NULL) h;
    IF p_amount < 0 AND -p_amount > v_avail THEN
        RETURN _r(402, 'insufficient_credits',
                  format('Debit of %s micros exceeds the available balance of %s micros',
                         -p_amount, v_avail), NULL);
    END IF;

    v_new := v_bal + p_amount;
    INSERT INTO ledger_entries (user_id, type, amount_micros, balance_after_micros, idempotency_key,
                                request_fingerprint, actor, reason)
    VALUES (p_user, 'adjustment', p_amount, v_new, 'adjustment ' || p_key, v_fp, p_actor, p_reason)
    RETURNING * INTO v_e;
    UPDATE accounts SET balance_micros = v_new, updated_at = now() WHERE user_id = p_user;
    INSERT INTO admin_requests (idempotency_key, operation, request_fingerprint, actor, reason, entry_id)
    VALUES (p_key, 'adjustment', v_fp, p_actor, p_reason, v_e.id);
    PERFORM _balance_changed(p_user, v_bal, v_new);

    RETURN _r(201, NULL, _admin_entry_body(v_e)::text, NULL);
END
$$;
GRANT EXECUTE ON FUNCTION billing.api_admin_adjustment(text, text, bigint, text, text) TO billing_app;

-- POST /api/admin/usage/{entryId}/reversal: credits back exactly what the
-- usage entry charged, once per usage entry (409 already_reversed); 404 for
-- an unknown entry or one that is not usage.
CREATE OR REPLACE FUNCTION billing.api_admin_usage_reversal(p_actor text, p_entry bigint, p_reason text,
                                                            p_key text)
RETURNS billing.api_result
LANGUAGE plpgsql SECURITY DEFINER SET search_path = billing, pg_temp AS $$
DECLARE
    v_err text := coalesce(_check_actor(p_actor),
                           CASE WHEN p_entry IS NULL THEN 'entryId: field is required' END,
                           _check_reason(p_reason), _check_idempotency_key(p_key));
    v_fp  text;
    v_ans api_result;
    v_u   ledger_entries;
    v_r   ledger_entries;
    v_bal bigint;
    v_new bigint;
BEGIN
    IF v_err IS NOT NULL THEN
        RETURN _r(400, 'invalid_request', v_err, NULL);
    END IF;
    v_fp := _fingerprint(jsonb_build_array('usage_reversal', p_entry, p_reason)::text);
    v_ans := _admin_key(p_key, 'usage_reversal', v_fp);
    IF v_ans.status IS NOT NULL THEN
        RETURN v_ans;
    END IF;

    SELECT * INTO v_u FROM ledger_entries WHERE id = p_entry;
    IF NOT FOUND OR v_u.type <> 'usage' THEN
        RETURN _r(404, 'not_found', format('No usage entry %s', p_entry), NULL);
    END IF;

    -- the account's lock serializes two reversals of one entry
    SELECT balance_micros INTO v_bal FROM accounts WHERE user_id = v_u.user_id FOR UPDATE;
    SELECT * INTO v_r FROM ledger_entries
     WHERE user_id = v_u.user_id AND idempotency_key = 'usage_reversal ' || p_entry::text;
    IF FOUND THEN
        RETURN _r(409, 'already_reversed',
                  format('Usage entry %s was already reversed by entry %s', p_entry, v_r.id), NULL);
    END IF;

    v_new := v_bal - v_u.amount_micros;
    INSERT INTO ledger_entries (user_id, type, amount_micros, balance_after_micros, idempotency_key,
                                request_fingerprint, actor, reason, reversed_entry_id)
    VALUES (v_u.user_id, 'usage_reversal', -v_u.amount_micros, v_new,
            'usage_reversal ' || p_entry::text, v_fp, p_actor, p_reason, p_entry)
    RETURNING * INTO v_r;
    UPDATE accounts SET balance_micros = v_new, updated_at = now() WHERE user_id = v_u.user_id;
    INSERT INTO admin_requests (idempotency_key, operation, request_fingerprint, actor, reason, entry_id)
    VALUES (p_key, 'usage_reversal', v_fp, p_actor, p_reason, v_r.id);

    RETURN _r(201, NULL, _admin_entry_body(v_r)::text, NULL);
END
$$;
GRANT EXECUTE ON FUNCTION billing.api_admin_usage_reversal(text, bigint, text, text) TO billing_app;

-- PUT /api/admin/models/{model}/price: a new price version from
-- effectiveFrom (default: now); never in the past (422 retroactive_price);
-- a model without prices so far is created by its first version.
CREATE OR REPLACE FUNCTION billing.api_admin_model_price(p_actor text, p_model text, p_input bigint,
                                                         p_output bigint, p_effective_from text,
                                                         p_reason text, p_key text)
RETURNS billing.api_result
LANGUAGE plpgsql SECURITY DEFINER SET search_path = billing, pg_temp AS $$
DECLARE
    v_err  text := coalesce(_check_actor(p_actor), _check_model(p_model),
                            _check_int('inputMicrosPerMTok', p_input, 0, 1000000000000),
                            _check_int('outputMicrosPerMTok', p_output, 0, 1000000000000),
                            _check_timestamp('effectiveFrom', p_effective_from),
                            CASE WHEN p_reason IS NOT NULL THEN _check_reason(p_reason) END,
                            _check_idempotency_key(p_key));
    v_fp   text;
    v_ans  api_result;
    v_from timestamptz;
    v_p    model_prices;
BEGIN
    IF v_err IS NOT NULL THEN
        RETURN _r(400, 'invalid_request', v_err, NULL);
    END IF;
    v_fp := _fingerprint(jsonb_build_array('model_price', p_model, p_input, p_output,
                                           p_effective_from, p_reason)::text);
    v_ans := _admin_key(p_key, 'model_price', v_fp);
    IF v_ans.status IS NOT NULL THEN
        RETURN v_ans;
    END IF;

    v_from := coalesce(p_effective_from::timestamptz, now());
    IF v_from < now() THEN
        RETURN _r(422, 'retroactive_price',
                  format('effectiveFrom %s is in the past; a price never changes retroactively',
                         _ts(v_from)), NULL);
    END IF;

    INSERT INTO model_prices (model, input_micros_per_mtok, output_micros_per_mtok, effective_from)
    VALUES (p_model, p_input, p_output, v_from)
    ON CONFLICT (model, effective_from) DO NOTHING
    RETURNING * INTO v_p;
    IF NOT FOUND THEN
        RETURN _r(409, 'price_version_exists',
                  format('Model %s already has a price version from %s', p_model, _ts(v_from)), NULL);
    END IF;
    INSERT INTO admin_requests (idempotency_key, operation, request_fingerprint, actor, reason, price_id)
    VALUES (p_key, 'model_price', v_fp, p_actor, p_reason, v_p.id);

    RETURN _r(201, NULL, _price_body(v_p)::text, NULL);
END
$$;
GRANT EXECUTE ON FUNCTION billing.api_admin_model_price(text, text, bigint, bigint, text, text, text)
    TO billing_app;
