-- online/011_ledger_usage_summary_idx.sql — the usage summary's index
-- (docs/spec.md §4.6, migration 011), built on a live ledger without
-- blocking its writes. Run by sql/migrate.sh BEFORE its transaction, in
-- autocommit (CREATE INDEX CONCURRENTLY cannot run in a transaction), on
-- every run: each step below is a no-op when there is nothing to do.
-- Rules and trade-offs: sql/README.md, "Indexes on a live ledger".

SELECT to_regclass('billing.ledger_entries') IS NOT NULL AS have_ledger,
       EXISTS (SELECT 1 FROM pg_index
                WHERE indexrelid = to_regclass('billing.ledger_usage_summary_idx')
                  AND NOT indisvalid) AS invalid_leftover
\gset

-- a build that failed or was cancelled leaves an INVALID index, which
-- PostgreSQL maintains on every write but never uses: drop it and build anew
\if :invalid_leftover
DROP INDEX CONCURRENTLY IF EXISTS billing.ledger_usage_summary_idx;
\endif

-- no ledger yet (a new database): migration 011 builds it in its transaction
\if :have_ledger
CREATE INDEX CONCURRENTLY IF NOT EXISTS ledger_usage_summary_idx
    ON billing.ledger_entries (user_id, created_at) WHERE type = 'usage';
\endif
