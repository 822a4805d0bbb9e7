-- _notify.sql — writing outgoing notifications (docs/spec.md §4.4) into
-- billing.outbox in the caller's transaction; shared by reconcile and the
-- Stripe event. Delivery is outbox.sql.

-- balance.low threshold: GUC billing.balance_low_threshold_micros if set,
-- else billing.settings, else 1,000,000.
-- Called on every charge: no SET clause (see _common.sql), names qualified.
CREATE OR REPLACE FUNCTION billing._low_threshold() RETURNS bigint
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_guc text := current_setting('billing.balance_low_threshold_micros', true);
    v bigint;
BEGIN
    IF v_guc ~ '^\s*[0-9]{1,18}\s*$' THEN
        RETURN trim(v_guc)::bigint;
    END IF;
    SELECT balance_low_threshold_micros INTO v FROM billing.settings LIMIT 1;
    RETURN coalesce(v, 1000000);
END
$$;

-- Write an outbox notification in the current transaction.
CREATE OR REPLACE FUNCTION billing._emit(p_type text, p_data jsonb) RETURNS void
LANGUAGE plpgsql SET search_path = billing, pg_temp AS $$
DECLARE
    v_enabled boolean;
    v_eid uuid := gen_random_uuid();
BEGIN
    SELECT outbox_enabled INTO v_enabled FROM settings LIMIT 1;
    IF NOT coalesce(v_enabled, true) THEN
        RETURN;
    END IF;
    INSERT INTO outbox (event_id, type, payload)
    VALUES (v_eid, p_type,
            jsonb_build_object('id', v_eid::text, 'type', p_type,
                               'createdAt', _ts(now()), 'data', p_data));
END
$$;

-- Emit balance.low when a balance crosses from >= threshold to < threshold.
CREATE OR REPLACE FUNCTION billing._balance_changed(p_user text, p_before bigint, p_after bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_thr bigint := billing._low_threshold();
BEGIN
    IF p_before >= v_thr AND p_after < v_thr THEN
        PERFORM billing._emit('balance.low', jsonb_build_object(
            'userId', p_user, 'balanceMicros', p_after, 'thresholdMicros', v_thr));
    END IF;
END
$$;
