-- reconcile.sql — POST /api/usage/reconcile (docs/spec.md §4.1, §4.3): price a
-- usage report and debit it exactly once per (user, idempotency key).

-- Price row in force now for a model (NULL fields when none).
CREATE OR REPLACE FUNCTION billing._price_in_force(p_model text) RETURNS billing.model_prices
LANGUAGE sql STABLE SET search_path = billing, pg_temp AS $$
    SELECT * FROM model_prices
    WHERE model = p_model AND effective_from <= now()
    ORDER BY effective_from DESC
    LIMIT 1
$$;

-- ceil((in*inPrice + out*outPrice) / 1e6) in bigint; NULL if it would overflow.
CREATE OR REPLACE FUNCTION billing._charge(p_in bigint, p_out bigint, p_in_price bigint, p_out_price bigint)
RETURNS bigint LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    c_max CONSTANT bigint := 9223372036854775807 - 999999;
    v_a bigint;
BEGIN
    IF p_in < 0 OR p_out < 0 OR p_in_price < 0 OR p_out_price < 0 THEN
        RETURN NULL;
    END IF;
    IF p_in > 0 AND p_in_price > c_max / p_in THEN
        RETURN NULL;
    END IF;
    v_a := p_in * p_in_price;
    IF p_out > 0 AND p_out_price > (c_max - v_a) / p_out THEN
        RETURN NULL;
    END IF;
    RETURN (v_a + p_out * p_out_price + 999999) / 1000000;
END
$$;

CREATE OR REPLACE FUNCTION billing._usage_body(e billing.ledger_entries, p_replayed boolean) RETURNS json
LANGUAGE sql STABLE AS $$
    SELECT json_build_object(
        'entryId', e.id::text,
        'userId', e.user_id,
        'model', e.model,
        'inputTokens', e.input_tokens,
        'outputTokens', e.output_tokens,
        'chargedMicros', -e.amount_micros,
        'balanceMicros', e.balance_after_micros,
        'replayed', p_replayed)
$$;

-- Answer for an existing ledger entry with the same (user, key).
CREATE OR REPLACE FUNCTION billing._usage_replay(e billing.ledger_entries, p_fp text) RETURNS billing.api_result
LANGUAGE sql STABLE SET search_path = billing, pg_temp AS $$
    SELECT CASE
        WHEN e.type = 'usage' AND e.request_fingerprint = p_fp
            THEN _r(201, NULL, _usage_body(e, true)::text, 'replayed')
        ELSE _r(409, 'idempotency_key_reused',
                'This idempotency key was already used with a different request body', NULL)
    END
$$;

CREATE OR REPLACE FUNCTION billing.api_reconcile(p_user text, p_model text, p_input bigint, p_output bigint,
                                                 p_key text, p_hold uuid DEFAULT NULL)
RETURNS billing.api_result
LANGUAGE plpgsql SECURITY DEFINER SET search_path = billing, pg_temp AS $$
DECLARE
    v_err     text := coalesce(_check_user_id(p_user), _check_model(p_model),
                               _check_int('inputTokens', p_input, 0, 1000000000),
                               _check_int('outputTokens', p_output, 0, 1000000000),
                               _check_idempotency_key(p_key));
    v_fp      text;
    v_bal     bigint;
    v_new     bigint;
    v_account boolean;
    v_price   model_prices;
    v_charge  bigint;
    v_hold    holds;
    v_avail   bigint;
    v_e       ledger_entries;
BEGIN
    IF v_err IS NOT NULL THEN
        RETURN _r(400, 'invalid_request', v_err, NULL);
    END IF;

    v_fp := _fingerprint(jsonb_build_array('usage', p_model, p_input, p_output, p_hold::text)::text);

    -- Serialize all money movements of this user on the account row. A user
    -- without an account has no entries and no holds: decide without writing,
    -- and create the account only when an entry follows; then decide again
    -- under its lock (a concurrent request may have written meanwhile). The
    -- loop runs at most twice.
    LOOP
        SELECT balance_micros INTO v_bal FROM accounts WHERE user_id = p_user FOR UPDATE;
        v_account := FOUND;

        -- Idempotency: same (user, key) already charged?
        IF v_account THEN
            SELECT * INTO v_e FROM ledger_entries WHERE user_id = p_user AND idempotency_key = p_key;
            IF FOUND THEN
                RETURN _usage_replay(v_e, v_fp);
            END IF;
        END IF;

        v_price := _price_in_force(p_model);
        IF v_price.id IS NULL THEN
            RETURN _r(422, 'unknown_model', format('Unknown model %s', p_model), NULL);
        END IF;
        v_charge := _charge(p_input, p_output, v_price.input_micros_per_mtok, v_price.output_micros_per_mtok);
        IF v_charge IS NULL THEN
            RETURN _r(400, 'invalid_request', 'token counts overflow the charge computation', NULL);
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

        -- The named hold's amount is available to this charge; other holds are not.
        v_avail := coalesce(v_bal, 0) - _held(p_user, p_hold);
        IF v_charge > 0 AND v_charge > v_avail THEN
            RETURN _r(402, 'insufficient_credits',
                      format('Charge of %s micros exceeds the available balance of %s micros',
                             v_charge, v_avail), NULL);
        END IF;

        -- docs/spec.md §3.5: no usage at all while the balance is not positive
        -- (no account yet, or a debt a refund or a dispute left), not even a
        -- free one; a charge is refused above already (available <= balance).
        IF coalesce(v_bal, 0) <= 0 THEN
            RETURN _r(402, 'insufficient_credits',
                      format('The balance is %s micros; usage needs a positive balance',
                             coalesce(v_bal, 0)), NULL);
        END IF;

        EXIT WHEN v_account;
        INSERT INTO accounts (user_id) VALUES (p_user) ON CONFLICT (user_id) DO NOTHING;
    END LOOP;

    v_new := v_bal - v_charge;
    INSERT INTO ledger_entries (user_id, type, amount_micros, balance_after_micros, idempotency_key,
                                request_fingerprint, price_id, model, input_tokens, output_tokens, hold_id)
    VALUES (p_user, 'usage', -v_charge, v_new, p_key,
            v_fp, v_price.id, p_model, p_input, p_output, p_hold)
    ON CONFLICT ON CONSTRAINT ledger_user_key_uniq DO NOTHING
    RETURNING * INTO v_e;
    IF NOT FOUND THEN
        -- Cannot happen under the account lock; answer as a replay/conflict anyway.
        SELECT * INTO v_e FROM ledger_entries WHERE user_id = p_user AND idempotency_key = p_key;
        RETURN _usage_replay(v_e, v_fp);
    END IF;

    UPDATE accounts SET balance_micros = v_new, updated_at = now() WHERE user_id = p_user;
    IF p_hold IS NOT NULL THEN
        UPDATE holds SET status = 'captured', resolved_at = now() WHERE id = p_hold;
    END IF;
    PERFORM _balance_changed(p_user, v_bal, v_new);

    RETURN _r(201, NULL, _usage_body(v_e, false)::text, NULL);
END
$$;

GRANT EXECUTE ON FUNCTION billing.api_reconcile(text, text, bigint, bigint, text, uuid) TO billing_app;
