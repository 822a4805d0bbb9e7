-- models.sql — GET /api/models (docs/spec.md §4): the price of every model
-- in force now, one version per model (the newest that has begun).

CREATE OR REPLACE FUNCTION billing.api_models() RETURNS billing.api_result
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = billing, pg_temp AS $$
    SELECT _r(200, NULL, json_build_object('models', coalesce(
        (SELECT json_agg(_price_body(p) ORDER BY p.model)
           FROM (SELECT DISTINCT ON (model) *
                   FROM model_prices
                  WHERE effective_from <= now()
                  ORDER BY model, effective_from DESC) p), '[]'::json))::text, NULL)
$$;

GRANT EXECUTE ON FUNCTION billing.api_models() TO billing_app;
