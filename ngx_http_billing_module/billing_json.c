/*
 * ScholarLink Billing: request body validation.
 */

#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "billing_json.h"
#include "billing_util.h"


/* bodies above this are refused before parsing (nginx caps them anyway) */
#define BILLING_JSON_BODY_MAX  (1024 * 1024)


/* a 400 invalid_request with its detail */
#define fail(detail, detail_len, ...)                                         \
    billing_fail(BILLING_JSON_INVALID, detail, detail_len, __VA_ARGS__)


int
billing_utf8_valid(const unsigned char *p, size_t len)
{
    size_t  i, n;

    for (i = 0; i < len; i += n) {

        /* fast path for ASCII */
        if (p[i] < 0x80) {
            n = 1;
            continue;
        }

        n = billing_utf8_seq_len(p + i, len - i);
        if (n == 0) {
            return 0;
        }
    }

    return 1;
}


int
billing_json_parse_object(const char *p, size_t len, cJSON **root)
{
    char        *copy;
    const char  *end;
    size_t       i, used;
    cJSON       *r;

    *root = NULL;

    if (p == NULL || len == 0 || len > BILLING_JSON_BODY_MAX) {
        return BILLING_JSON_INVALID;
    }

    if (!billing_utf8_valid((const unsigned char *) p, len)) {
        return BILLING_JSON_BAD_UTF8;
    }

    if (billing_json_prescan(p, len) != 0) {
        return BILLING_JSON_INVALID;
    }

    /* a NUL-terminated copy: cJSON must never be able to read past len */
    copy = malloc(len + 1);
    if (copy == NULL) {
        return BILLING_JSON_INVALID;
    }

    memcpy(copy, p, len);
    copy[len] = '\0';

    end = NULL;
    r = cJSON_ParseWithLengthOpts(copy, len, &end, 0);

    if (r == NULL || end == NULL || end < copy || end > copy + len) {
        cJSON_Delete(r);
        free(copy);
        return BILLING_JSON_INVALID;
    }

    used = (size_t) (end - copy);

    for (i = used; i < len; i++) {
        if (copy[i] != ' ' && copy[i] != '\t' && copy[i] != '\n'
            && copy[i] != '\r')
        {
            cJSON_Delete(r);
            free(copy);
            return BILLING_JSON_INVALID;
        }
    }

    free(copy);

    if (!cJSON_IsObject(r)) {
        cJSON_Delete(r);
        return BILLING_JSON_INVALID;
    }

    *root = r;

    return BILLING_JSON_OK;
}


int
billing_json_member(const cJSON *obj, const char *name, const cJSON **item)
{
    const cJSON  *c;

    *item = NULL;

    for (c = obj->child; c; c = c->next) {
        if (c->string && strcmp(c->string, name) == 0) {
            if (*item) {
                return -1;
            }
            *item = c;
        }
    }

    return 0;
}


int
billing_json_uint_member(const char *body, size_t len, const char *name,
    int64_t *value)
{
    cJSON        *root;
    double        d;
    const cJSON  *it;
    int           rc;

    if (billing_json_parse_object(body, len, &root) != BILLING_JSON_OK) {
        return -1;
    }

    rc = -1;

    if (billing_json_member(root, name, &it) == 0 && cJSON_IsNumber(it)) {
        d = it->valuedouble;

        /* the range check first keeps the conversion defined */
        if (d >= 0 && d <= 9007199254740992.0 && (double) (int64_t) d == d) {
            *value = (int64_t) d;
            rc = 0;
        }
    }

    cJSON_Delete(root);

    return rc;
}


typedef enum {
    FIELD_REQUIRED = 0,
    FIELD_OPTIONAL
} field_need_t;


/*
 * Fetch a member given at most once.  Returns 1 when present (*it set), 0
 * when absent (or null) and optional, or -BILLING_JSON_INVALID with detail
 * set.
 */
static int
get_field(const cJSON *obj, const char *name, field_need_t need,
    const cJSON **it, char *detail, size_t dlen)
{
    if (billing_json_member(obj, name, it) != 0) {
        return -fail(detail, dlen, "%s: field is given more than once", name);
    }

    if (*it == NULL || (need == FIELD_OPTIONAL && cJSON_IsNull(*it))) {
        if (need == FIELD_REQUIRED) {
            return -fail(detail, dlen, "%s: field is required", name);
        }
        return 0;
    }

    return 1;
}


/*
 * Fetch a string member.  Returns 1 when present (*s, *slen set), 0 when
 * absent and optional, or BILLING_JSON_INVALID with detail set.
 */
