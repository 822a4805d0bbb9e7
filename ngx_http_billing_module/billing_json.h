/*
 * ScholarLink Billing: request body validation (pure core, cJSON).
 */

#ifndef BILLING_JSON_H
#define BILLING_JSON_H

#include <stddef.h>
#include <stdint.h>

enum {
    BILLING_JSON_OK = 0,
    BILLING_JSON_INVALID,          /* 400 invalid_request */
    BILLING_JSON_BAD_UTF8          /* 400 invalid_request (bad encoding) */
};

/*
 * The rule of each field is the database's (sql/functions/_rules.sql,
 * docs/api.md "Validation rules"): these parsers refuse early only what
 * the database refuses too, with the same 400 and the same detail.  Names
 * (model, packageCode) are only checked for the shape the database allows;
 * whether they exist is the database's answer (422).
 */
#define BILLING_USER_ID_MAX        255         /* bytes */
#define BILLING_MODEL_MAX          128         /* characters, any */
#define BILLING_TOKENS_MAX         1000000000LL            /* 1e9 */
#define BILLING_KEY_MAX            255         /* 0x21..0x7E */
#define BILLING_HOLD_AMOUNT_MAX    1000000000000000LL      /* 1e15 */
#define BILLING_HOLD_TTL_MIN       1
#define BILLING_HOLD_TTL_MAX       3600
#define BILLING_HOLD_TTL_DEFAULT   600
#define BILLING_PACKAGE_CODE_MAX   64          /* a-z 0-9 _ - */
#define BILLING_ADJUSTMENT_MAX     1000000000000000LL      /* |amount| 1e15 */
#define BILLING_PRICE_MAX          1000000000000LL         /* 1e12 per 1M */
#define BILLING_REASON_MAX         500         /* characters, any */
/* effectiveFrom: the database judges the form; longer is never one */
#define BILLING_TIMESTAMP_MAX      64          /* bytes */
/* 8-4-4-4-12 hex digits and dashes; buffers add one byte for the NUL */
#define BILLING_UUID_LEN           36

/* a UTF-8 character is at most 4 bytes */
#define BILLING_MODEL_BYTES_MAX    (BILLING_MODEL_MAX * 4)
#define BILLING_REASON_BYTES_MAX   (BILLING_REASON_MAX * 4)

typedef struct {
    char     user_id[BILLING_USER_ID_MAX + 1];   /* no control characters */
    char     model[BILLING_MODEL_BYTES_MAX + 1]; /* 1..128 characters */
    int64_t  input_tokens;                       /* 0..1e9 */
    int64_t  output_tokens;                      /* 0..1e9 */
    char     idempotency_key[BILLING_KEY_MAX + 1];
    char     hold_id[BILLING_UUID_LEN + 1];      /* canonical lower case */
    int      has_hold;
} billing_reconcile_req_t;

typedef struct {
    char     user_id[BILLING_USER_ID_MAX + 1];
    int64_t  amount_micros;                      /* 1..1e15 */
    char     idempotency_key[BILLING_KEY_MAX + 1];
    int64_t  ttl_seconds;                        /* 1..3600, default 600 */
} billing_hold_req_t;

typedef struct {
    char     package_code[BILLING_PACKAGE_CODE_MAX + 1];
} billing_purchase_req_t;

/* POST /api/admin/adjustments (docs/spec.md §4.7) */
typedef struct {
    char     user_id[BILLING_USER_ID_MAX + 1];
    int64_t  amount_micros;                      /* +-1e15, not 0 */
    char     reason[BILLING_REASON_BYTES_MAX + 1];       /* 1..500 chars */
    char     idempotency_key[BILLING_KEY_MAX + 1];
} billing_adjustment_req_t;

/* POST /api/admin/usage/{entryId}/reversal: the entry is the path's */
typedef struct {
    char     reason[BILLING_REASON_BYTES_MAX + 1];
    char     idempotency_key[BILLING_KEY_MAX + 1];
} billing_reversal_req_t;

/* PUT /api/admin/models/{model}/price: the model is the path's */
typedef struct {
    int64_t  input_micros_per_mtok;              /* 0..1e12 */
    int64_t  output_micros_per_mtok;             /* 0..1e12 */
    char     effective_from[BILLING_TIMESTAMP_MAX + 1];
    int      has_effective_from;                 /* else: now */
    char     reason[BILLING_REASON_BYTES_MAX + 1];
    int      has_reason;                         /* optional here */
    char     idempotency_key[BILLING_KEY_MAX + 1];
} billing_price_req_t;

