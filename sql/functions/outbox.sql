-- outbox.sql — delivery of the notification outbox (docs/spec.md §4.4), at
-- least once. Claiming leases rows by pushing next_attempt_at forward, so
-- other workers/pods skip them meanwhile; attempts counts delivery attempts
-- started. Writing notifications is _notify.sql.

CREATE OR REPLACE FUNCTION billing.outbox_claim(p_limit int, p_lease_seconds int)
RETURNS TABLE (id bigint, event_id uuid, type text, payload text, attempts int)
LANGUAGE sql SECURITY DEFINER SET search_path = billing, pg_temp AS $$
    WITH due AS (
        SELECT o.id
          FROM billing.outbox o
         WHERE o.delivered_at IS NULL AND o.next_attempt_at <= now()
         ORDER BY o.next_attempt_at, o.id
         LIMIT greatest(1, least(coalesce(p_limit, 10), 1000))
           FOR UPDATE SKIP LOCKED)
    UPDATE billing.outbox o
       SET next_attempt_at = now() + make_interval(secs => greatest(1, least(coalesce(p_lease_seconds, 60), 3600))),
           attempts = o.attempts + 1
      FROM due
     WHERE o.id = due.id
    RETURNING o.id, o.event_id, o.type, o.payload::text, o.attempts
$$;
GRANT EXECUTE ON FUNCTION billing.outbox_claim(int, int) TO billing_app;

CREATE OR REPLACE FUNCTION billing.outbox_done(p_id bigint) RETURNS boolean
LANGUAGE sql SECURITY DEFINER SET search_path = billing, pg_temp AS $$
    WITH u AS (
        UPDATE billing.outbox SET delivered_at = now(), last_error = NULL
         WHERE id = p_id AND delivered_at IS NULL
        RETURNING 1)
    SELECT EXISTS (SELECT 1 FROM u)
$$;
GRANT EXECUTE ON FUNCTION billing.outbox_done(bigint) TO billing_app;

-- Exponential backoff: 2^attempts seconds, capped at one hour.
CREATE OR REPLACE FUNCTION billing.outbox_retry(p_id bigint, p_error text) RETURNS boolean
LANGUAGE sql SECURITY DEFINER SET search_path = billing, pg_temp AS $$
    WITH u AS (
        UPDATE billing.outbox
           SET next_attempt_at = now() + make_interval(secs => least(3600, power(2, least(greatest(attempts, 1), 12))::int)),
               last_error = left(p_error, 2000)
         WHERE id = p_id AND delivered_at IS NULL
        RETURNING 1)
    SELECT EXISTS (SELECT 1 FROM u)
$$;
GRANT EXECUTE ON FUNCTION billing.outbox_retry(bigint, text) TO billing_app;

CREATE OR REPLACE FUNCTION billing.outbox_backlog() RETURNS bigint
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = billing, pg_temp AS $$
    SELECT count(*) FROM billing.outbox WHERE delivered_at IS NULL
$$;
GRANT EXECUTE ON FUNCTION billing.outbox_backlog() TO billing_app;
