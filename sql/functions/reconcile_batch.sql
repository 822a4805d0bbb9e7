-- reconcile_batch.sql — group commit of POST /api/usage/reconcile
-- (docs/architecture.md, "Group commit"): the reconciles waiting in one
-- worker's pool queue, one round trip and one transaction.
--
-- One array per argument of api_reconcile, item i made of element i of
-- each; one row per item, `ordinal` its subscript. Every item is answered
-- exactly as api_reconcile would answer it alone, after the items before it:
--
-- * every account of the batch is locked first, in user-id order
--   (bytewise, COLLATE "C"): every batch locks in one order, so two
--   batches never deadlock; a single call locks one account only.
-- * the common case is done for all such items at once, in one statement:
--   an item that is the only one of its user in the batch, names no hold,
--   is valid, has an unused key, a price in force, a positive balance and
--   a charge the available balance covers. That statement does per item
--   only what the entry needs (an index probe, an insert, an update); one
--   PL/pgSQL call per item costs as much again (docs/benchmarks.md).
-- * every other item is one call of billing.api_reconcile, in user-id
--   order and, for one user, in ordinal (arrival) order: a duplicate key
--   meets the entry the earlier item wrote (a replay, or 409 with a
--   different body), as sequential requests would; the refusals
--   (400/402/404/409/422) are rows, written nowhere, so they touch only
--   their item. The rules live in reconcile.sql; the set-based statement
--   states the common path's only, and t/sql/090 compares the two.
-- * an error raised by any item aborts the whole batch, nothing of it is
--   committed, and the module answers each item alone again
--   (ngx_http_billing_batch.c).
CREATE OR REPLACE FUNCTION billing.api_reconcile_batch(p_users text[], p_models text[], p_inputs bigint[],
                                                       p_outputs bigint[], p_keys text[], p_holds uuid[])
RETURNS TABLE (ordinal int, status int, code text, body text, meta text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = billing, pg_temp AS $$
DECLARE
    v_done int[] := '{}';
    v_item record;
    v_i    int;
    v_r    api_result;
BEGIN
    PERFORM _batch_shape('api_reconcile_batch', p_users,
                         ARRAY[cardinality(p_models), cardinality(p_inputs), cardinality(p_outputs),
                               cardinality(p_keys), cardinality(p_holds)]);

    PERFORM FROM accounts WHERE user_id = ANY (p_users) ORDER BY user_id COLLATE "C" FOR UPDATE;

    -- A new statement, so a new snapshot taken under the locks (READ
    -- COMMITTED): it sees every entry and hold a previous holder committed.
    FOR v_item IN
        WITH item AS (
            -- unnest, not p_users[i]: a subscript walks the array from its start
            SELECT t.i::int AS i, t.u, t.m, t.inp, t.outp, t.k, t.hold, count(*) OVER (PARTITION BY t.u) AS n
            FROM unnest(p_users, p_models, p_inputs, p_outputs, p_keys, p_holds)
                 WITH ORDINALITY AS t(u, m, inp, outp, k, hold, i)
        ), common AS (
            SELECT item.i, item.u, item.m, item.inp, item.outp, item.k, a.balance_micros AS bal,
                   p.id AS price_id, _charge(item.inp, item.outp, p.input_micros_per_mtok,
                                             p.output_micros_per_mtok) AS charge, h AS held
            FROM item
                 JOIN accounts a ON a.user_id = item.u
                 CROSS JOIN LATERAL _price_in_force(item.m) p
                 CROSS JOIN LATERAL _held(item.u, NULL) h
            WHERE item.n = 1 AND item.hold IS NULL AND a.balance_micros > 0
              AND coalesce(_check_user_id(item.u), _check_model(item.m),
                           _check_int('inputTokens', item.inp, 0, 1000000000),
                           _check_int('outputTokens', item.outp, 0, 1000000000),
                           _check_idempotency_key(item.k)) IS NULL
              AND NOT EXISTS (SELECT FROM ledger_entries l WHERE l.user_id = item.u AND l.idempotency_key = item.k)
        ), covered AS (
            SELECT * FROM common WHERE charge IS NOT NULL AND (charge = 0 OR charge <= bal - held)
        ), e AS (
            INSERT INTO ledger_entries (user_id, type, amount_micros, balance_after_micros, idempotency_key,
                                        price_id, model, input_tokens, output_tokens)
            SELECT u, 'usage', -charge, bal - charge, k, price_id, m, inp, outp FROM covered
            ON CONFLICT ON CONSTRAINT ledger_user_key_uniq DO NOTHING
            RETURNING id, user_id
        ), b AS (
            UPDATE accounts SET balance_micros = covered.bal - covered.charge, updated_at = now()
              FROM covered JOIN e ON e.user_id = covered.u
             WHERE accounts.user_id = covered.u
            RETURNING accounts.user_id
        )
        SELECT c.i, c.u, c.bal, c.bal - c.charge AS after, t AS thr,
               _usage_body(e.id, c.u, c.m, c.inp, c.outp, c.charge, c.bal - c.charge, false)::text AS body
        FROM covered c JOIN e ON e.user_id = c.u JOIN b ON b.user_id = c.u CROSS JOIN _low_threshold() t
    LOOP
        IF v_item.bal >= v_item.thr AND v_item.after < v_item.thr THEN
            PERFORM _balance_low(v_item.u, v_item.bal, v_item.after, v_item.thr);
        END IF;
        v_done := v_done || v_item.i;
        ordinal := v_item.i;
        status := 201;
        code := NULL;
        body := v_item.body;
        meta := NULL;
        RETURN NEXT;
    END LOOP;

    FOR v_i IN SELECT o FROM _batch_order(p_users, v_done) AS o LOOP
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
