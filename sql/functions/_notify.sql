-- _notify.sql — writing outgoing notifications (docs/spec.md §4.4) into
-- billing.outbox in the caller's transaction; shared by reconcile and the
-- Stripe event. Delivery is outbox.sql.

-- balance.low threshold: GUC billing.balance_low_threshold_micros if set,
-- else billing.settings, else 1,000,000. One row; used in FROM, where the
-- planner inlines it into the caller's statement (see _held in _common.sql).
CREATE OR REPLACE FUNCTION billing._low_threshold() RETURNS SETOF bigint
LANGUAGE sql STABLE ROWS 1 AS $$
    SELECT CASE
        WHEN current_setting('billing.balance_low_threshold_micros', true) ~ '^\s*[0-9]{1,18}\s*$'
            THEN trim(current_setting('billing.balance_low_threshold_micros', true))::bigint
        ELSE coalesce((SELECT balance_low_threshold_micros FROM billing.settings LIMIT 1), 1000000)
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

-- Emit balance.low when a balance crosses from >= threshold to < threshold;
-- p_thr is the threshold in force (_low_threshold), read by the caller.
CREATE OR REPLACE FUNCTION billing._balance_low(p_user text, p_before bigint, p_after bigint, p_thr bigint)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF p_before >= p_thr AND p_after < p_thr THEN
        PERFORM billing._emit('balance.low', jsonb_build_object(
            'userId', p_user, 'balanceMicros', p_after, 'thresholdMicros', p_thr));
    END IF;
END
$$;

-- The same, reading the threshold in force.
CREATE OR REPLACE FUNCTION billing._balance_changed(p_user text, p_before bigint, p_after bigint)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM billing._balance_low(p_user, p_before, p_after, t) FROM billing._low_threshold() t;
END
$$;