static int
get_string(const cJSON *obj, const char *name, field_need_t need,
    const char **s, size_t *slen, char *detail, size_t dlen)
{
    const cJSON  *it;
    int           rc;

    rc = get_field(obj, name, need, &it, detail, dlen);
    if (rc != 1) {
        return rc;
    }

    if (!cJSON_IsString(it) || it->valuestring == NULL) {
        return -fail(detail, dlen, "%s: must be a string", name);
    }

    *s = it->valuestring;
    *slen = strlen(it->valuestring);

    return 1;
}


/*
 * Fetch an integer member in [min, max].  Same return convention as
 * get_string().
 */
static int
get_int(const cJSON *obj, const char *name, field_need_t need,
    int64_t min, int64_t max, int64_t *v, char *detail, size_t dlen)
{
    const cJSON  *it;
    double        d;
    int           rc;

    rc = get_field(obj, name, need, &it, detail, dlen);
    if (rc != 1) {
        return rc;
    }

    if (!cJSON_IsNumber(it)) {
        return -fail(detail, dlen, "%s: must be an integer", name);
    }

    d = it->valuedouble;

    /*
     * Range first (this also rejects NaN and infinities), so that the
     * conversion below is defined; min/max are far below 2^53 and thus
     * exact as doubles.
     */
    if (!(d >= (double) min && d <= (double) max)) {
        return -fail(detail, dlen, "%s: must be an integer between %lld "
                     "and %lld", name, (long long) min, (long long) max);
    }

    if ((double) (int64_t) d != d) {
        return -fail(detail, dlen, "%s: must be an integer", name);
    }

    *v = (int64_t) d;

    return 1;
}


static int
user_id_valid(const char *s, size_t len)
{
    return len >= 1 && len <= BILLING_USER_ID_MAX
           && billing_is_printable_utf8(s, len);
}


/*
 * _check_model: 1..128 characters of anything (s is valid UTF-8 here, so
 * counting the bytes that start a character counts characters); whether
 * the model is priced is the database's answer, 422 unknown_model.
 */
static int
model_valid(const char *s, size_t len)
{
    size_t  i, chars;

    if (len > BILLING_MODEL_BYTES_MAX) {
        return 0;
    }

    chars = 0;

    for (i = 0; i < len; i++) {
        if (((unsigned char) s[i] & 0xc0) != 0x80) {
            chars++;
        }
    }

    return chars >= 1 && chars <= BILLING_MODEL_MAX;
}


/* _check_reason: 1..500 characters of anything (s is valid UTF-8 here) */
static int
reason_valid(const char *s, size_t len)
{
    size_t  i, chars;

    if (len > BILLING_REASON_BYTES_MAX) {
        return 0;
    }

    chars = 0;

    for (i = 0; i < len; i++) {
        if (((unsigned char) s[i] & 0xc0) != 0x80) {
            chars++;
        }
    }

    return chars >= 1 && chars <= BILLING_REASON_MAX;
}


/* s is NUL-terminated: take_string() passes cJSON's strings */
static int
package_code_valid(const char *s, size_t len)
{
    return len >= 1 && len <= BILLING_PACKAGE_CODE_MAX
           && strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789_-") == len;
}


int
billing_idempotency_key_valid(const char *p, size_t len)
{
    return p != NULL && len >= 1 && len <= BILLING_KEY_MAX
           && billing_bytes_in(p, len, 0x21, 0x7e);
}


int
billing_uuid_valid(const char *p, size_t len)
{
    size_t  i;

    if (p == NULL || len != BILLING_UUID_LEN) {
        return 0;
    }

    for (i = 0; i < BILLING_UUID_LEN; i++) {
        unsigned char c = (unsigned char) p[i];

        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (c != '-') {
                return 0;
            }
            continue;
        }

        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')
              || (c >= 'A' && c <= 'F')))
        {
            return 0;
        }
    }

    return 1;
}


int
billing_uuid_normalize(const char *p, size_t len,
    char out[BILLING_UUID_LEN + 1])
{
    size_t  i;

    if (!billing_uuid_valid(p, len)) {
        return -1;
    }

    for (i = 0; i < BILLING_UUID_LEN; i++) {
        char c = p[i];
        out[i] = (c >= 'A' && c <= 'F') ? (char) (c - 'A' + 'a') : c;
    }

    out[BILLING_UUID_LEN] = '\0';

    return 0;
}


