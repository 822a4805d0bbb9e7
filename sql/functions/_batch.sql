-- _batch.sql — what the group-commit functions (reconcile_batch.sql,
-- holds_batch.sql) share: the shape of their arguments and the order in
-- which their items run (docs/architecture.md, "Group commit").

-- The arrays of one batch: one-dimensional, subscripts from 1, all as long
-- as the first. Raises, so a malformed call commits nothing; the module
-- never sends one (billing_array.c), this is the database's own guard.
CREATE OR REPLACE FUNCTION billing._batch_shape(p_function text, p_first anyarray, p_lengths int[])
RETURNS void LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF array_ndims(p_first) IS DISTINCT FROM 1 OR array_lower(p_first, 1) <> 1
       OR EXISTS (SELECT FROM unnest(p_lengths) n WHERE n IS DISTINCT FROM cardinality(p_first))
    THEN
        RAISE EXCEPTION '%: one-dimensional arrays of one length, from 1, expected', p_function
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

-- The subscripts of a batch's items in the order they run: user id
-- bytewise (COLLATE "C", not the database's collation, so every batch
-- locks accounts in one order and two batches never deadlock), then
-- arrival. p_skip: items already answered (reconcile's set-based path).
CREATE OR REPLACE FUNCTION billing._batch_order(p_users text[], p_skip int[] DEFAULT '{}')
RETURNS SETOF int LANGUAGE sql IMMUTABLE AS $$
    SELECT i::int FROM unnest(p_users) WITH ORDINALITY AS t(u, i)
    WHERE i <> ALL (p_skip)
    ORDER BY u COLLATE "C", i
$$;
