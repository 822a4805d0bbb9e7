-- packages.sql — GET /api/packages (docs/spec.md §4): the active credit packages.

CREATE OR REPLACE FUNCTION billing.api_packages() RETURNS billing.api_result
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = billing, pg_temp AS $$
    SELECT _r(200, NULL, json_build_object('packages', coalesce(
        (SELECT json_agg(json_build_object(
                    'code', code, 'name', name, 'priceCents', price_cents,
                    'currency', currency, 'creditsMicros', credits_micros)
                 ORDER BY price_cents, code)
         FROM credit_packages WHERE active), '[]'::json))::text, NULL)
$$;

GRANT EXECUTE ON FUNCTION billing.api_packages() TO billing_app;