/* the key from the body and/or the header, checked and copied */
static int
take_idempotency_key(const cJSON *root, const char *header_key,
    size_t header_key_len, char out[256], char *detail, size_t dlen)
{
    const char  *s;
    size_t       slen;
    int          rc;

    s = NULL;
    slen = 0;

    rc = get_string(root, "idempotencyKey", FIELD_OPTIONAL, &s, &slen,
                    detail, dlen);
    if (rc < 0) {
        return BILLING_JSON_INVALID;
    }

    if (rc == 1 && !billing_idempotency_key_valid(s, slen)) {
        return fail(detail, dlen, "idempotencyKey: must be 1 to 255 "
                    "printable ASCII characters without spaces");
    }

    if (header_key) {
        if (!billing_idempotency_key_valid(header_key, header_key_len)) {
            return fail(detail, dlen, "Idempotency-Key header: must be 1 to "
                        "255 printable ASCII characters without spaces");
        }

        if (rc == 1
            && (slen != header_key_len || memcmp(s, header_key, slen) != 0))
        {
            return fail(detail, dlen, "idempotencyKey: differs from the "
                        "Idempotency-Key header");
        }

        s = header_key;
        slen = header_key_len;

    } else if (rc == 0) {
        return fail(detail, dlen, "idempotencyKey: field or Idempotency-Key "
                    "header is required");
    }

    memcpy(out, s, slen);
    out[slen] = '\0';

    return BILLING_JSON_OK;
}


/*
 * A required string member that satisfies valid() (which gets the string
 * NUL-terminated), copied into out.
 */
static int
take_string(const cJSON *root, const char *name,
    int (*valid)(const char *s, size_t len), const char *rule, char *out,
    char *detail, size_t dlen)
{
    const char  *s;
    size_t       slen;

    if (get_string(root, name, FIELD_REQUIRED, &s, &slen, detail, dlen) < 0)
    {
        return BILLING_JSON_INVALID;
    }

    if (!valid(s, slen)) {
        return fail(detail, dlen, "%s: %s", name, rule);
    }

    memcpy(out, s, slen);
    out[slen] = '\0';

    return BILLING_JSON_OK;
}


static int
start(const char *body, size_t len, cJSON **root, char *detail, size_t dlen)
{
    int  rc;

    if (detail && dlen) {
        detail[0] = '\0';
    }

    rc = billing_json_parse_object(body, len, root);

    switch (rc) {

    case BILLING_JSON_OK:
        return BILLING_JSON_OK;

    case BILLING_JSON_BAD_UTF8:
        fail(detail, dlen, "request body is not valid UTF-8");
        return BILLING_JSON_BAD_UTF8;

    default:
        return fail(detail, dlen, "request body must be a JSON object");
    }
}


/* takes the fields of one kind of request: BILLING_JSON_OK or _INVALID */
typedef int (*fields_pt)(const cJSON *root, const char *header_key,
    size_t header_key_len, void *req, char *detail, size_t detail_len);


/*
 * The frame of every parser: *req is zeroed, the body parsed as one JSON
 * object and the fields taken from it; *req is zeroed again on failure.
 */
static int
parse(const char *body, size_t len, const char *header_key,
    size_t header_key_len, fields_pt fields, void *req, size_t size,
    char *detail, size_t detail_len)
{
    cJSON  *root;
    int     rc;

    memset(req, 0, size);

    rc = start(body, len, &root, detail, detail_len);
    if (rc != BILLING_JSON_OK) {
        return rc;
    }

    rc = fields(root, header_key, header_key_len, req, detail, detail_len);

    cJSON_Delete(root);

    if (rc != BILLING_JSON_OK) {
        memset(req, 0, size);
    }

    return rc;
}


#define USER_ID_RULE  "must be 1 to 255 bytes without control characters"


static int
reconcile_fields(const cJSON *root, const char *header_key,
    size_t header_key_len, void *data, char *detail, size_t detail_len)
{
    billing_reconcile_req_t  *req = data;

    const char               *s;
    size_t                    slen;

    if (take_string(root, "userId", user_id_valid, USER_ID_RULE,
                    req->user_id, detail, detail_len) != BILLING_JSON_OK
        || take_string(root, "model", model_valid,
                       "must be 1 to 128 characters",
                       req->model, detail, detail_len) != BILLING_JSON_OK
        || get_int(root, "inputTokens", FIELD_REQUIRED, 0,
                   BILLING_TOKENS_MAX, &req->input_tokens, detail,
                   detail_len) < 0
        || get_int(root, "outputTokens", FIELD_REQUIRED, 0,
                   BILLING_TOKENS_MAX, &req->output_tokens, detail,
                   detail_len) < 0
        || take_idempotency_key(root, header_key, header_key_len,
                                req->idempotency_key, detail, detail_len)
           != BILLING_JSON_OK)
    {
        return BILLING_JSON_INVALID;
    }

    switch (get_string(root, "holdId", FIELD_OPTIONAL, &s, &slen, detail,
                       detail_len))
    {
    case 0:
        return BILLING_JSON_OK;

    case 1:
        if (billing_uuid_normalize(s, slen, req->hold_id) != 0) {
            return fail(detail, detail_len, "holdId: must be a UUID");
        }

        req->has_hold = 1;
        return BILLING_JSON_OK;

    default:
        return BILLING_JSON_INVALID;
    }
}


