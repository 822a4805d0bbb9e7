/*
 * libFuzzer: request body parsers, the admin ones included (and the
 * reader of integers in the database's answers, and the compaction of
 * those answers).  The first byte selects how the
 * Idempotency-Key header is supplied; the rest is the body.
 */

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "billing_json.h"
#include "billing_util.h"


/* characters of a valid UTF-8 string (bytes that start one) */
static size_t
utf8_chars(const char *s)
{
    size_t  n;

    for (n = 0; *s; s++) {
        n += ((unsigned char) *s & 0xc0) != 0x80;
    }

    return n;
}


/*
 * Compaction never grows the text, is idempotent, and a JSON document
 * means the same before and after it.
 */
static void
compact(const char *body, size_t len)
{
    char        *a, *b, *pa, *pb;
    size_t       n, m;
    cJSON       *before, *after;
    const char  *end;

    a = malloc(len + 1);
    b = malloc(len + 1);
    if (a == NULL || b == NULL) {
        free(a);
        free(b);
        return;
    }

    memcpy(a, body, len);
    n = billing_json_compact(a, len);

    memcpy(b, a, n);
    m = billing_json_compact(b, n);

    if (n > len || m != n || memcmp(a, b, n) != 0) {
        __builtin_trap();
    }

    /* a JSON document: one value, nothing but whitespace after it */
    before = cJSON_ParseWithLengthOpts(body, len, &end, 0);

    while (before != NULL && end < body + len) {
        if (*end != ' ' && *end != '\t' && *end != '\n' && *end != '\r') {
            cJSON_Delete(before);
            before = NULL;
            break;
        }

        end++;
    }

    if (before != NULL) {
        /* printed, not cJSON_Compare: that one mismatches duplicate keys */
        after = cJSON_ParseWithLength(a, n);
        pa = cJSON_PrintUnformatted(before);
        pb = after ? cJSON_PrintUnformatted(after) : NULL;

        if (after == NULL
            || (pa != NULL && (pb == NULL || strcmp(pa, pb) != 0)))
        {
            __builtin_trap();
        }

        cJSON_free(pa);
        cJSON_free(pb);
        cJSON_Delete(after);
        cJSON_Delete(before);
    }

    free(a);
    free(b);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    billing_reconcile_req_t  r;
    billing_hold_req_t       h;
    billing_purchase_req_t   p;
    billing_adjustment_req_t a;
    billing_reversal_req_t   rv;
    billing_price_req_t      pr;
    char                     detail[256];
    const char              *body, *hdr;
    size_t                   len, hlen;
    int64_t                  v;

    if (size == 0) {
        return 0;
    }

    body = (const char *) data + 1;
    len = size - 1;

    /* 0: no header; 1: header "k-1"; 2: header = first 8 body bytes */
    switch (data[0] % 3) {
    case 0:
        hdr = NULL;
        hlen = 0;
        break;
    case 1:
        hdr = "k-1";
        hlen = 3;
        break;
    default:
        hdr = body;
        hlen = len < 8 ? len : 8;
        break;
    }

    if (billing_parse_reconcile(body, len, hdr, hlen, &r, detail,
                                sizeof(detail)) == BILLING_JSON_OK)
    {
        /* outputs are NUL-terminated and within their rules (the
         * database's, sql/functions/_rules.sql) */
        if (strlen(r.user_id) == 0 || strlen(r.user_id) > BILLING_USER_ID_MAX
            || !billing_is_printable_utf8(r.user_id, strlen(r.user_id))
            || utf8_chars(r.model) == 0
            || utf8_chars(r.model) > BILLING_MODEL_MAX
            || !billing_utf8_valid((const unsigned char *) r.model,
                                   strlen(r.model))
            || r.input_tokens < 0 || r.input_tokens > BILLING_TOKENS_MAX
            || r.output_tokens < 0 || r.output_tokens > BILLING_TOKENS_MAX
            || !billing_idempotency_key_valid(r.idempotency_key,
                                              strlen(r.idempotency_key))
            || (r.has_hold && !billing_uuid_valid(r.hold_id,
                                                  BILLING_UUID_LEN)))
        {
            __builtin_trap();
        }
    }

    if (billing_parse_hold(body, len, hdr, hlen, &h, detail, sizeof(detail))
        == BILLING_JSON_OK)
    {
        if (h.amount_micros < 1 || h.amount_micros > BILLING_HOLD_AMOUNT_MAX
            || h.ttl_seconds < 1 || h.ttl_seconds > 3600)
        {
            __builtin_trap();
        }
    }

    if (billing_parse_purchase(body, len, &p, detail, sizeof(detail))
        == BILLING_JSON_OK)
    {
        if (strlen(p.package_code) == 0
            || strlen(p.package_code) > BILLING_PACKAGE_CODE_MAX)
        {
            __builtin_trap();
        }
    }

    if (billing_parse_adjustment(body, len, hdr, hlen, &a, detail,
                                 sizeof(detail)) == BILLING_JSON_OK)
    {
        if (a.amount_micros == 0 || a.amount_micros > BILLING_ADJUSTMENT_MAX
            || a.amount_micros < -BILLING_ADJUSTMENT_MAX
            || !billing_is_printable_utf8(a.user_id, strlen(a.user_id))
            || utf8_chars(a.reason) == 0
            || utf8_chars(a.reason) > BILLING_REASON_MAX
            || !billing_idempotency_key_valid(a.idempotency_key,
                                              strlen(a.idempotency_key)))
        {
            __builtin_trap();
        }
    }

    if (billing_parse_reversal(body, len, hdr, hlen, &rv, detail,
                               sizeof(detail)) == BILLING_JSON_OK)
    {
        if (utf8_chars(rv.reason) == 0
            || utf8_chars(rv.reason) > BILLING_REASON_MAX
            || !billing_idempotency_key_valid(rv.idempotency_key,
                                              strlen(rv.idempotency_key)))
        {
            __builtin_trap();
        }
    }

    if (billing_parse_price(body, len, hdr, hlen, &pr, detail,
                            sizeof(detail)) == BILLING_JSON_OK)
    {
        if (pr.input_micros_per_mtok < 0
            || pr.input_micros_per_mtok > BILLING_PRICE_MAX
            || pr.output_micros_per_mtok < 0
            || pr.output_micros_per_mtok > BILLING_PRICE_MAX
            || strlen(pr.effective_from) > BILLING_TIMESTAMP_MAX
            || (pr.has_reason && (utf8_chars(pr.reason) == 0
                                  || utf8_chars(pr.reason)
                                     > BILLING_REASON_MAX))
            || !billing_idempotency_key_valid(pr.idempotency_key,
                                              strlen(pr.idempotency_key)))
        {
            __builtin_trap();
        }
    }

    (void) billing_uuid_valid(body, len);
    (void) billing_utf8_valid((const unsigned char *) body, len);

    if (billing_json_uint_member(body, len, "chargedMicros", &v) == 0
        && (v < 0 || v > 9007199254740992LL))
    {
        __builtin_trap();
    }

    compact(body, len);

    return 0;
}
