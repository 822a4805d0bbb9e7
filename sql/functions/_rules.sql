-- _rules.sql — the validation rule of each request field, used by every API
-- function that takes the field.

CREATE OR REPLACE FUNCTION billing._valid_user(p_user text) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT p_user IS NOT NULL AND length(p_user) BETWEEN 1 AND 255
$$;

-- Client idempotency keys: 1..255 printable ASCII characters without space.
CREATE OR REPLACE FUNCTION billing._valid_key(p_key text) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT p_key IS NOT NULL AND p_key ~ '^[!-~]{1,255}$'
$$;
