-- audit.sql — the ledger audit behind billing_invariant_violations
-- (docs/spec.md §3), incremental: each run checks the ledger entries written
-- since the last one, so its cost follows the new entries, not the ledger's
-- size, and it stops at a time budget, keeping its progress.
--
--   billing.audit_run(budget_ms)  the module's periodic run (billing_app)
--   billing.audit_full()          a full pass, on demand (the schema owner)
--
-- One runner per cluster: a run takes a transaction-level advisory lock and
-- skips when another session holds it. State: billing.audit_state,
-- audit_accounts, audit_findings (009_incremental_audit.sql).
--
-- What a run proves, for the entries up to its checkpoint:
--   (2) every entry's balance_after = the previous entry's + its amount, the
--       account's running sum = the balance_after of its last audited entry,
--       and, for every account touched and a rotating slice of all accounts,
--       the stored balance = the balance_after of its latest entry; together:
--       balance = sum of the entries;
--   (3) no idempotency key of a new entry is used twice for its user;
--   (4) the purchases new entries belong to: one credit when paid, none
--       otherwise, the package's credits, the refunds, the same user; the
--       disputes they belong to: one debit, a credit back only when won, of
--       what was debited; a usage reversal credits one usage entry back;
--   (5) no usage or debit adjustment left a negative balance; no negative
--       balance without a refund or a dispute (accounts touched and the
--       rotating slice);
--   (1) checked live on every run (_append_only.sql).
-- The full pass (billing.invariant_violations()) also covers what no new
-- entry touches: a purchase marked paid without any entry, hold keys.
--
-- Final entries. Identity values are taken when a row is inserted, but the
-- transactions commit in any order: an entry with a lower id may become
-- visible after one with a higher id was audited. A checkpoint may therefore
-- only pass ids that can no longer appear: a run notes the sequence's value
-- (horizon_id) and the virtual transaction ids of the sessions writing the
-- ledger at that moment (an INSERT holds RowExclusiveLock on the table
-- before it takes an id); once all of those have ended, every id up to
-- horizon_id is either visible or never will be (rolled back), and a later
-- run may audit up to it. This relies on the identity sequence caching one
-- value (the default), which audit_run checks.

-- The advisory lock of the audit (migrate.sh uses ...201).
CREATE OR REPLACE FUNCTION billing._audit_lock_key() RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$
    SELECT 7340281190455102202::bigint
$$;

-- The virtual transaction ids of the sessions that may be inserting into the
-- ledger now.
CREATE OR REPLACE FUNCTION billing._audit_ledger_writers() RETURNS text[]
LANGUAGE sql VOLATILE SET search_path = billing, pg_temp AS $$
    SELECT coalesce(array_agg(DISTINCT l.virtualtransaction), '{}')
      FROM pg_locks l
     WHERE l.locktype = 'relation'
       AND l.database = (SELECT d.oid FROM pg_database d WHERE d.datname = current_database())
       AND l.relation = 'billing.ledger_entries'::regclass
       AND l.mode = 'RowExclusiveLock' AND l.virtualtransaction IS NOT NULL
$$;

-- true while any of these transactions is still running (each holds the lock
-- of its own virtual transaction id until it ends)
CREATE OR REPLACE FUNCTION billing._audit_writers_running(p_writers text[]) RETURNS boolean
LANGUAGE sql VOLATILE SET search_path = billing, pg_temp AS $$
    SELECT EXISTS (SELECT 1 FROM pg_locks l
                    WHERE l.locktype = 'virtualxid' AND l.virtualxid = ANY (p_writers))
$$;

-- What billing_invariant_violations shows: the findings kept so far and the
-- append-only checks of now.
CREATE OR REPLACE FUNCTION billing._audit_violations() RETURNS bigint
LANGUAGE sql STABLE SET search_path = billing, pg_temp AS $$
    SELECT (SELECT count(*) FROM audit_findings)
         + (SELECT count(*) FROM _append_only_violations())
$$;

