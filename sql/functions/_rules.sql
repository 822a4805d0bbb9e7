-- _rules.sql — the validation rule of each request field, in one place
-- (docs/api.md, "Validation rules"). Each _check_* answers NULL when the
-- value is acceptable, else the detail of the 400 invalid_request answer.
-- The API functions decide with these; the module's core
-- (ngx_http_billing_module/billing_json.c) may refuse early only what these
-- refuse too, with the same detail. Whether a well-formed name exists
-- (model, package, hold, purchase) is decided by the lookup, not here.

-- userId: 1..255 bytes of UTF-8 without control characters (C0, DEL, C1),
-- as the module requires of a token's sub.
CREATE OR REPLACE FUNCTION billing._check_user_id(p text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN p IS NULL THEN 'userId: field is required'
        WHEN octet_length(p) NOT BETWEEN 1 AND 255 OR p ~ '[\u0001-\u001f\u007f-\u009f]'
            THEN 'userId: must be 1 to 255 bytes without control characters'
    END
$$;

-- model: 1..128 characters of anything (what billing.model_prices allows);
-- a model without a price in force is 422 unknown_model.
CREATE OR REPLACE FUNCTION billing._check_model(p text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN p IS NULL THEN 'model: field is required'
        WHEN length(p) NOT BETWEEN 1 AND 128 THEN 'model: must be 1 to 128 characters'
    END
$$;

-- An integer field: present and within [p_min, p_max]; the range of each is
-- stated where the field is taken (docs/api.md lists them all). Optional
-- fields are checked after their default is applied.
CREATE OR REPLACE FUNCTION billing._check_int(p_field text, p bigint, p_min bigint, p_max bigint)
RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN p IS NULL THEN p_field || ': field is required'
        WHEN p NOT BETWEEN p_min AND p_max
            THEN p_field || ': must be an integer between ' || p_min::text || ' and ' || p_max::text
    END
$$;

-- idempotencyKey: 1..255 printable ASCII characters without space (0x21-0x7E).
-- Not as '^[!-~]{1,255}$': that bounded repetition costs about 57 µs per
-- match (sql/012_lean_money_path.sql); the two tests below are the same rule.
CREATE OR REPLACE FUNCTION billing._check_idempotency_key(p text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN p IS NULL THEN 'idempotencyKey: field or Idempotency-Key header is required'
        WHEN octet_length(p) NOT BETWEEN 1 AND 255 OR p ~ '[^!-~]'
            THEN 'idempotencyKey: must be 1 to 255 printable ASCII characters without spaces'
    END
$$;

-- packageCode: 1..64 of a-z 0-9 _ - (what billing.credit_packages allows);
-- a code of no active package is 422 unknown_package.
CREATE OR REPLACE FUNCTION billing._check_package_code(p text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN p IS NULL THEN 'packageCode: field is required'
        WHEN p !~ '^[a-z0-9_-]{1,64}$' THEN 'packageCode: must be 1 to 64 characters of a-z 0-9 _ -'
    END
$$;

-- reason (admin writes): 1..500 characters of anything; required for ledger
-- entries, optional for a price (the caller passes NULL through).
CREATE OR REPLACE FUNCTION billing._check_reason(p text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN p IS NULL THEN 'reason: field is required'
        WHEN length(p) NOT BETWEEN 1 AND 500 THEN 'reason: must be 1 to 500 characters'
    END
$$;

-- The token's subject that an admin write records as its actor: the rule of
-- a user id (the module verified the token, so a breach is a module bug).
CREATE OR REPLACE FUNCTION billing._check_actor(p text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN billing._check_user_id(p) IS NOT NULL
                THEN 'the token''s subject must be 1 to 255 bytes without control characters'
           END
$$;

-- A calendar date YYYY-MM-DD (year 0001..9999) that exists. PL/pgSQL so
-- that the conversions run only after the form is known (a CASE in an
-- inlined SQL function may be folded early).
CREATE OR REPLACE FUNCTION billing._is_date(p text) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    y int;
    m int;
    d int;
BEGIN
    IF p IS NULL OR p !~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}$' THEN
        RETURN false;
    END IF;
    y := substr(p, 1, 4)::int;
    m := substr(p, 6, 2)::int;
    d := substr(p, 9, 2)::int;
    IF y < 1 OR m NOT BETWEEN 1 AND 12 OR d < 1 THEN
        RETURN false;
    END IF;
    RETURN d <= extract(day FROM make_date(y, m, 1) + interval '1 month' - interval '1 day');
END
$$;

-- from, to (usage summary): a date YYYY-MM-DD, UTC.
CREATE OR REPLACE FUNCTION billing._check_date(p_field text, p text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN p IS NULL THEN p_field || ': field is required'
        WHEN NOT billing._is_date(p) THEN p_field || ': must be a date YYYY-MM-DD'
    END
$$;

-- effectiveFrom (prices): optional; an RFC 3339 date-time with a time zone
-- offset (Z or +hh:mm), seconds 00..59, at most 6 decimals; NULL is
-- acceptable (the caller's default applies).
CREATE OR REPLACE FUNCTION billing._is_timestamp(p text) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v text[];
BEGIN
    v := regexp_match(p, '^([0-9]{4}-[0-9]{2}-[0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]{1,6})?([Zz]|[+-]([0-9]{2}):([0-9]{2}))$');
    RETURN v IS NOT NULL AND billing._is_date(v[1])
       AND v[2]::int <= 23 AND v[3]::int <= 59 AND v[4]::int <= 59
       AND coalesce(v[7]::int, 0) <= 23 AND coalesce(v[8]::int, 0) <= 59;
END
$$;

CREATE OR REPLACE FUNCTION billing._check_timestamp(p_field text, p text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN p IS NOT NULL AND NOT billing._is_timestamp(p)
                THEN p_field || ': must be an RFC 3339 date-time with a time zone, such as 2026-01-01T00:00:00Z'
           END
$$;