static int
hold_fields(const cJSON *root, const char *header_key,
    size_t header_key_len, void *data, char *detail, size_t detail_len)
{
    billing_hold_req_t  *req = data;

    /* an absent ttlSeconds leaves the default */
    req->ttl_seconds = BILLING_HOLD_TTL_DEFAULT;

    if (take_string(root, "userId", user_id_valid, USER_ID_RULE,
                    req->user_id, detail, detail_len) != BILLING_JSON_OK
        || get_int(root, "amountMicros", FIELD_REQUIRED, 1,
                   BILLING_HOLD_AMOUNT_MAX, &req->amount_micros, detail,
                   detail_len) < 0
        || take_idempotency_key(root, header_key, header_key_len,
                                req->idempotency_key, detail, detail_len)
           != BILLING_JSON_OK
        || get_int(root, "ttlSeconds", FIELD_OPTIONAL, BILLING_HOLD_TTL_MIN,
                   BILLING_HOLD_TTL_MAX, &req->ttl_seconds, detail,
                   detail_len) < 0)
    {
        return BILLING_JSON_INVALID;
    }

    return BILLING_JSON_OK;
}


static int
purchase_fields(const cJSON *root, const char *header_key,
    size_t header_key_len, void *data, char *detail, size_t detail_len)
{
    billing_purchase_req_t  *req = data;

    /* a purchase carries no idempotency key */
    (void) header_key;
    (void) header_key_len;

    return take_string(root, "packageCode", package_code_valid,
                       "must be 1 to 64 characters of a-z 0-9 _ -",
                       req->package_code, detail, detail_len);
}


#define REASON_RULE  "must be 1 to 500 characters"


static int
adjustment_fields(const cJSON *root, const char *header_key,
    size_t header_key_len, void *data, char *detail, size_t detail_len)
{
    billing_adjustment_req_t  *req = data;

    if (take_string(root, "userId", user_id_valid, USER_ID_RULE,
                    req->user_id, detail, detail_len) != BILLING_JSON_OK
        || get_int(root, "amountMicros", FIELD_REQUIRED,
                   -BILLING_ADJUSTMENT_MAX, BILLING_ADJUSTMENT_MAX,
                   &req->amount_micros, detail, detail_len) < 0)
    {
        return BILLING_JSON_INVALID;
    }

    /* a signed amount: a credit or a debit, never nothing */
    if (req->amount_micros == 0) {
        return fail(detail, detail_len, "amountMicros: must not be 0");
    }

    if (take_string(root, "reason", reason_valid, REASON_RULE, req->reason,
                    detail, detail_len) != BILLING_JSON_OK
        || take_idempotency_key(root, header_key, header_key_len,
                                req->idempotency_key, detail, detail_len)
           != BILLING_JSON_OK)
    {
        return BILLING_JSON_INVALID;
    }

    return BILLING_JSON_OK;
}


static int
reversal_fields(const cJSON *root, const char *header_key,
    size_t header_key_len, void *data, char *detail, size_t detail_len)
{
    billing_reversal_req_t  *req = data;

    if (take_string(root, "reason", reason_valid, REASON_RULE, req->reason,
                    detail, detail_len) != BILLING_JSON_OK
        || take_idempotency_key(root, header_key, header_key_len,
                                req->idempotency_key, detail, detail_len)
           != BILLING_JSON_OK)
    {
        return BILLING_JSON_INVALID;
    }

    return BILLING_JSON_OK;
}


