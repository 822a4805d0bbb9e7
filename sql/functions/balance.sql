-- balance.sql — GET /api/balance (docs/spec.md §4): balance, held, available.

CREATE OR REPLACE FUNCTION billing.api_balance(p_user text) RETURNS billing.api_result
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = billing, pg_temp AS $$
    SELECT CASE
        WHEN s.err IS NOT NULL THEN _r(400, 'invalid_request', s.err, NULL)
        ELSE _r(200, NULL, json_build_object(
                 'userId', p_user, 'balanceMicros', s.bal,
                 'heldMicros', s.held, 'availableMicros', s.bal - s.held)::text, NULL)
    END
    FROM (SELECT _check_user_id(p_user) AS err,
                 coalesce((SELECT balance_micros FROM accounts WHERE user_id = p_user), 0) AS bal,
                 _held(p_user, NULL) AS held) s
$$;

GRANT EXECUTE ON FUNCTION billing.api_balance(text) TO billing_app;