/* Strict UTF-8: no overlongs, no surrogates, nothing above U+10FFFF. */
int billing_utf8_valid(const unsigned char *p, size_t len);

/*
 * Request parsers.  body/len is the raw body (no NUL needed); header_key is
 * the Idempotency-Key header value or NULL when the header is absent (a
 * present but empty header is invalid).  When the key is in both places
 * they must be byte-identical.
 *
 * Rules: the body must be valid UTF-8 and exactly one JSON object
 * (whitespace may follow); raw control characters and the \u0000 escape
 * are rejected; unknown fields are ignored; a known field given twice is
 * rejected; JSON null for an optional field means absent.  Integers must
 * be JSON numbers with an exactly integral value inside the field's range
 * (1.0 and 1e3 are integral; 1.5, 1e400 and strings are not; -0 is 0).
 * Note: the value is judged on cJSON's double, so a literal with more than
 * ~16 significant digits that rounds to an in-range integer is read as
 * that integer (ranges are <= 1e15 < 2^53, so every integer literal in
 * range is exact).
 *
 * Returns BILLING_JSON_OK, or BILLING_JSON_INVALID / BILLING_JSON_BAD_UTF8
 * with a human message naming the field in detail (always NUL-terminated
 * when detail_len > 0; it never echoes client data).  *req is zeroed
 * first, and is only meaningful on BILLING_JSON_OK.
 */
int billing_parse_reconcile(const char *body, size_t len,
    const char *header_key, size_t header_key_len,
    billing_reconcile_req_t *req, char *detail, size_t detail_len);

int billing_parse_hold(const char *body, size_t len,
    const char *header_key, size_t header_key_len,
    billing_hold_req_t *req, char *detail, size_t detail_len);

int billing_parse_purchase(const char *body, size_t len,
    billing_purchase_req_t *req, char *detail, size_t detail_len);

int billing_parse_adjustment(const char *body, size_t len,
    const char *header_key, size_t header_key_len,
    billing_adjustment_req_t *req, char *detail, size_t detail_len);

int billing_parse_reversal(const char *body, size_t len,
    const char *header_key, size_t header_key_len,
    billing_reversal_req_t *req, char *detail, size_t detail_len);

int billing_parse_price(const char *body, size_t len,
    const char *header_key, size_t header_key_len,
    billing_price_req_t *req, char *detail, size_t detail_len);

/*
 * A calendar date YYYY-MM-DD (year 0001..9999) that exists: the rule of
 * _is_date in sql/functions/_rules.sql (query parameters from, to).
 */
int billing_date_valid(const char *p, size_t len);

/*
 * A ledger entry id in a path: 1..19 decimal digits without a leading
 * zero, at most 2^63-1.  Returns 0 with *id set, or -1.
 */
int billing_entry_id_parse(const char *p, size_t len, int64_t *id);

/* 1 if p is an 8-4-4-4-12 hex UUID (either case), else 0. */
int billing_uuid_valid(const char *p, size_t len);

/* Lower-case canonical copy of a valid UUID: returns 0, or -1 if invalid. */
int billing_uuid_normalize(const char *p, size_t len,
    char out[BILLING_UUID_LEN + 1]);

/*
 * Shared by the JWT code: checks UTF-8, pre-scans, parses exactly one JSON
 * object (trailing JSON whitespace allowed) into *root (cJSON_Delete() it).
 * Returns BILLING_JSON_OK, _INVALID or _BAD_UTF8; *root is NULL on error.
 */
struct cJSON;
int billing_json_parse_object(const char *p, size_t len, struct cJSON **root);

/*
 * The member called name of obj in *item (NULL when absent).  Returns 0,
 * or -1 when the name appears more than once (cJSON would silently use the
 * first one, PostgreSQL's jsonb the last).
 */
int billing_json_member(const struct cJSON *obj, const char *name,
    const struct cJSON **item);

/*
 * A member of a JSON object that holds an integer from 0 to 2^53, such as
 * the counts in the bodies the database answers with.  Returns 0 with
 * *value set, or -1 when body is not one JSON object or the member is
 * absent, given twice, or not such an integer.
 */
int billing_json_uint_member(const char *body, size_t len, const char *name,
    int64_t *value);

/* 1 if p is a valid idempotency key (1..255 of 0x21..0x7E), else 0. */
int billing_idempotency_key_valid(const char *p, size_t len);

#endif /* BILLING_JSON_H */