-- Account-level checks of invariants 2 and 5 for these users: the stored
-- balance against the latest entry (one index probe each), a negative
-- balance without any refund or dispute entry (_scoped_invariants.sql).
CREATE OR REPLACE FUNCTION billing._audit_accounts(p_users text[]) RETURNS void
LANGUAGE sql VOLATILE SET search_path = billing, pg_temp AS $$
    INSERT INTO audit_findings (invariant, user_id, detail)
    SELECT 2, a.user_id,
           format('balance differs from the last entry''s balance_after by %s',
                  a.balance_micros::numeric - coalesce(e.balance_after_micros, 0))
      FROM accounts a
      LEFT JOIN LATERAL (SELECT l.balance_after_micros FROM ledger_entries l
                          WHERE l.user_id = a.user_id ORDER BY l.id DESC LIMIT 1) e ON true
     WHERE a.user_id = ANY (p_users)
       AND a.balance_micros <> coalesce(e.balance_after_micros, 0)
    UNION ALL
    SELECT * FROM _debt_violations(p_users)
    ON CONFLICT DO NOTHING
$$;

-- Invariant 4 for these purchases (_scoped_invariants.sql).
CREATE OR REPLACE FUNCTION billing._audit_purchases(p_ids uuid[]) RETURNS void
LANGUAGE sql VOLATILE SET search_path = billing, pg_temp AS $$
    INSERT INTO audit_findings (invariant, user_id, detail)
    SELECT v.invariant, v.user_id, v.detail FROM _purchase_violations(p_ids) v
    ON CONFLICT DO NOTHING
$$;

-- Invariant 4 for these disputes (_scoped_invariants.sql): a dispute debits
-- at most once, a won one credits back at most once and exactly what it
-- debited.
CREATE OR REPLACE FUNCTION billing._audit_disputes(p_ids text[]) RETURNS void
LANGUAGE sql VOLATILE SET search_path = billing, pg_temp AS $$
    INSERT INTO audit_findings (invariant, user_id, detail)
    SELECT v.invariant, v.user_id, v.detail FROM _dispute_violations(p_ids) v
    ON CONFLICT DO NOTHING
$$;

-- Audits the final entries with p_from < id <= p_to: chains, running sums,
-- the accounts and purchases they touch, their keys and usage balances.
CREATE OR REPLACE FUNCTION billing._audit_entries(p_from bigint, p_to bigint) RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = billing, pg_temp AS $$
BEGIN
    -- (2) each entry against the one before it (the last audited one first)
    INSERT INTO audit_findings (invariant, user_id, detail)
    SELECT 2, c.user_id,
           format('entry %s: balance_after %s <> previous %s + amount %s',
                  c.id, c.balance_after_micros, c.prev, c.amount_micros)
      FROM (SELECT l.id, l.user_id, l.amount_micros, l.balance_after_micros,
                   coalesce(lag(l.balance_after_micros) OVER (PARTITION BY l.user_id ORDER BY l.id),
                            a.balance_after_micros, 0) AS prev
              FROM ledger_entries l
              LEFT JOIN audit_accounts a ON a.user_id = l.user_id
             WHERE l.id > p_from AND l.id <= p_to) c
     WHERE c.balance_after_micros::numeric <> c.prev::numeric + c.amount_micros
    ON CONFLICT DO NOTHING;

    -- (2) the running sums, and each against the last balance_after
    WITH t AS (
        SELECT l.user_id, max(l.id) AS through_id, sum(l.amount_micros) AS total,
               (array_agg(l.balance_after_micros ORDER BY l.id DESC))[1] AS last_after
          FROM ledger_entries l
         WHERE l.id > p_from AND l.id <= p_to
         GROUP BY l.user_id),
    u AS (
        INSERT INTO audit_accounts AS a (user_id, through_id, sum_micros, balance_after_micros)
        SELECT t.user_id, t.through_id, t.total, t.last_after FROM t
        ON CONFLICT (user_id) DO UPDATE
           SET through_id = EXCLUDED.through_id,
               sum_micros = a.sum_micros + EXCLUDED.sum_micros,
               balance_after_micros = EXCLUDED.balance_after_micros
        RETURNING a.user_id, a.sum_micros, a.balance_after_micros)
    INSERT INTO audit_findings (invariant, user_id, detail)
    SELECT 2, u.user_id,
           format('the sum of the entries differs from the last balance_after by %s',
                  u.balance_after_micros - u.sum_micros)
      FROM u
     WHERE u.sum_micros <> u.balance_after_micros
    ON CONFLICT DO NOTHING;

    -- (3) a key used twice (one probe of the unique index each); (4) usage
    -- reversals and dispute entries, (5) usage and debit adjustments: as the
    -- full pass judges them (_scoped_invariants.sql), for this range
    INSERT INTO audit_findings (invariant, user_id, detail)
    SELECT 3, l.user_id, format('idempotency key %s used %s times', l.idempotency_key, k.n)
      FROM ledger_entries l
     CROSS JOIN LATERAL (SELECT count(*) AS n FROM ledger_entries x
                          WHERE x.user_id = l.user_id
                            AND x.idempotency_key = l.idempotency_key) k
     WHERE l.id > p_from AND l.id <= p_to AND k.n > 1
    UNION ALL
    SELECT * FROM _debit_violations(p_from, p_to)
    UNION ALL
    SELECT * FROM _reversal_violations(p_from, p_to)
    UNION ALL
    SELECT * FROM _dispute_entry_violations(p_from, p_to)
    ON CONFLICT DO NOTHING;

    PERFORM _audit_accounts(ARRAY(SELECT DISTINCT l.user_id FROM ledger_entries l
                                   WHERE l.id > p_from AND l.id <= p_to));
    PERFORM _audit_purchases(ARRAY(SELECT DISTINCT l.purchase_id FROM ledger_entries l
                                    WHERE l.id > p_from AND l.id <= p_to
                                      AND l.purchase_id IS NOT NULL));
    PERFORM _audit_disputes(ARRAY(SELECT DISTINCT l.dispute_id FROM ledger_entries l
                                   WHERE l.id > p_from AND l.id <= p_to
                                     AND l.dispute_id IS NOT NULL));
