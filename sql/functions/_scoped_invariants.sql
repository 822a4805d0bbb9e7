-- _scoped_invariants.sql — the predicates of invariants 4 and 5 of
-- docs/spec.md §3 that the full pass (billing.invariant_violations(),
-- invariants.sql) and the incremental audit (audit.sql) both check, each
-- defined once, as rows of (invariant, user_id, detail), over a scope:
--
--   _purchase_violations(purchase ids)      a purchase's credit, refunds, user
--   _dispute_violations(dispute ids)        a dispute's debit and credit back
--   _dispute_entry_violations(from, to)     dispute entries naming their dispute
--   _reversal_violations(from, to)          usage reversals
--   _debt_violations(user ids)              a debt without a refund or dispute
--   _debit_violations(from, to)             usage and debit adjustments
--
-- An entry range is p_from < id <= p_to: an audit run passes the chunk of
-- final entries it audits, and the purchases, disputes and users they
-- touch; the full pass passes everything: (0, 9223372036854775807), the ids
-- of every purchase and dispute, the users with a negative balance.
--
-- No SET search_path, unlike _append_only.sql, and every name is qualified:
-- a STABLE LANGUAGE sql function without SET is inlined into the query that
-- calls it, so the planner sees the scope: a run's chunk is a range of the
-- ledger's primary key, the full pass's (0, max) a plain scan. A call whose
-- argument is a sub-select (the full pass's id arrays) is not inlined; it is
-- planned for an array of unknown length: a probe of the primary key per id,
-- then of the ledger's indexes per purchase or dispute (t/008-audit-plan.t
-- checks that no plan of a run scans the ledger).

-- (4) a payment credits exactly once: one credit entry when paid, none
-- otherwise, of the package's credits; the refunds recorded are the refund
-- entries; every entry of a purchase is its user's (ledger_purchase_idx)
CREATE OR REPLACE FUNCTION billing._purchase_violations(p_ids uuid[])
RETURNS TABLE (invariant int, user_id text, detail text)
LANGUAGE sql STABLE AS $$
    SELECT 4, p.user_id,
           format('purchase %s (%s) has %s credit entries', p.id, p.status, coalesce(c.n, 0))
      FROM billing.purchases p
      LEFT JOIN LATERAL (SELECT count(*) AS n FROM billing.ledger_entries l
                          WHERE l.purchase_id = p.id AND l.type = 'purchase') c ON true
     WHERE p.id = ANY (p_ids)
       AND ((p.status IN ('paid', 'partially_refunded', 'refunded') AND coalesce(c.n, 0) <> 1)
            OR (p.status IN ('pending', 'failed') AND coalesce(c.n, 0) <> 0))
    UNION ALL
    SELECT 4, p.user_id,
           format('purchase %s credited %s but package grants %s', p.id, c.total, p.credits_micros)
      FROM billing.purchases p
      JOIN LATERAL (SELECT sum(l.amount_micros) AS total FROM billing.ledger_entries l
                     WHERE l.purchase_id = p.id AND l.type = 'purchase') c ON c.total IS NOT NULL
     WHERE p.id = ANY (p_ids) AND c.total <> p.credits_micros
    UNION ALL
    SELECT 4, p.user_id,
           format('purchase %s refunded_micros %s <> refund entries %s', p.id, p.refunded_micros,
                  coalesce(r.total, 0))
      FROM billing.purchases p
      LEFT JOIN LATERAL (SELECT -sum(l.amount_micros) AS total FROM billing.ledger_entries l
                          WHERE l.purchase_id = p.id AND l.type = 'refund') r ON true
     WHERE p.id = ANY (p_ids) AND p.refunded_micros <> coalesce(r.total, 0)
    UNION ALL
    SELECT 4, l.user_id, format('ledger entry %s belongs to purchase %s of user %s', l.id, p.id, p.user_id)
      FROM billing.ledger_entries l JOIN billing.purchases p ON p.id = l.purchase_id
     WHERE p.id = ANY (p_ids) AND l.user_id <> p.user_id
$$;

