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

-- Group commit of balance reads (docs/architecture.md, "Group commit"): the
-- balances waiting in one worker's pool queue, one statement. One row per
-- item, `ordinal` its subscript, each answered as api_balance answers it
-- (t/sql/090 compares them). A read locks nothing, so the order of the
-- items does not matter.
--
-- plan_cache_mode: the custom plan a batch would get (one per call, made
-- for its array) costs more to make than it saves; the generic plan is the
-- same nested loop over the batch's users (about 25 % less CPU per call).
CREATE OR REPLACE FUNCTION billing.api_balance_batch(p_users text[])
RETURNS TABLE (ordinal int, status int, code text, body text, meta text)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = billing, pg_temp SET plan_cache_mode = force_generic_plan AS $$
BEGIN
    PERFORM _batch_shape('api_balance_batch', p_users, '{}');

    -- unnest, not p_users[i]: a subscript walks the array from its start.
    -- Plain columns, not api_result's fields: (row).* would evaluate the
    -- row, and so its lookups, once per field.
    RETURN QUERY
    SELECT u.i::int, CASE WHEN c.err IS NULL THEN 200 ELSE 400 END,
           CASE WHEN c.err IS NOT NULL THEN 'invalid_request' END,
           CASE WHEN c.err IS NULL
                THEN json_build_object('userId', u.id, 'balanceMicros', coalesce(a.balance_micros, 0),
                                       'heldMicros', h, 'availableMicros', coalesce(a.balance_micros, 0) - h)::text
                ELSE c.err
           END,
           NULL::text
    FROM unnest(p_users) WITH ORDINALITY AS u(id, i)
         CROSS JOIN LATERAL (SELECT _check_user_id(u.id) AS err) c
         LEFT JOIN accounts a ON a.user_id = u.id
         CROSS JOIN LATERAL _held(u.id, NULL) h;
END
$$;

GRANT EXECUTE ON FUNCTION billing.api_balance_batch(text[]) TO billing_app;