END
$$;

-- Moves the final point to the horizon once its writers have ended, and
-- notes a new horizon. Caller holds the advisory lock.
CREATE OR REPLACE FUNCTION billing._audit_advance(st billing.audit_state) RETURNS billing.audit_state
LANGUAGE plpgsql VOLATILE SET search_path = billing, pg_temp AS $$
DECLARE
    v_seq regclass := pg_get_serial_sequence('billing.ledger_entries', 'id')::regclass;
BEGIN
    -- a cached value could be handed out below the horizon later
    IF (SELECT s.seqcache FROM pg_sequence s WHERE s.seqrelid = v_seq) <> 1 THEN
        RAISE EXCEPTION 'the ledger audit needs % to cache 1 value (CACHE 1)', v_seq;
    END IF;

    IF st.horizon_id IS NOT NULL AND _audit_writers_running(st.horizon_writers) THEN
        RETURN st;              -- not final yet: the next run looks again
    END IF;

    IF st.horizon_id IS NOT NULL THEN
        st.final_through := greatest(st.final_through, st.horizon_id);
    END IF;

    -- the sequence first, then who writes: a writer that took an id up to
    -- horizon_id holds its lock by now
    st.horizon_id := coalesce(pg_sequence_last_value(v_seq), 0);
    st.horizon_writers := _audit_ledger_writers();

    RETURN st;
END
$$;

-- One run: at least one chunk of p_chunk entries when any is waiting, more
-- until p_budget_ms have passed; p_sweep accounts of the rotating check.
-- Answers whether it ran (or skipped: another session audits), how many
-- entries it examined, whether final entries are left (run again soon), the
-- violations to report and when a run last succeeded (Unix time).
CREATE OR REPLACE FUNCTION billing.audit_run(p_budget_ms int, p_sweep int DEFAULT 1000,
                                             p_chunk int DEFAULT 5000)
RETURNS TABLE (ran boolean, examined bigint, more boolean, violations bigint, last_success bigint)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = billing, pg_temp AS $$
DECLARE
    c_chunk    constant int := greatest(coalesce(p_chunk, 5000), 1);
    st         audit_state;
    v_deadline timestamptz;
    v_n        bigint;
    v_last     bigint;
    v_to       bigint;
    v_done     bigint := 0;
    v_users    text[];
