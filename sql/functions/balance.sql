-- balance.sql — GET /api/balance (docs/spec.md §4): balance, held, available.

CREATE OR REPLACE FUNCTION billing.api_balance(p_user text) RETURNS billing.api_result
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

GRANT EXECUTE ON FUNCTION billing.api_balance(text) TO billing_app;
