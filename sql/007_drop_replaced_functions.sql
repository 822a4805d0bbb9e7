-- 007_drop_replaced_functions.sql — drop the functions that no file of
-- sql/functions/ defines any more (sql/README.md, "Removing or renaming"):
--   * _stripe_event_apply: 006 renamed the original api_stripe_event to it
--     and wrapped it; stripe_event.sql is one definition again;
--   * _valid_user, _valid_key: replaced by the rules of _rules.sql.
-- Runs before the function files in the same transaction, so no caller ever
-- sees a function without what it calls.
DROP FUNCTION IF EXISTS billing._stripe_event_apply(jsonb);
DROP FUNCTION IF EXISTS billing._valid_user(text);
DROP FUNCTION IF EXISTS billing._valid_key(text);
