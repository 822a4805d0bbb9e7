-- invariants.sql — billing.invariant_violations(): docs/spec.md §3 as a query
-- over the whole ledger. Empty result = healthy. Used by tests, by the full
-- pass of the audit (billing.audit_full(), audit.sql) and by module versions
-- older than the incremental audit, whose periodic check calls it (so
-- billing_app may still execute it).

CREATE OR REPLACE FUNCTION billing.invariant_violations()
RETURNS TABLE (invariant int, user_id text, detail text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = billing, pg_temp AS $$
    -- (1) append-only (_append_only.sql)
    SELECT * FROM _append_only_violations()
    UNION ALL
    -- (2) balance = sum(ledger amounts)
    SELECT 2, a.user_id,
           format('balance %s <> ledger sum %s', a.balance_micros, coalesce(s.total, 0))
      FROM accounts a
      LEFT JOIN (SELECT l.user_id, sum(l.amount_micros) AS total
                   FROM ledger_entries l GROUP BY l.user_id) s ON s.user_id = a.user_id
     WHERE a.balance_micros <> coalesce(s.total, 0)
    UNION ALL
    SELECT 2, c.user_id,
           format('entry %s: balance_after %s <> previous %s + amount %s',
                  c.id, c.balance_after_micros, coalesce(c.prev, 0), c.amount_micros)
      FROM (SELECT l.id, l.user_id, l.amount_micros, l.balance_after_micros,
                   lag(l.balance_after_micros) OVER (PARTITION BY l.user_id ORDER BY l.id) AS prev
              FROM ledger_entries l) c
     WHERE c.balance_after_micros <> coalesce(c.prev, 0) + c.amount_micros
    UNION ALL
    SELECT 2, l.user_id, format('ledger entries for user without account (%s)', count(*))
      FROM ledger_entries l
     WHERE NOT EXISTS (SELECT 1 FROM accounts a WHERE a.user_id = l.user_id)
     GROUP BY l.user_id
    UNION ALL
    -- (3) an idempotency key is used at most once per user
    SELECT 3, l.user_id, format('idempotency key %s used %s times', l.idempotency_key, count(*))
      FROM ledger_entries l
     GROUP BY l.user_id, l.idempotency_key
    HAVING count(*) > 1
    UNION ALL
    SELECT 3, h.user_id, format('hold idempotency key %s used %s times', h.idempotency_key, count(*))
      FROM holds h
     GROUP BY h.user_id, h.idempotency_key
    HAVING count(*) > 1
    UNION ALL
    -- an admin entry is the outcome of exactly one admin request (its key)
    SELECT 3, l.user_id, format('%s entry %s has %s admin requests', l.type, l.id, count(k.*))
      FROM ledger_entries l
      LEFT JOIN admin_requests k ON k.entry_id = l.id AND k.operation = l.type
     WHERE l.type IN ('adjustment', 'usage_reversal')
     GROUP BY l.id, l.user_id, l.type
    HAVING count(k.*) <> 1
    UNION ALL
    -- (4) purchases, disputes, dispute entries, usage reversals
    --     (_scoped_invariants.sql, here over everything)
    SELECT * FROM _purchase_violations(ARRAY(SELECT p.id FROM purchases p))
    UNION ALL
    SELECT * FROM _dispute_violations(ARRAY(SELECT d.id FROM disputes d))
    UNION ALL
    SELECT * FROM _dispute_entry_violations(0, 9223372036854775807)
    UNION ALL
    SELECT * FROM _reversal_violations(0, 9223372036854775807)
    UNION ALL
    -- (5) a negative balance only through a refund or a dispute; neither
    --     usage nor an administrator's debit ever leaves one
    --     (_scoped_invariants.sql, over every debt and every entry)
    SELECT * FROM _debt_violations(ARRAY(SELECT a.user_id FROM accounts a WHERE a.balance_micros < 0))
    UNION ALL
    SELECT * FROM _debit_violations(0, 9223372036854775807)
$$;

GRANT EXECUTE ON FUNCTION billing.invariant_violations() TO billing_app;
