/*
 * ScholarLink Billing: opaque cursors of the ledger and the purchase list.
 */

#include <stdio.h>
#include <string.h>

#include "billing_cursor.h"
#include "billing_json.h"
#include "billing_util.h"


int
billing_cursor_encode(int64_t before_id, char *out, size_t outlen)
{
    char  raw[32];
    int   n;

    if (out == NULL || outlen == 0) {
        return -1;
    }

    out[0] = '\0';

    if (before_id < 1) {
        return -1;
    }

    n = snprintf(raw, sizeof(raw), "c1:%lld", (long long) before_id);
    if (n <= 0 || (size_t) n >= sizeof(raw)) {
        return -1;
    }

    return billing_b64url_encode((const unsigned char *) raw, (size_t) n,
                                 out, outlen, NULL);
}


int
billing_cursor_decode(const char *p, size_t len, int64_t *before_id)
{
    unsigned char  raw[BILLING_CURSOR_MAX];
    size_t         n, i;
    int64_t        v;

    if (p == NULL || len == 0 || len >= BILLING_CURSOR_MAX
        || billing_b64url_decode(p, len, raw, sizeof(raw), &n) != 0)
    {
        return -1;
    }

    /* "c1:" then 1..19 digits, no leading zero */
    if (n < 4 || n > 22 || memcmp(raw, "c1:", 3) != 0 || raw[3] == '0') {
        return -1;
    }

    v = 0;

    for (i = 3; i < n; i++) {
        if (raw[i] < '0' || raw[i] > '9') {
            return -1;
        }

        if (v > (INT64_MAX - (raw[i] - '0')) / 10) {
            return -1;
        }

        v = v * 10 + (raw[i] - '0');
    }

    *before_id = v;

    return 0;
}


int
billing_purchase_cursor_encode(const char *uuid, size_t len, char *out,
    size_t outlen)
{
    char  raw[3 + BILLING_UUID_LEN + 1];

    if (out == NULL || outlen == 0) {
        return -1;
    }

    out[0] = '\0';

    memcpy(raw, "p1:", 3);

    if (billing_uuid_normalize(uuid, len, raw + 3) != 0) {
        return -1;
    }

    return billing_b64url_encode((const unsigned char *) raw,
                                 3 + BILLING_UUID_LEN, out, outlen, NULL);
}


int
billing_purchase_cursor_decode(const char *p, size_t len, char *uuid)
{
    unsigned char  raw[BILLING_PURCHASE_CURSOR_MAX];
    size_t         n, i;

    if (p == NULL || len == 0 || len >= BILLING_PURCHASE_CURSOR_MAX
        || billing_b64url_decode(p, len, raw, sizeof(raw), &n) != 0
        || n != 3 + BILLING_UUID_LEN || memcmp(raw, "p1:", 3) != 0
        || !billing_uuid_valid((const char *) raw + 3, BILLING_UUID_LEN))
    {
        return -1;
    }

    /* canonical: lower case only, as encode writes it */
    for (i = 3; i < n; i++) {
        if (raw[i] >= 'A' && raw[i] <= 'F') {
            return -1;
        }
    }

    memcpy(uuid, raw + 3, BILLING_UUID_LEN);
    uuid[BILLING_UUID_LEN] = '\0';

    return 0;
}
