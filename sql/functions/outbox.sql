-- outbox.sql — delivery of the notification outbox (docs/spec.md §4.4), at
-- least once. Claiming leases rows by pushing next_attempt_at forward, so
-- other workers/pods skip them meanwhile; attempts counts delivery attempts
-- started. Writing notifications is _notify.sql.
--
-- Bounded (010_outbox_retention.sql): a notification that failed
-- settings.outbox_max_attempts times, or is still failing outbox_max_age
-- after it was written (or re-driven), is a dead letter: dead_at set,
-- next_attempt_at 'infinity', never claimed again until outbox_redrive().
-- Delivered rows go after settings.outbox_retention, a small batch at a time
-- (outbox_maintain, called by every delivery round).

-- Whether a row that is due or just failed has had its chances.
CREATE OR REPLACE FUNCTION billing._outbox_spent(o billing.outbox) RETURNS boolean
LANGUAGE sql STABLE SET search_path = billing, pg_temp AS $$
    SELECT o.attempts >= s.outbox_max_attempts
        OR coalesce(o.redriven_at, o.created_at) < now() - s.outbox_max_age
      FROM settings s
$$;

-- Claims up to p_limit due rows for p_lease_seconds. A due row whose
-- attempts are used up (its deliveries never got recorded: a worker that
-- died every time) becomes a dead letter instead of being claimed again.
CREATE OR REPLACE FUNCTION billing.outbox_claim(p_limit int, p_lease_seconds int)
RETURNS TABLE (id bigint, event_id uuid, type text, payload text, attempts int)
LANGUAGE sql SECURITY DEFINER SET search_path = billing, pg_temp AS $$
    WITH due AS (
        SELECT o.id, o.attempts >= s.outbox_max_attempts AS spent
          FROM billing.outbox o, billing.settings s
         WHERE o.delivered_at IS NULL AND o.dead_at IS NULL AND o.next_attempt_at <= now()
         ORDER BY o.next_attempt_at, o.id
         LIMIT greatest(1, least(coalesce(p_limit, 10), 1000))
           FOR UPDATE OF o SKIP LOCKED),
    buried AS (
        UPDATE billing.outbox o
           SET dead_at = now(), next_attempt_at = 'infinity',
               last_error = coalesce(o.last_error, 'attempts used up')
          FROM due
         WHERE o.id = due.id AND due.spent
        RETURNING o.id)
    UPDATE billing.outbox o
       SET next_attempt_at = now() + make_interval(secs => greatest(1, least(coalesce(p_lease_seconds, 60), 3600))),
           attempts = o.attempts + 1
      FROM due
     WHERE o.id = due.id AND NOT due.spent
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

-- A failed attempt: exponential backoff, 2^attempts seconds capped at one
-- hour, or a dead letter when its chances are spent.
CREATE OR REPLACE FUNCTION billing.outbox_retry(p_id bigint, p_error text) RETURNS boolean
LANGUAGE sql SECURITY DEFINER SET search_path = billing, pg_temp AS $$
    WITH u AS (
        UPDATE billing.outbox o
           SET next_attempt_at = CASE WHEN _outbox_spent(o) THEN 'infinity'
                                      ELSE now() + make_interval(secs => least(3600, power(2, least(greatest(o.attempts, 1), 12))::int))
                                 END,
               dead_at = CASE WHEN _outbox_spent(o) THEN now() END,
               last_error = left(p_error, 2000)
         WHERE o.id = p_id AND o.delivered_at IS NULL AND o.dead_at IS NULL
        RETURNING 1)
    SELECT EXISTS (SELECT 1 FROM u)
$$;
GRANT EXECUTE ON FUNCTION billing.outbox_retry(bigint, text) TO billing_app;

-- Notifications still to be delivered (dead letters are not).
CREATE OR REPLACE FUNCTION billing.outbox_backlog() RETURNS bigint
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = billing, pg_temp AS $$
    SELECT count(*) FROM billing.outbox WHERE delivered_at IS NULL AND dead_at IS NULL
$$;
GRANT EXECUTE ON FUNCTION billing.outbox_backlog() TO billing_app;

CREATE OR REPLACE FUNCTION billing.outbox_dead_letters() RETURNS bigint
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = billing, pg_temp AS $$
    SELECT count(*) FROM billing.outbox
     WHERE delivered_at IS NULL AND next_attempt_at = 'infinity' AND dead_at IS NOT NULL
$$;
GRANT EXECUTE ON FUNCTION billing.outbox_dead_letters() TO billing_app;

-- Deletes up to p_limit delivered rows older than the retention, oldest id
-- first; row locks only, a batch at a time, never a lock on the table. When
-- the oldest delivered row is still within the retention nothing is read
-- beyond it (one index probe per call): a row delivered out of order waits
-- for the rows before it, a little past its retention.
CREATE OR REPLACE FUNCTION billing.outbox_prune(p_limit int) RETURNS int
LANGUAGE plpgsql SECURITY DEFINER SET search_path = billing, pg_temp AS $$
DECLARE
    v_cutoff timestamptz := now() - (SELECT s.outbox_retention FROM settings s);
    v_n      int;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM (SELECT o.delivered_at FROM outbox o
                                   WHERE o.delivered_at IS NOT NULL
                                   ORDER BY o.id LIMIT 1) f
                    WHERE f.delivered_at < v_cutoff) THEN
        RETURN 0;
    END IF;

    -- other workers prune too: each takes rows the others have not
    WITH oldest AS (
        SELECT o.id FROM outbox o
         WHERE o.delivered_at IS NOT NULL
         ORDER BY o.id
         LIMIT greatest(1, least(coalesce(p_limit, 500), 10000))
           FOR UPDATE SKIP LOCKED),
    gone AS (
        DELETE FROM outbox o USING oldest
         WHERE o.id = oldest.id AND o.delivered_at < v_cutoff
        RETURNING 1)
    SELECT count(*) INTO v_n FROM gone;

    RETURN v_n;
END
$$;
GRANT EXECUTE ON FUNCTION billing.outbox_prune(int) TO billing_app;

-- What a delivery round does besides delivering: prunes a batch, then
-- counts the backlog and the dead letters for the gauges.
CREATE OR REPLACE FUNCTION billing.outbox_maintain(p_prune int)
RETURNS TABLE (backlog bigint, dead bigint, pruned int)
LANGUAGE sql SECURITY DEFINER SET search_path = billing, pg_temp AS $$
    SELECT outbox_backlog(), outbox_dead_letters(), p.n
      FROM (SELECT outbox_prune(p_prune) AS n) p
$$;
GRANT EXECUTE ON FUNCTION billing.outbox_maintain(int) TO billing_app;

-- An operator's re-drive (the schema owner; not billing_app): the dead
-- letters named (all when p_ids is NULL) are delivered again from now,
-- with fresh attempts and a fresh max age. Answers how many.
CREATE OR REPLACE FUNCTION billing.outbox_redrive(p_ids bigint[] DEFAULT NULL) RETURNS bigint
LANGUAGE sql SECURITY DEFINER SET search_path = billing, pg_temp AS $$
    WITH r AS (
        UPDATE billing.outbox
           SET dead_at = NULL, attempts = 0, next_attempt_at = now(), redriven_at = now()
         WHERE dead_at IS NOT NULL AND delivered_at IS NULL
           AND (p_ids IS NULL OR id = ANY (p_ids))
        RETURNING 1)
    SELECT count(*) FROM r
$$;
