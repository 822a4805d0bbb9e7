-- 003_api.sql — the row type every API function answers with:
-- (status int, code text, body text, meta text), see docs/design-contract.md.
-- The functions themselves live in sql/functions/ (sql/README.md).

CREATE TYPE billing.api_result AS (status int, code text, body text, meta text);
