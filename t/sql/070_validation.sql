-- One rule per field (sql/functions/_rules.sql, docs/api.md "Validation
-- rules"): every rule at its edges, through the API functions that use it,
-- with the detail the module's core gives for the same value; a refused
-- request writes nothing.
\set test_name validation
\ir lib/setup.psql

-- the answer is 400 invalid_request with exactly this detail
CREATE FUNCTION pg_temp.refused(r billing.api_result, p_detail text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    ASSERT r.status = 400 AND r.code = 'invalid_request' AND r.body = p_detail,
        format('expected 400 "%s", got %s', p_detail, r);
END $$;

-- userId: 1..255 bytes without control characters
DO $$
DECLARE
    u text := pg_temp.u('user');
    c_rule CONSTANT text := 'userId: must be 1 to 255 bytes without control characters';
    v_255 text := repeat('u', 255);
    v_e255 text := repeat('é', 127) || 'u';          -- 255 bytes, 128 characters
BEGIN
    PERFORM pg_temp.fund(u, 10000000);
    PERFORM pg_temp.refused(billing.api_balance(NULL), 'userId: field is required');
    PERFORM pg_temp.refused(billing.api_balance(''), c_rule);
    PERFORM pg_temp.refused(billing.api_balance(v_255 || 'u'), c_rule);
    PERFORM pg_temp.refused(billing.api_balance(repeat('é', 128)), c_rule);   -- 128 characters, 256 bytes
    PERFORM pg_temp.refused(billing.api_balance(E'a\tb'), c_rule);
    PERFORM pg_temp.refused(billing.api_balance(E'a\u007fb'), c_rule);
    PERFORM pg_temp.refused(billing.api_balance(E'a\u0085b'), c_rule);        -- C1 control
    ASSERT (billing.api_balance(v_255)).status = 200;
    ASSERT (billing.api_balance(v_e255)).status = 200;
    ASSERT (billing.api_balance(E'caf\u00e9 \u00a0x')).status = 200;          -- no-break space is printable
    -- every function that takes a user id applies the same rule
    PERFORM pg_temp.refused(billing.api_ledger(E'a\nb', NULL, NULL), c_rule);
    PERFORM pg_temp.refused(billing.api_reconcile(E'a\nb', 'gpt-4o', 1, 1, 'k'), c_rule);
    PERFORM pg_temp.refused(billing.api_hold_create(E'a\nb', 1, 'k', NULL), c_rule);
    PERFORM pg_temp.refused(billing.api_purchase_create(E'a\nb', 'pro'), c_rule);
    ASSERT NOT EXISTS (SELECT 1 FROM billing.accounts WHERE user_id IN (E'a\nb', '', v_255 || 'u'));
    ASSERT NOT EXISTS (SELECT 1 FROM billing.purchases WHERE user_id = E'a\nb');
END $$;

-- model: 1..128 characters of anything; not priced -> 422 unknown_model
DO $$
DECLARE
    u text := pg_temp.u('model');
    r billing.api_result;
    c_rule CONSTANT text := 'model: must be 1 to 128 characters';
BEGIN
    PERFORM pg_temp.fund(u, 10000000);
    PERFORM pg_temp.refused(billing.api_reconcile(u, NULL, 1, 1, 'k'), 'model: field is required');
    PERFORM pg_temp.refused(billing.api_reconcile(u, '', 1, 1, 'k'), c_rule);
    PERFORM pg_temp.refused(billing.api_reconcile(u, repeat('m', 129), 1, 1, 'k'), c_rule);
    PERFORM pg_temp.refused(billing.api_reconcile(u, repeat('é', 129), 1, 1, 'k'), c_rule);
    -- anything else of the right length is a name: unknown, not malformed
    FOREACH r IN ARRAY ARRAY[
            billing.api_reconcile(u, 'gpt-4o ', 1, 1, 'k'),
            billing.api_reconcile(u, 'GPT-4O', 1, 1, 'k'),
            billing.api_reconcile(u, 'gpt 4o', 1, 1, 'k'),
            billing.api_reconcile(u, 'gpt/4o?x=1', 1, 1, 'k'),
            billing.api_reconcile(u, 'modèle', 1, 1, 'k'),
            billing.api_reconcile(u, repeat('m', 128), 1, 1, 'k'),
            billing.api_reconcile(u, repeat('é', 128), 1, 1, 'k')] LOOP
        ASSERT r.status = 422 AND r.code = 'unknown_model', format('%s', r);
    END LOOP;
    ASSERT pg_temp.entries(u) = 1 AND pg_temp.balance(u) = 10000000, 'nothing written';
END $$;

-- inputTokens, outputTokens: 0..10^9
DO $$
DECLARE
    u text := pg_temp.u('tokens');
BEGIN
    PERFORM pg_temp.fund(u, 100000000000);
    PERFORM pg_temp.refused(billing.api_reconcile(u, 'gpt-4o', NULL, 1, 'k'), 'inputTokens: field is required');
    PERFORM pg_temp.refused(billing.api_reconcile(u, 'gpt-4o', -1, 1, 'k'),
                            'inputTokens: must be an integer between 0 and 1000000000');
    PERFORM pg_temp.refused(billing.api_reconcile(u, 'gpt-4o', 1, 1000000001, 'k'),
                            'outputTokens: must be an integer between 0 and 1000000000');
    ASSERT pg_temp.entries(u) = 1, 'nothing written';
    ASSERT (billing.api_reconcile(u, 'gpt-4o', 1000000000, 0, 'k-max')).status = 201;
    ASSERT (billing.api_reconcile(u, 'gpt-4o', 0, 0, 'k-zero')).status = 201;
END $$;

-- idempotencyKey: 1..255 of 0x21..0x7E
DO $$
DECLARE
    u text := pg_temp.u('key');
    c_rule CONSTANT text := 'idempotencyKey: must be 1 to 255 printable ASCII characters without spaces';
BEGIN
    PERFORM pg_temp.fund(u, 10000000);
    PERFORM pg_temp.refused(billing.api_reconcile(u, 'gpt-4o', 1, 1, NULL),
                            'idempotencyKey: field or Idempotency-Key header is required');
    PERFORM pg_temp.refused(billing.api_reconcile(u, 'gpt-4o', 1, 1, ''), c_rule);
    PERFORM pg_temp.refused(billing.api_reconcile(u, 'gpt-4o', 1, 1, 'a b'), c_rule);
    PERFORM pg_temp.refused(billing.api_reconcile(u, 'gpt-4o', 1, 1, 'clé'), c_rule);
    PERFORM pg_temp.refused(billing.api_reconcile(u, 'gpt-4o', 1, 1, repeat('k', 256)), c_rule);
    PERFORM pg_temp.refused(billing.api_hold_create(u, 1, 'a b', NULL), c_rule);
    ASSERT pg_temp.entries(u) = 1, 'nothing written';
    ASSERT (billing.api_reconcile(u, 'gpt-4o', 1, 1, repeat('~', 255))).status = 201;
    ASSERT (billing.api_reconcile(u, 'gpt-4o', 1, 1, '!')).status = 201;
END $$;

-- holds: amountMicros 1..10^15, ttlSeconds 1..3600 (NULL: 600)
DO $$
DECLARE
    u text := pg_temp.u('hold');
    r billing.api_result;
BEGIN
    PERFORM pg_temp.fund(u, 10000000);
    PERFORM pg_temp.refused(billing.api_hold_create(u, NULL, 'h', NULL), 'amountMicros: field is required');
    PERFORM pg_temp.refused(billing.api_hold_create(u, 0, 'h', NULL),
                            'amountMicros: must be an integer between 1 and 1000000000000000');
    PERFORM pg_temp.refused(billing.api_hold_create(u, 1000000000000001, 'h', NULL),
                            'amountMicros: must be an integer between 1 and 1000000000000000');
    PERFORM pg_temp.refused(billing.api_hold_create(u, 1, 'h', 0),
                            'ttlSeconds: must be an integer between 1 and 3600');
    PERFORM pg_temp.refused(billing.api_hold_create(u, 1, 'h', 3601),
                            'ttlSeconds: must be an integer between 1 and 3600');
    ASSERT NOT EXISTS (SELECT 1 FROM billing.holds WHERE user_id = u), 'nothing written';
    r := billing.api_hold_create(u, 1, 'h1', NULL);
    ASSERT r.status = 201 AND (SELECT expires_at - created_at FROM billing.holds
                                WHERE user_id = u AND idempotency_key = 'h1') = interval '600 seconds',
        format('default ttl: %s', r);
    ASSERT (billing.api_hold_create(u, 1, 'h2', 3600)).status = 201;
    ASSERT (billing.api_hold_create(u, 1000000000000000, 'h3', 1)).status = 402;   -- in range, too much
END $$;

-- packageCode: 1..64 of a-z 0-9 _ -; a well-formed code of no package -> 422
DO $$
DECLARE
    u text := pg_temp.u('package');
    c_rule CONSTANT text := 'packageCode: must be 1 to 64 characters of a-z 0-9 _ -';
    r billing.api_result;
BEGIN
    PERFORM pg_temp.refused(billing.api_purchase_create(u, NULL), 'packageCode: field is required');
    PERFORM pg_temp.refused(billing.api_purchase_create(u, ''), c_rule);
    PERFORM pg_temp.refused(billing.api_purchase_create(u, 'Starter'), c_rule);
    PERFORM pg_temp.refused(billing.api_purchase_create(u, 'pro '), c_rule);
    PERFORM pg_temp.refused(billing.api_purchase_create(u, repeat('p', 65)), c_rule);
    r := billing.api_purchase_create(u, repeat('p', 64));
    ASSERT r.status = 422 AND r.code = 'unknown_package', format('%s', r);
    r := billing.api_purchase_create(u, 'platinum_2-x');
    ASSERT r.status = 422 AND r.code = 'unknown_package', format('%s', r);
    ASSERT NOT EXISTS (SELECT 1 FROM billing.purchases WHERE user_id = u), 'nothing written';
END $$;

-- ledger: limit 1..200 (NULL: 50), cursor id >= 1
DO $$
DECLARE
    u text := pg_temp.u('ledger');
BEGIN
    PERFORM pg_temp.refused(billing.api_ledger(u, 0, NULL), 'limit must be an integer from 1 to 200');
    PERFORM pg_temp.refused(billing.api_ledger(u, 201, NULL), 'limit must be an integer from 1 to 200');
    PERFORM pg_temp.refused(billing.api_ledger(u, 10, 0), 'cursor is not valid');
    ASSERT (billing.api_ledger(u, 1, NULL)).status = 200;
    ASSERT (billing.api_ledger(u, 200, 1)).status = 200;
    ASSERT (billing.api_ledger(u, NULL, NULL)).status = 200;
END $$;

SELECT pg_temp.assert_healthy();
