-- 007_functions_in_one_place.sql — drop what the layout before sql/functions/
-- left behind: 006 renamed the original api_stripe_event to
-- _stripe_event_apply and wrapped it; sql/functions/stripe_event.sql is one
-- definition again. Runs before the function files in the same transaction,
-- so no caller ever sees api_stripe_event without what it calls.
DROP FUNCTION IF EXISTS billing._stripe_event_apply(jsonb);