-- (4) a dispute debits at most once, a won dispute credits back at most once
-- and exactly what it debited. Its entries are found through the purchase
-- they carry (ledger_purchase_idx: a handful of entries per purchase); an
-- entry naming the dispute but another purchase or user is reported by
-- _dispute_entry_violations.
CREATE OR REPLACE FUNCTION billing._dispute_violations(p_ids text[])
RETURNS TABLE (invariant int, user_id text, detail text)
LANGUAGE sql STABLE AS $$
    SELECT 4, d.user_id,
           format('dispute %s (%s): debited %s, credited back %s; entries: %s debits of %s, %s credits of %s',
                  d.id, d.status, d.debited_micros, d.credited_back_micros,
                  coalesce(e.n_debit, 0), coalesce(e.debit, 0), coalesce(e.n_credit, 0), coalesce(e.credit, 0))
      FROM billing.disputes d
      LEFT JOIN LATERAL (SELECT count(*) FILTER (WHERE l.type = 'dispute') AS n_debit,
                                -sum(l.amount_micros) FILTER (WHERE l.type = 'dispute') AS debit,
                                count(*) FILTER (WHERE l.type = 'dispute_reversal') AS n_credit,
                                sum(l.amount_micros) FILTER (WHERE l.type = 'dispute_reversal') AS credit
                           FROM billing.ledger_entries l
                          WHERE l.purchase_id = d.purchase_id AND l.dispute_id = d.id
                            AND l.type IN ('dispute', 'dispute_reversal')) e ON true
     WHERE d.id = ANY (p_ids)
       AND (coalesce(e.n_debit, 0) <> (d.debited_micros > 0)::int
            OR coalesce(e.debit, 0) <> d.debited_micros
            OR coalesce(e.n_credit, 0) <> (d.credited_back_micros > 0)::int
            OR coalesce(e.credit, 0) <> d.credited_back_micros
            OR (d.credited_back_micros > 0 AND d.status <> 'won'))
$$;

-- (4) a dispute entry belongs to a dispute of its user and purchase
CREATE OR REPLACE FUNCTION billing._dispute_entry_violations(p_from bigint, p_to bigint)
RETURNS TABLE (invariant int, user_id text, detail text)
LANGUAGE sql STABLE AS $$
    SELECT 4, l.user_id, format('%s entry %s names dispute %s, which belongs to nothing of its user',
                                l.type, l.id, l.dispute_id)
      FROM billing.ledger_entries l
     WHERE l.id > p_from AND l.id <= p_to
       AND l.type IN ('dispute', 'dispute_reversal')
       AND NOT EXISTS (SELECT 1 FROM billing.disputes d
                        WHERE d.id = l.dispute_id AND d.user_id = l.user_id
                          AND d.purchase_id = l.purchase_id)
$$;

-- (4) a usage reversal credits back exactly one usage entry of its user
CREATE OR REPLACE FUNCTION billing._reversal_violations(p_from bigint, p_to bigint)
RETURNS TABLE (invariant int, user_id text, detail text)
LANGUAGE sql STABLE AS $$
    SELECT 4, r.user_id,
           format('usage_reversal %s of entry %s: %s', r.id, r.reversed_entry_id,
                  CASE WHEN u.id IS NULL OR u.type <> 'usage' THEN 'not a usage entry'
                       WHEN u.user_id <> r.user_id THEN 'usage of user ' || u.user_id
                       ELSE format('credits %s for a charge of %s', r.amount_micros, -u.amount_micros) END)
      FROM billing.ledger_entries r
      LEFT JOIN billing.ledger_entries u ON u.id = r.reversed_entry_id
     WHERE r.id > p_from AND r.id <= p_to AND r.type = 'usage_reversal'
       AND (u.id IS NULL OR u.type <> 'usage' OR u.user_id <> r.user_id
            OR r.amount_micros <> -u.amount_micros)
$$;

-- (5) a negative balance only through a refund or a dispute
CREATE OR REPLACE FUNCTION billing._debt_violations(p_users text[])
RETURNS TABLE (invariant int, user_id text, detail text)
LANGUAGE sql STABLE AS $$
    SELECT 5, a.user_id, format('negative balance %s without any refund or dispute entry',
                                a.balance_micros)
      FROM billing.accounts a
     WHERE a.user_id = ANY (p_users) AND a.balance_micros < 0
       AND NOT EXISTS (SELECT 1 FROM billing.ledger_entries l
                        WHERE l.user_id = a.user_id AND l.type IN ('refund', 'dispute'))
$$;

-- (5) neither usage nor an administrator's debit ever leaves a negative balance
CREATE OR REPLACE FUNCTION billing._debit_violations(p_from bigint, p_to bigint)
RETURNS TABLE (invariant int, user_id text, detail text)
LANGUAGE sql STABLE AS $$
    SELECT 5, l.user_id, format('%s entry %s left balance %s', l.type, l.id, l.balance_after_micros)
      FROM billing.ledger_entries l
     WHERE l.id > p_from AND l.id <= p_to
       AND l.type IN ('usage', 'adjustment') AND l.amount_micros < 0 AND l.balance_after_micros < 0
$$;
