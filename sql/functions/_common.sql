-- _common.sql — private helpers shared by several API files.
-- Not executable by billing_app (migrate.sh grants only what files grant).
-- No SET clause on a helper: its callers are SECURITY DEFINER functions that
-- fix search_path already, and a SET clause keeps a SQL function from being
-- inlined (sql/README.md, "Helpers on the hot path").

-- The one-row answer of every API function: (status, code, body, meta).
CREATE OR REPLACE FUNCTION billing._r(p_status int, p_code text, p_body text, p_meta text)
RETURNS billing.api_result LANGUAGE sql IMMUTABLE AS $$
    SELECT ROW(p_status, p_code, p_body, p_meta)::billing.api_result
$$;

-- RFC 3339 UTC with microseconds.
CREATE OR REPLACE FUNCTION billing._ts(p_ts timestamptz) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT to_char(p_ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
$$;

-- Sum of the user's holds that still count (active, not expired), optionally
-- excluding one hold: one row. Used in FROM (`SELECT ... FROM _held(u, NULL)
-- h`), where the planner inlines a set-returning SQL function into the
-- caller's statement and plpgsql keeps the plan; as a scalar function it
-- would be parsed and planned on every call.
CREATE OR REPLACE FUNCTION billing._held(p_user text, p_except uuid) RETURNS SETOF bigint
LANGUAGE sql STABLE ROWS 1 AS $$
    SELECT coalesce(sum(amount_micros), 0)::bigint
    FROM billing.holds
    WHERE user_id = p_user AND status = 'active' AND expires_at > now()
      AND id IS DISTINCT FROM p_except
$$;

-- A price version as the API shows it (GET /api/models, PUT
-- /api/admin/models/{model}/price), the model first.
CREATE OR REPLACE FUNCTION billing._price_body(p billing.model_prices) RETURNS json
LANGUAGE sql STABLE SET search_path = billing, pg_temp AS $$
    SELECT json_build_object(
        'model', p.model,
        'inputMicrosPerMTok', p.input_micros_per_mtok,
        'outputMicrosPerMTok', p.output_micros_per_mtok,
        'effectiveFrom', _ts(p.effective_from))
$$;
