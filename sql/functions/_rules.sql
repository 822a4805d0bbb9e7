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
-- match (sql/010_usage_shape.sql); the two tests below are the same rule.
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
