-- readyz.sql — GET /readyz: the schema version the module compares with the
-- one it needs (NGX_HTTP_BILLING_SCHEMA_VERSION).

CREATE OR REPLACE FUNCTION billing.api_readyz() RETURNS billing.api_result
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = billing, pg_temp AS $$
    SELECT _r(200, NULL,
              json_build_object('schemaVersion',
                                 (SELECT coalesce(max(version), 0) FROM schema_migrations))::text,
              NULL)
$$;

GRANT EXECUTE ON FUNCTION billing.api_readyz() TO billing_app;
