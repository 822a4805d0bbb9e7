/*
 * libFuzzer: ledger and purchase cursors (decode, and re-encode round
 * trip), plus what else takes short strings from a URL (path segments,
 * dates, entry ids) and the base64url, escaping and form helpers that
 * share the same kind of input.
 */

#include <stdint.h>
#include <string.h>

#include "billing_cursor.h"
#include "billing_form.h"
#include "billing_json.h"
#include "billing_path.h"
#include "billing_util.h"


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char            c[BILLING_CURSOR_MAX], esc[128], form[96];
    char            pc[BILLING_PURCHASE_CURSOR_MAX], uuid[BILLING_UUID_LEN + 1];
    char            seg[257];
    long            sn;
    size_t          count, k;
    unsigned char   dec[256];
    int64_t         id;
    size_t          n, n2;
    billing_form_t  f;

    if (billing_cursor_decode((const char *) data, size, &id) == 0) {
        /* canonical: decoding then encoding gives the input back */
        if (id < 1 || billing_cursor_encode(id, c, sizeof(c)) != 0
            || strlen(c) != size || memcmp(c, data, size) != 0)
        {
            __builtin_trap();
        }
    }

    if (billing_purchase_cursor_decode((const char *) data, size, uuid) == 0) {
        if (!billing_uuid_valid(uuid, strlen(uuid))
            || billing_purchase_cursor_encode(uuid, strlen(uuid), pc,
                                              sizeof(pc)) != 0
            || strlen(pc) != size || memcmp(pc, data, size) != 0)
        {
            __builtin_trap();
        }
    }

    /* every segment of a path: decoded, never longer, no NUL in it */
    count = billing_path_count((const char *) data, size);

    for (k = 0; k < count && k < 8; k++) {
        sn = billing_path_segment((const char *) data, size, count, k, seg,
                                  sizeof(seg));
        if (sn >= 0 && ((size_t) sn > size || strlen(seg) != (size_t) sn)) {
            __builtin_trap();
        }
    }

    if (billing_date_valid((const char *) data, size) && size != 10) {
        __builtin_trap();
    }

    if (billing_entry_id_parse((const char *) data, size, &id) == 0) {
        if (id < 1 || billing_cursor_encode(id, c, sizeof(c)) != 0) {
            __builtin_trap();
        }
    }

    if (billing_b64url_decode((const char *) data, size, dec, sizeof(dec), &n)
        == 0)
    {
        char  re[BILLING_B64URL_ENC_LEN(256) + 1];

        if (billing_b64url_encode(dec, n, re, sizeof(re), &n2) != 0
            || n2 != size || memcmp(re, data, size) != 0)
        {
            __builtin_trap();
        }
    }

    n = billing_json_escape(esc, sizeof(esc), (const char *) data, size);
    if (n < sizeof(esc) && strlen(esc) != n) {
        __builtin_trap();
    }

    (void) billing_json_prescan((const char *) data, size);

    billing_form_init(&f, form, sizeof(form));
    (void) billing_form_append_n(&f, "k", 1, (const char *) data, size);
    if (strlen(form) != f.len) {
        __builtin_trap();
    }

    return 0;
}