BEGIN
    v_deadline := clock_timestamp()
                  + make_interval(secs => greatest(coalesce(p_budget_ms, 1000), 1) / 1000.0);

    -- one runner at a time in the whole cluster; the others only read
    IF NOT pg_try_advisory_xact_lock(_audit_lock_key()) THEN
        RETURN QUERY
        SELECT false, 0::bigint, false, _audit_violations(),
               extract(epoch FROM s.last_success_at)::bigint
          FROM audit_state s;
        RETURN;
    END IF;

    SELECT * INTO st FROM audit_state;
    st := _audit_advance(st);

    -- the final entries not yet audited, a chunk at a time, within the budget
    LOOP
        EXIT WHEN st.checked_through >= st.final_through;

        SELECT count(*), max(c.id) INTO v_n, v_last
          FROM (SELECT l.id FROM ledger_entries l
                 WHERE l.id > st.checked_through AND l.id <= st.final_through
                 ORDER BY l.id LIMIT c_chunk) c;
        v_to := CASE WHEN v_n < c_chunk THEN st.final_through ELSE v_last END;

        PERFORM _audit_entries(st.checked_through, v_to);

        v_done := v_done + v_n;
        st.checked_through := v_to;

        EXIT WHEN clock_timestamp() >= v_deadline;
    END LOOP;

    -- a slice of all accounts: a balance changed without an entry shows here
    v_users := ARRAY(SELECT a.user_id FROM accounts a
                      WHERE st.sweep_after IS NULL OR a.user_id > st.sweep_after
                      ORDER BY a.user_id LIMIT greatest(coalesce(p_sweep, 1000), 1));
    PERFORM _audit_accounts(v_users);
    st.sweep_after := CASE WHEN cardinality(v_users) < greatest(coalesce(p_sweep, 1000), 1)
                           THEN NULL ELSE v_users[cardinality(v_users)] END;

    st.last_success_at := now();

    UPDATE audit_state
       SET checked_through = st.checked_through, final_through = st.final_through,
           horizon_id = st.horizon_id, horizon_writers = st.horizon_writers,
           sweep_after = st.sweep_after, last_success_at = st.last_success_at;

    RETURN QUERY
    SELECT true, v_done, st.checked_through < st.final_through, _audit_violations(),
           extract(epoch FROM st.last_success_at)::bigint;
END
$$;
GRANT EXECUTE ON FUNCTION billing.audit_run(int, int, int) TO billing_app;

-- The full pass, on demand (psql, as the schema owner; it reads the whole
-- ledger, so give the session the time it needs): waits for a running
-- audit, replaces the findings with what billing.invariant_violations()
-- finds now, and rebuilds the running sums up to the final point, so the
-- incremental runs go on from there. Answers the violations found.
CREATE OR REPLACE FUNCTION billing.audit_full()
RETURNS TABLE (invariant int, user_id text, detail text)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = billing, pg_temp AS $$
#variable_conflict use_column
DECLARE
    st audit_state;
BEGIN
    PERFORM pg_advisory_xact_lock(_audit_lock_key());

    SELECT * INTO st FROM audit_state;
    st := _audit_advance(st);

    DELETE FROM audit_findings;
    INSERT INTO audit_findings (invariant, user_id, detail)
    SELECT v.invariant, v.user_id, v.detail
      FROM invariant_violations() v
     WHERE v.invariant <> 1                 -- checked live on every run
    ON CONFLICT DO NOTHING;

    DELETE FROM audit_accounts;
    INSERT INTO audit_accounts (user_id, through_id, sum_micros, balance_after_micros)
    SELECT DISTINCT ON (l.user_id) l.user_id, l.id, s.total, l.balance_after_micros
      FROM ledger_entries l
      JOIN (SELECT e.user_id, sum(e.amount_micros) AS total FROM ledger_entries e
             WHERE e.id <= st.final_through GROUP BY e.user_id) s ON s.user_id = l.user_id
     WHERE l.id <= st.final_through
     ORDER BY l.user_id, l.id DESC;

    UPDATE audit_state
       SET checked_through = st.final_through, final_through = st.final_through,
           horizon_id = st.horizon_id, horizon_writers = st.horizon_writers,
           sweep_after = NULL, last_success_at = now(), last_full_at = now();

    RETURN QUERY
    SELECT f.invariant, f.user_id, f.detail FROM audit_findings f
    UNION ALL
    SELECT a.invariant, a.user_id, a.detail FROM _append_only_violations() a
    ORDER BY 1, 2, 3;
END
$$;
