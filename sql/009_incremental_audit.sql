-- 009_incremental_audit.sql — the state of the incremental ledger audit
-- (sql/functions/audit.sql): how far it has checked the ledger, each
-- account's running sum, and what it found. Only the schema owner reads
-- or writes these tables; the runtime role calls billing.audit_run().

-- One row. Entries with id <= checked_through have been audited; those with
-- id <= final_through are final (no transaction that could still commit one
-- of them is running) and may be audited. horizon_id/horizon_writers: the
-- next final point, once the transactions writing the ledger when the
-- sequence stood at horizon_id (their virtual transaction ids) have ended.
-- sweep_after: where the rotating check of account balances goes on.
CREATE TABLE billing.audit_state (
    id              boolean PRIMARY KEY DEFAULT true CHECK (id),
    checked_through bigint  NOT NULL DEFAULT 0,
    final_through   bigint  NOT NULL DEFAULT 0,
    horizon_id      bigint,
    horizon_writers text[],
    sweep_after     text,
    last_success_at timestamptz,
    last_full_at    timestamptz,
    CHECK (checked_through <= final_through)
);
INSERT INTO billing.audit_state DEFAULT VALUES;

-- Per account: the sum of its audited entries (numeric: a corrupt ledger
-- must be reported, not overflow) and the balance_after of the last one.
CREATE TABLE billing.audit_accounts (
    user_id              text    PRIMARY KEY,
    through_id           bigint  NOT NULL,
    sum_micros           numeric NOT NULL,
    balance_after_micros bigint  NOT NULL
);

-- What the incremental audit found. The ledger is append-only, so a
-- finding stays until a full pass (billing.audit_full()) finds otherwise.
CREATE TABLE billing.audit_findings (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    invariant int    NOT NULL,
    user_id   text,
    detail    text   NOT NULL,
    found_at  timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX audit_findings_once
    ON billing.audit_findings (invariant, coalesce(user_id, ''), detail);
