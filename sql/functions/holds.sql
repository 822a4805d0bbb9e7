-- holds.sql — POST /api/usage/holds and DELETE /api/usage/holds/{id}
-- (docs/spec.md §4.3): reserve credits before an AI call; a reconcile naming
-- the hold captures it (reconcile.sql).

-- What a hold request is compared by: sha256 of its canonical form.
-- STABLE, as convert_to() is: an IMMUTABLE function whose body is not is
-- never inlined, and a SQL function that is not inlined is parsed and
-- planned again on every call (docs/benchmarks.md, "The stored functions").
CREATE OR REPLACE FUNCTION billing._fingerprint(p_canonical text) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT encode(sha256(convert_to(p_canonical, 'UTF8')), 'hex')
$$;

-- No SET clause on these helpers: a SQL function with one is never inlined
-- (see _common.sql).
CREATE OR REPLACE FUNCTION billing._hold_body(h billing.holds) RETURNS json
LANGUAGE sql STABLE AS $$
    SELECT json_build_object(
        'holdId', h.id::text,
        'userId', h.user_id,
        'heldMicros', h.amount_micros,
        'expiresAt', billing._ts(h.expires_at),
        'availableMicros', h.available_after_micros)
$$;

-- Answer for an existing hold with the same (user, key).
CREATE OR REPLACE FUNCTION billing._hold_replay(h billing.holds, p_fp text) RETURNS billing.api_result
LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN h.request_fingerprint = p_fp
            THEN billing._r(201, NULL, billing._hold_body(h)::text, 'replayed')
        ELSE billing._r(409, 'idempotency_key_reused',
                        'This idempotency key was already used with a different request body', NULL)
    END
$$;

CREATE OR REPLACE FUNCTION billing.api_hold_create(p_user text, p_amount bigint, p_key text, p_ttl int DEFAULT 600)
RETURNS billing.api_result
LANGUAGE plpgsql SECURITY DEFINER SET search_path = billing, pg_temp AS $$
DECLARE
    v_ttl   int := coalesce(p_ttl, 600);
    v_err   text := coalesce(_check_user_id(p_user),
                             _check_int('amountMicros', p_amount, 1, 1000000000000000),
                             _check_idempotency_key(p_key),
                             _check_int('ttlSeconds', v_ttl, 1, 3600));
    v_fp    text;
    v_bal   bigint;
    v_avail bigint;
    v_h     holds;
BEGIN
    IF v_err IS NOT NULL THEN
        RETURN _r(400, 'invalid_request', v_err, NULL);
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
        RETURN _hold_replay(v_h, v_fp);
    END IF;

    SELECT v_bal - h INTO v_avail FROM _held(p_user, NULL) h;
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
        -- Cannot happen under the account lock; answer as a replay/conflict anyway.
        SELECT * INTO v_h FROM holds WHERE user_id = p_user AND idempotency_key = p_key;
        RETURN _hold_replay(v_h, v_fp);
    END IF;

    RETURN _r(201, NULL, _hold_body(v_h)::text, NULL);
END
$$;
GRANT EXECUTE ON FUNCTION billing.api_hold_create(text, bigint, text, int) TO billing_app;

CREATE OR REPLACE FUNCTION billing.api_hold_release(p_hold uuid) RETURNS billing.api_result
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
    RETURN _r(200, NULL, json_build_object('holdId', p_hold::text, 'status', 'released')::text, NULL);
END
$$;
GRANT EXECUTE ON FUNCTION billing.api_hold_release(uuid) TO billing_app;
