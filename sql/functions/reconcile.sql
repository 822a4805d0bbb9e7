-- reconcile.sql — POST /api/usage/reconcile (docs/spec.md §4.1, §4.3): price a
-- usage report and debit it exactly once per (user, idempotency key).

-- Price row in force now for a model: one row, or none. Used in FROM, where
-- the planner inlines it into the caller's statement (see _held).
CREATE OR REPLACE FUNCTION billing._price_in_force(p_model text) RETURNS SETOF billing.model_prices
LANGUAGE sql STABLE ROWS 1 AS $$
    SELECT * FROM billing.model_prices
    WHERE model = p_model AND effective_from <= now()
    ORDER BY effective_from DESC
    LIMIT 1
$$;

-- ceil((in*inPrice + out*outPrice) / 1e6) in bigint; NULL if it would overflow.
-- One SQL expression (CASE tests in order, so a product is computed only
-- once it is known to fit), inlined where it is used.
CREATE OR REPLACE FUNCTION billing._charge(p_in bigint, p_out bigint, p_in_price bigint, p_out_price bigint)
RETURNS bigint LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN p_in < 0 OR p_out < 0 OR p_in_price < 0 OR p_out_price < 0 THEN NULL
        WHEN p_in > 0 AND p_in_price > (9223372036854775807 - 999999) / p_in THEN NULL
        WHEN p_out > 0 AND p_out_price > (9223372036854775807 - 999999 - p_in * p_in_price) / p_out THEN NULL
        ELSE (p_in * p_in_price + p_out * p_out_price + 999999) / 1000000
    END
$$;

-- The answer for a usage entry (docs/api.md "Answers"). Scalars, not the
-- entry's row: a new entry's answer is made from what the function knows,
-- without reading the row back.
CREATE OR REPLACE FUNCTION billing._usage_body(p_entry bigint, p_user text, p_model text, p_input bigint,
                                               p_output bigint, p_charged bigint, p_balance bigint,
                                               p_replayed boolean) RETURNS json
LANGUAGE sql STABLE AS $$
    SELECT json_build_object(
        'entryId', p_entry::text,
        'userId', p_user,
        'model', p_model,
        'inputTokens', p_input,
        'outputTokens', p_output,
        'chargedMicros', p_charged,
        'balanceMicros', p_balance,
        'replayed', p_replayed)
$$;

-- Answer for an existing ledger entry with the same (user, key): its replay
-- when it is the usage this request reports, else 409. A usage entry holds
-- every field of its request, so they are compared directly; entries
-- written before migration 012 also carry a request_fingerprint (sha256 of
-- the same fields), which is no longer read.
CREATE OR REPLACE FUNCTION billing._usage_replay(e billing.ledger_entries, p_model text, p_input bigint,
                                                 p_output bigint, p_hold uuid)
RETURNS billing.api_result LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN e.type = 'usage' AND e.model = p_model AND e.input_tokens = p_input
             AND e.output_tokens = p_output AND e.hold_id IS NOT DISTINCT FROM p_hold
            THEN billing._r(201, NULL, billing._usage_body(e.id, e.user_id, e.model, e.input_tokens, e.output_tokens,
                                                      -e.amount_micros, e.balance_after_micros, true)::text,
                           'replayed')
        ELSE billing._r(409, 'idempotency_key_reused',
                        'This idempotency key was already used with a different request body', NULL)
    END
$$;

-- Every statement and expression of a PL/pgSQL function is set up again in
-- each transaction (about 3,000 instructions even for `v := v + 1`): the
-- common path below evaluates as few as it can (docs/benchmarks.md).
CREATE OR REPLACE FUNCTION billing.api_reconcile(p_user text, p_model text, p_input bigint, p_output bigint,
                                                 p_key text, p_hold uuid DEFAULT NULL)
RETURNS billing.api_result
LANGUAGE plpgsql SECURITY DEFINER SET search_path = billing, pg_temp AS $$
DECLARE
    v_err      text := coalesce(_check_user_id(p_user), _check_model(p_model),
                                _check_int('inputTokens', p_input, 0, 1000000000),
                                _check_int('outputTokens', p_output, 0, 1000000000),
                                _check_idempotency_key(p_key));
    v_bal      bigint;
    v_used     boolean;
    v_held     bigint;
    v_thr      bigint;
    v_price_id bigint;
    v_charge   bigint;
    v_hold     holds;
    v_entry    bigint;
    v_e        ledger_entries;
