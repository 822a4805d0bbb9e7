-- usage_summary.sql — GET /api/usage/summary (docs/spec.md §4.6): the
-- caller's usage by UTC day or by model over at most 366 days, net of
-- reversals: a usage entry an administrator reversed counts neither its
-- request, its tokens nor its charge.
--
-- Served by ledger_usage_summary_idx (user_id, created_at) WHERE type =
-- 'usage' for the range, and by the ledger's unique (user_id,
-- idempotency_key) for the reversal of each entry ('usage_reversal <id>'):
-- index probes, never a scan of the ledger (t/sql/080_usage_summary.sql
-- checks the plan).

CREATE OR REPLACE FUNCTION billing.api_usage_summary(p_user text, p_from text, p_to text,
                                                     p_group_by text)
RETURNS billing.api_result
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = billing, pg_temp AS $$
DECLARE
    v_group text := coalesce(p_group_by, 'day');
    v_err   text := coalesce(_check_user_id(p_user),
                             _check_date('from', p_from),
                             _check_date('to', p_to),
                             CASE WHEN v_group NOT IN ('day', 'model')
                                  THEN 'groupBy: must be day or model' END);
    v_from  date;
    v_to    date;
    v_groups json;
BEGIN
    IF v_err IS NOT NULL THEN
        RETURN _r(400, 'invalid_request', v_err, NULL);
    END IF;
    v_from := p_from::date;
    v_to := p_to::date;
    IF v_to < v_from THEN
        RETURN _r(400, 'invalid_request', 'to: must not be before from', NULL);
    END IF;
    IF v_to - v_from >= 366 THEN
        RETURN _r(400, 'invalid_request', 'from..to: must span at most 366 days', NULL);
    END IF;

    SELECT coalesce(json_agg(json_build_object(
               'key', g.key,
               'requests', g.requests,
               'inputTokens', g.input_tokens,
               'outputTokens', g.output_tokens,
               'chargedMicros', g.charged) ORDER BY g.key), '[]'::json)
      INTO v_groups
      FROM (SELECT CASE WHEN v_group = 'day'
                        THEN to_char(e.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')
                        ELSE e.model END AS key,
                   count(*) AS requests,
                   sum(e.input_tokens)::bigint AS input_tokens,
                   sum(e.output_tokens)::bigint AS output_tokens,
                   (-sum(e.amount_micros))::bigint AS charged
              FROM ledger_entries e
             WHERE e.user_id = p_user
               AND e.type = 'usage'
               AND e.created_at >= v_from::timestamp AT TIME ZONE 'UTC'
               AND e.created_at < (v_to + 1)::timestamp AT TIME ZONE 'UTC'
               AND NOT EXISTS (SELECT 1 FROM ledger_entries r
                                WHERE r.user_id = e.user_id
                                  AND r.idempotency_key = 'usage_reversal ' || e.id::text)
             GROUP BY 1) g;

    RETURN _r(200, NULL,
              json_build_object('from', p_from, 'to', p_to, 'groupBy', v_group,
                                'groups', v_groups)::text,
              NULL);
END
$$;

GRANT EXECUTE ON FUNCTION billing.api_usage_summary(text, text, text, text) TO billing_app;
