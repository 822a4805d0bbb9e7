-- ledger.sql — GET /api/ledger (docs/spec.md §4), and GET
-- /api/admin/users/{userId}/ledger for support (§4.7): a user's entries,
-- newest first, id < p_before_id; meta = the last id shown when more entries
-- exist (the module turns it into the opaque nextCursor).

CREATE OR REPLACE FUNCTION billing.api_ledger(p_user text, p_limit int, p_before_id bigint) RETURNS billing.api_result
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = billing, pg_temp AS $$
DECLARE
    v_limit int := coalesce(p_limit, 50);
    v_err   text := coalesce(_check_user_id(p_user),
                             -- the module's own words for these two (it checks them first)
                             CASE WHEN v_limit NOT BETWEEN 1 AND 200
                                  THEN 'limit must be an integer from 1 to 200'
                                  WHEN p_before_id < 1 THEN 'cursor is not valid' END);
    v_bal bigint;
    v_entries json;
    v_more boolean;
    v_last bigint;
BEGIN
    IF v_err IS NOT NULL THEN
        RETURN _r(400, 'invalid_request', v_err, NULL);
    END IF;

    SELECT balance_micros INTO v_bal FROM accounts WHERE user_id = p_user;

    SELECT coalesce(json_agg(t.j ORDER BY t.id DESC) FILTER (WHERE t.rn <= v_limit), '[]'::json),
           coalesce(bool_or(t.rn > v_limit), false),
           min(t.id) FILTER (WHERE t.rn <= v_limit)
      INTO v_entries, v_more, v_last
      FROM (SELECT s.id, s.j, row_number() OVER (ORDER BY s.id DESC) AS rn
              FROM (SELECT e.id,
                           CASE WHEN e.type = 'usage' THEN
                               -- holdId only when the charge captured a hold
                               json_strip_nulls(json_build_object(
                                   'id', e.id::text,
                                   'type', e.type,
                                   'amountMicros', e.amount_micros,
                                   'balanceAfterMicros', e.balance_after_micros,
                                   'createdAt', _ts(e.created_at),
                                   'model', e.model,
                                   'inputTokens', e.input_tokens,
                                   'outputTokens', e.output_tokens,
                                   'idempotencyKey', e.idempotency_key,
                                   'holdId', e.hold_id::text))
                           WHEN e.type IN ('adjustment', 'usage_reversal') THEN
                               -- an administrator's entry: what it reverses, and why
                               -- (the reason is written for the user to read; the
                               -- actor stays with support, docs/api.md)
                               json_strip_nulls(json_build_object(
                                   'id', e.id::text,
                                   'type', e.type,
                                   'amountMicros', e.amount_micros,
                                   'balanceAfterMicros', e.balance_after_micros,
                                   'createdAt', _ts(e.created_at),
                                   'reversedEntryId', e.reversed_entry_id::text,
                                   'reason', e.reason))
                           ELSE
                               -- purchase, refund, dispute, dispute_reversal
                               json_strip_nulls(json_build_object(
                                   'id', e.id::text,
                                   'type', e.type,
                                   'amountMicros', e.amount_micros,
                                   'balanceAfterMicros', e.balance_after_micros,
                                   'createdAt', _ts(e.created_at),
                                   'purchaseId', e.purchase_id::text,
                                   'disputeId', e.dispute_id))
                           END AS j
                      FROM ledger_entries e
                     WHERE e.user_id = p_user
                       AND (p_before_id IS NULL OR e.id < p_before_id)
                     ORDER BY e.id DESC
                     LIMIT v_limit + 1) s) t;

    RETURN _r(200, NULL,
              json_build_object('balanceMicros', coalesce(v_bal, 0), 'entries', v_entries)::text,
              CASE WHEN v_more THEN v_last::text END);
END
$$;

GRANT EXECUTE ON FUNCTION billing.api_ledger(text, int, bigint) TO billing_app;
