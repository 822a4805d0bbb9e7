-- reconcile_batch.sql — group commit of POST /api/usage/reconcile
-- (docs/architecture.md, "Group commit"): the reconciles waiting in one
-- worker's pool queue, one round trip and one transaction.
--
-- One array per argument of api_reconcile, item i made of element i of
-- each; one row per item, `ordinal` its subscript. Each item is ONE call of
-- billing.api_reconcile, so every rule stays in reconcile.sql and an item
-- is answered exactly as it would be alone, after the items before it:
--
-- * items run in user-id order (bytewise, COLLATE "C"), and items of the
--   same user in ordinal (arrival) order. Every batch thus locks accounts
--   in one order and two batches never deadlock; a single call locks one
--   account only.
-- * a duplicate key in one batch meets the entry the earlier item wrote:
--   a replay, or 409 with a different body, as sequential requests would.
-- * 400/402/404/409/422 are rows (api_reconcile returns them, it writes
--   nothing for them), so they touch only their item. An error raised by
--   any item aborts the whole batch, nothing of it is committed, and the
--   module answers each item alone again (ngx_http_billing_batch.c).
CREATE OR REPLACE FUNCTION billing.api_reconcile_batch(p_users text[], p_models text[], p_inputs bigint[],
                                                       p_outputs bigint[], p_keys text[], p_holds uuid[])
RETURNS TABLE (ordinal int, status int, code text, body text, meta text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = billing, pg_temp AS $$
DECLARE
    v_i int;
    v_r api_result;
BEGIN
    IF array_ndims(p_users) IS DISTINCT FROM 1
       OR array_lower(p_users, 1) <> 1
       OR cardinality(p_models) IS DISTINCT FROM cardinality(p_users)
       OR cardinality(p_inputs) IS DISTINCT FROM cardinality(p_users)
       OR cardinality(p_outputs) IS DISTINCT FROM cardinality(p_users)
       OR cardinality(p_keys) IS DISTINCT FROM cardinality(p_users)
       OR cardinality(p_holds) IS DISTINCT FROM cardinality(p_users)
    THEN
        RAISE EXCEPTION 'api_reconcile_batch: one-dimensional arrays of one length, from 1, expected'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    FOR v_i IN SELECT i FROM generate_subscripts(p_users, 1) AS i ORDER BY p_users[i] COLLATE "C", i LOOP
        v_r := api_reconcile(p_users[v_i], p_models[v_i], p_inputs[v_i], p_outputs[v_i], p_keys[v_i],
                             p_holds[v_i]);
        ordinal := v_i;
        status := v_r.status;
        code := v_r.code;
        body := v_r.body;
        meta := v_r.meta;
        RETURN NEXT;
    END LOOP;
END
$$;

GRANT EXECUTE ON FUNCTION billing.api_reconcile_batch(text[], text[], bigint[], bigint[], text[], uuid[])
    TO billing_app;