static int
price_fields(const cJSON *root, const char *header_key,
    size_t header_key_len, void *data, char *detail, size_t detail_len)
{
    billing_price_req_t  *req = data;

    const char           *s;
    size_t                slen;
    int                   rc;

    if (get_int(root, "inputMicrosPerMTok", FIELD_REQUIRED, 0,
                BILLING_PRICE_MAX, &req->input_micros_per_mtok, detail,
                detail_len) < 0
        || get_int(root, "outputMicrosPerMTok", FIELD_REQUIRED, 0,
                   BILLING_PRICE_MAX, &req->output_micros_per_mtok, detail,
                   detail_len) < 0)
    {
        return BILLING_JSON_INVALID;
    }

    /* the form is the database's (_check_timestamp); none is this long */
    rc = get_string(root, "effectiveFrom", FIELD_OPTIONAL, &s, &slen, detail,
                    detail_len);
    if (rc < 0) {
        return BILLING_JSON_INVALID;
    }

    if (rc == 1) {
        if (slen > BILLING_TIMESTAMP_MAX) {
            return fail(detail, detail_len, "effectiveFrom: must be an "
                        "RFC 3339 date-time with a time zone, such as "
                        "2026-01-01T00:00:00Z");
        }

        memcpy(req->effective_from, s, slen + 1);
        req->has_effective_from = 1;
    }

    rc = get_string(root, "reason", FIELD_OPTIONAL, &s, &slen, detail,
                    detail_len);
    if (rc < 0) {
        return BILLING_JSON_INVALID;
    }

    if (rc == 1) {
        if (!reason_valid(s, slen)) {
            return fail(detail, detail_len, "reason: " REASON_RULE);
        }

        memcpy(req->reason, s, slen + 1);
        req->has_reason = 1;
    }

    return take_idempotency_key(root, header_key, header_key_len,
                                req->idempotency_key, detail, detail_len);
}


int
billing_parse_adjustment(const char *body, size_t len,
    const char *header_key, size_t header_key_len,
    billing_adjustment_req_t *req, char *detail, size_t detail_len)
{
    return parse(body, len, header_key, header_key_len, adjustment_fields,
                 req, sizeof(*req), detail, detail_len);
}


int
billing_parse_reversal(const char *body, size_t len,
    const char *header_key, size_t header_key_len,
    billing_reversal_req_t *req, char *detail, size_t detail_len)
{
    return parse(body, len, header_key, header_key_len, reversal_fields,
                 req, sizeof(*req), detail, detail_len);
}


int
billing_parse_price(const char *body, size_t len,
    const char *header_key, size_t header_key_len,
    billing_price_req_t *req, char *detail, size_t detail_len)
{
    return parse(body, len, header_key, header_key_len, price_fields, req,
                 sizeof(*req), detail, detail_len);
}


static int
digits(const char *p, size_t len)
{
    return billing_bytes_in(p, len, '0', '9');
}


int
billing_date_valid(const char *p, size_t len)
{
    static const int  days[] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30,
                                 31 };
    int               y, m, d, leap;

    if (p == NULL || len != 10 || p[4] != '-' || p[7] != '-'
        || !digits(p, 4) || !digits(p + 5, 2) || !digits(p + 8, 2))
    {
        return 0;
    }

    y = (p[0] - '0') * 1000 + (p[1] - '0') * 100 + (p[2] - '0') * 10
        + (p[3] - '0');
    m = (p[5] - '0') * 10 + (p[6] - '0');
    d = (p[8] - '0') * 10 + (p[9] - '0');

    if (y < 1 || m < 1 || m > 12 || d < 1) {
        return 0;
    }

    leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;

    return d <= days[m - 1] + (m == 2 && leap);
}


int
billing_entry_id_parse(const char *p, size_t len, int64_t *id)
{
    size_t   i;
    int64_t  v;

    if (p == NULL || len == 0 || len > 19 || p[0] == '0'
        || !digits(p, len))
    {
        return -1;
    }

    v = 0;

    for (i = 0; i < len; i++) {
        if (v > (INT64_MAX - (p[i] - '0')) / 10) {
            return -1;
        }

        v = v * 10 + (p[i] - '0');
    }

    *id = v;

    return 0;
}


int
billing_parse_reconcile(const char *body, size_t len,
    const char *header_key, size_t header_key_len,
    billing_reconcile_req_t *req, char *detail, size_t detail_len)
{
    return parse(body, len, header_key, header_key_len, reconcile_fields,
                 req, sizeof(*req), detail, detail_len);
}


int
billing_parse_hold(const char *body, size_t len,
    const char *header_key, size_t header_key_len,
    billing_hold_req_t *req, char *detail, size_t detail_len)
{
    return parse(body, len, header_key, header_key_len, hold_fields, req,
                 sizeof(*req), detail, detail_len);
}


int
billing_parse_purchase(const char *body, size_t len,
    billing_purchase_req_t *req, char *detail, size_t detail_len)
{
    return parse(body, len, NULL, 0, purchase_fields, req, sizeof(*req),
                 detail, detail_len);
}
