-- balance.sql — GET /api/balance (docs/spec.md §4): balance, held, available.

-- PL/pgSQL, not SQL: a SECURITY DEFINER SQL function is never inlined, so
-- its body would be parsed and planned on every call; PL/pgSQL keeps the
-- plan of its statement for the session (docs/benchmarks.md).
CREATE OR REPLACE FUNCTION billing.api_balance(p_user text) RETURNS billing.api_result
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = billing, pg_temp AS $$
DECLARE
    v_err  text := _check_user_id(p_user);
    v_bal  bigint;
    v_held bigint;
BEGIN
    IF v_err IS NOT NULL THEN
        RETURN _r(400, 'invalid_request', v_err, NULL);
    END IF;

    SELECT coalesce((SELECT balance_micros FROM accounts WHERE user_id = p_user), 0), h
      INTO v_bal, v_held
      FROM _held(p_user, NULL) h;

    RETURN _r(200, NULL, json_build_object(
                  'userId', p_user, 'balanceMicros', v_bal,
                  'heldMicros', v_held, 'availableMicros', v_bal - v_held)::text, NULL);
END
$$;

GRANT EXECUTE ON FUNCTION billing.api_balance(text) TO billing_app;