BEGIN
    IF v_err IS NOT NULL THEN
        RETURN _r(400, 'invalid_request', v_err, NULL);
    END IF;

    -- Serialize all money movements of this user on the account row; v_bal
    -- is NULL when the user has no account (and so no entries, no holds).
    SELECT balance_micros INTO v_bal FROM accounts WHERE user_id = p_user FOR UPDATE;

    -- Under the lock, in one statement: the same (user, key) already
    -- charged? The holds that count (the named hold's amount is
    -- available to this charge; other holds are not), the balance.low
    -- threshold, the price row in force and the charge.
    SELECT EXISTS (SELECT FROM ledger_entries WHERE user_id = p_user AND idempotency_key = p_key),
           h, t, p.id, _charge(p_input, p_output, p.input_micros_per_mtok, p.output_micros_per_mtok)
      INTO v_used, v_held, v_thr, v_price_id, v_charge
      FROM _held(p_user, p_hold) h
           CROSS JOIN _low_threshold() t
           LEFT JOIN _price_in_force(p_model) p ON true;
    -- Every refusal behind one test (each IF is an expression PL/pgSQL sets
    -- up again per transaction): a used key, no price, an overflow, a named
    -- hold, a charge the available balance does not cover, or no positive
    -- balance. Inside, the outcomes in the order the contract gives them.
    IF v_used OR v_charge IS NULL OR p_hold IS NOT NULL
       OR (v_charge > 0 AND v_charge > coalesce(v_bal, 0) - v_held) OR coalesce(v_bal, 0) <= 0 THEN
        IF v_used THEN
            SELECT * INTO v_e FROM ledger_entries WHERE user_id = p_user AND idempotency_key = p_key;
            RETURN _usage_replay(v_e, p_model, p_input, p_output, p_hold);
        END IF;
        IF v_charge IS NULL THEN
            RETURN CASE WHEN v_price_id IS NULL
                        THEN _r(422, 'unknown_model', format('Unknown model %s', p_model), NULL)
                        ELSE _r(400, 'invalid_request', 'token counts overflow the charge computation', NULL)
                   END;
        END IF;

        IF p_hold IS NOT NULL THEN
            SELECT * INTO v_hold FROM holds WHERE id = p_hold AND user_id = p_user FOR UPDATE;
            IF NOT FOUND THEN
                RETURN _r(404, 'hold_not_found', 'No such hold for this user', NULL);
            END IF;
            IF v_hold.status <> 'active' OR v_hold.expires_at <= now() THEN
                RETURN _r(409, 'hold_not_active',
                          format('Hold is %s', CASE WHEN v_hold.status = 'active' THEN 'expired'
                                                    ELSE v_hold.status END), NULL);
            END IF;
        END IF;

        IF v_charge > 0 AND v_charge > coalesce(v_bal, 0) - v_held THEN
            RETURN _r(402, 'insufficient_credits',
                      format('Charge of %s micros exceeds the available balance of %s micros',
                             v_charge, coalesce(v_bal, 0) - v_held), NULL);
        END IF;

        -- docs/spec.md §3.5: no usage at all while the balance is not positive
        -- (no account yet, or a debt a refund or a dispute left), not even a
        -- free one; a charge is refused above already (available <= balance).
        -- So an entry always follows on an existing, locked account row.
        IF coalesce(v_bal, 0) <= 0 THEN
            RETURN _r(402, 'insufficient_credits',
                      format('The balance is %s micros; usage needs a positive balance',
                             coalesce(v_bal, 0)), NULL);
        END IF;
    END IF;

    -- The entry and the balance in one statement (one executor start, not
    -- two). The key cannot be taken under the account lock; if it were, no
    -- entry and no balance change, and the answer is the replay/conflict.
    WITH e AS (
        INSERT INTO ledger_entries (user_id, type, amount_micros, balance_after_micros, idempotency_key,
                                    price_id, model, input_tokens, output_tokens, hold_id)
        VALUES (p_user, 'usage', -v_charge, v_bal - v_charge, p_key,
                v_price_id, p_model, p_input, p_output, p_hold)
        ON CONFLICT ON CONSTRAINT ledger_user_key_uniq DO NOTHING
        RETURNING id
    )
    UPDATE accounts SET balance_micros = v_bal - v_charge, updated_at = now()
      FROM e WHERE user_id = p_user
    RETURNING e.id INTO v_entry;
    IF v_entry IS NULL OR p_hold IS NOT NULL OR (v_bal >= v_thr AND v_bal - v_charge < v_thr) THEN
        IF v_entry IS NULL THEN
            SELECT * INTO v_e FROM ledger_entries WHERE user_id = p_user AND idempotency_key = p_key;
            RETURN _usage_replay(v_e, p_model, p_input, p_output, p_hold);
        END IF;
        IF p_hold IS NOT NULL THEN
            UPDATE holds SET status = 'captured', resolved_at = now() WHERE id = p_hold;
        END IF;
        -- balance.low, with the threshold read above
        IF v_bal >= v_thr AND v_bal - v_charge < v_thr THEN
            PERFORM _balance_low(p_user, v_bal, v_bal - v_charge, v_thr);
        END IF;
    END IF;

    RETURN _r(201, NULL, _usage_body(v_entry, p_user, p_model, p_input, p_output, v_charge, v_bal - v_charge,
                                     false)::text, NULL);
END
$$;

GRANT EXECUTE ON FUNCTION billing.api_reconcile(text, text, bigint, bigint, text, uuid) TO billing_app;
