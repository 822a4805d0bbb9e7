-- holds_batch.sql — group commit of POST /api/usage/holds, as
-- reconcile_batch.sql does for reconciles (the same rules, read there):
-- one call of billing.api_hold_create per item, in user-id order
-- (bytewise), items of one user in ordinal (arrival) order (_batch.sql);
-- one row per item; an error raised by any item aborts the whole batch.
CREATE OR REPLACE FUNCTION billing.api_hold_create_batch(p_users text[], p_amounts bigint[], p_keys text[],
                                                         p_ttls int[])
RETURNS TABLE (ordinal int, status int, code text, body text, meta text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = billing, pg_temp AS $$
DECLARE
    v_i int;
    v_r api_result;
BEGIN
    PERFORM _batch_shape('api_hold_create_batch', p_users,
                         ARRAY[cardinality(p_amounts), cardinality(p_keys), cardinality(p_ttls)]);

    FOR v_i IN SELECT o FROM _batch_order(p_users) AS o LOOP
        v_r := api_hold_create(p_users[v_i], p_amounts[v_i], p_keys[v_i], p_ttls[v_i]);
        ordinal := v_i;
        status := v_r.status;
        code := v_r.code;
        body := v_r.body;
        meta := v_r.meta;
        RETURN NEXT;
    END LOOP;
END
$$;

GRANT EXECUTE ON FUNCTION billing.api_hold_create_batch(text[], bigint[], text[], int[]) TO billing_app;
