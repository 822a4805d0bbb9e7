-- _append_only.sql — invariant 1 of docs/spec.md §3 (append-only) as rows of
-- (invariant, user_id, detail): the ledger's triggers present and enabled,
-- and no UPDATE/DELETE/TRUNCATE for the role the server's sessions run as;
-- the admins' audit (billing.admin_requests) is append-only the same way.
-- Used by billing.invariant_violations() (invariants.sql) and by the
-- incremental audit (audit.sql), which checks it live on every run.

-- The module's sessions SET ROLE billing_app when they open, so that is
-- billing_app; asked from a session of the module itself (the periodic
-- audit), it is the role that session really runs as: its login when it did
-- not SET ROLE (an older module), which may own the schema.
CREATE OR REPLACE FUNCTION billing._append_only_violations()
RETURNS TABLE (invariant int, user_id text, detail text)
LANGUAGE sql STABLE SET search_path = billing, pg_temp AS $$
    SELECT 1, NULL::text, 'missing or disabled append-only trigger ' || t.name
      FROM (VALUES ('ledger_entries', 'ledger_entries_no_update_delete'),
                   ('ledger_entries', 'ledger_entries_no_truncate'),
                   ('admin_requests', 'admin_requests_no_update_delete'),
                   ('admin_requests', 'admin_requests_no_truncate')) AS t(tbl, name)
     WHERE NOT EXISTS (SELECT 1 FROM pg_trigger g
                        WHERE g.tgrelid = ('billing.' || t.tbl)::regclass
                          AND g.tgname = t.name AND g.tgenabled <> 'D')
    UNION ALL
    SELECT 1, NULL, r.name || ' has ' || p.priv || ' on billing.' || t.tbl
      FROM (SELECT CASE WHEN current_setting('application_name') = 'ngx_billing'
                        THEN coalesce(nullif(current_setting('role'), 'none'),
                                      session_user::text)
                        ELSE 'billing_app' END AS name) AS r,
           (VALUES ('UPDATE'), ('DELETE'), ('TRUNCATE')) AS p(priv),
           (VALUES ('ledger_entries'), ('admin_requests')) AS t(tbl)
     WHERE EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r.name)
       AND has_table_privilege(r.name, 'billing.' || t.tbl, p.priv)
$$;
