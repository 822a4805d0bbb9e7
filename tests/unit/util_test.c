/*
 * Unit tests: base64url, hex, escapers, cursors, form encoding.
 */

#include <stdlib.h>
#include <string.h>

#include "billing_cursor.h"
#include "billing_form.h"
#include "billing_util.h"
#include "tap.h"


#define S(x)  x, sizeof(x) - 1


static void
test_b64(void)
{
    static const struct {
        const char  *raw;
        const char  *enc;
    } v[] = {
        { "", "" }, { "f", "Zg" }, { "fo", "Zm8" }, { "foo", "Zm9v" },
        { "foob", "Zm9vYg" }, { "fooba", "Zm9vYmE" },
        { "foobar", "Zm9vYmFy" }, { "\xfb\xff", "-_8" },
    };

    char           enc[64];
    unsigned char  dec[64];
    size_t         i, n;

    for (i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        ok(billing_b64url_encode((const unsigned char *) v[i].raw,
                                 strlen(v[i].raw), enc, sizeof(enc), &n) == 0
           && strcmp(enc, v[i].enc) == 0, "b64url encode \"%s\"", v[i].enc);
        ok(billing_b64url_decode(v[i].enc, strlen(v[i].enc), dec,
                                 sizeof(dec), &n) == 0
           && n == strlen(v[i].raw) && memcmp(dec, v[i].raw, n) == 0,
           "b64url decode \"%s\"", v[i].enc);
    }

    ok(billing_b64url_decode(S("Zg=="), dec, sizeof(dec), &n) == -1,
       "padding refused");
    ok(billing_b64url_decode(S("Zh"), dec, sizeof(dec), &n) == -1,
       "non-canonical trailing bits refused");
    ok(billing_b64url_decode(S("Z"), dec, sizeof(dec), &n) == -1,
       "length %% 4 == 1 refused");
    ok(billing_b64url_decode(S("Zm9v+g"), dec, sizeof(dec), &n) == -1,
       "'+' (standard alphabet) refused");
    ok(billing_b64url_decode(S("Zm 9v"), dec, sizeof(dec), &n) == -1,
       "space refused");
    ok(billing_b64url_decode(S("Zm9vYmFy"), dec, 5, &n) == -1,
       "small buffer refused");
    ok(billing_b64url_encode((const unsigned char *) "foo", 3, enc, 4, &n)
       == -1, "small encode buffer refused");
}


static void
test_escape(void)
{
    char    buf[64];
    size_t  n;

    n = billing_json_escape(buf, sizeof(buf), S("a\"b\\c\nd\x01"));
    is_str(buf, "a\\\"b\\\\c\\u000ad\\u0001", "json escape");
    ok(n == strlen(buf), "json escape length");

    n = billing_json_escape(buf, sizeof(buf), S("caf\xc3\xa9 \xff"));
    is_str(buf, "caf\xc3\xa9 \\ufffd", "json escape: invalid UTF-8 -> fffd");

    n = billing_json_escape(buf, 4, S("ab\"cd"));
    ok(n == 6 && strcmp(buf, "ab") == 0,
       "json escape: truncation never splits an escape (%s, %zu)", buf, n);

    n = billing_json_escape(NULL, 0, S("abc"));
    ok(n == 3, "json escape: size query");
}


static void
test_cursor(void)
{
    static const int64_t  ids[] = { 1, 42, 1000000, INT64_MAX };
    static const char    *bad[] = {
        "", "x", "YzE6", "YzE6MA", "YzE6MDE", "YzI6MQ", "YzE6LTE",
        "YzE6OTIyMzM3MjAzNjg1NDc3NTgwOA", "YzE6MSA", "YzE6MQ==", "Yz E6MQ",
        "YzE6MWE",
    };

    char     c[BILLING_CURSOR_MAX];
    int64_t  id;
    size_t   i;

    for (i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
        id = 0;
        ok(billing_cursor_encode(ids[i], c, sizeof(c)) == 0
           && billing_cursor_decode(c, strlen(c), &id) == 0 && id == ids[i],
           "cursor round trip %lld (%s)", (long long) ids[i], c);
    }

    is_str((billing_cursor_encode(1, c, sizeof(c)), c), "YzE6MQ",
           "cursor format: base64url(\"c1:1\")");

    ok(billing_cursor_encode(0, c, sizeof(c)) == -1, "cursor id 0 refused");
    ok(billing_cursor_encode(-5, c, sizeof(c)) == -1, "negative id refused");
    ok(billing_cursor_encode(INT64_MAX, c, 10) == -1, "small buffer");

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ok(billing_cursor_decode(bad[i], strlen(bad[i]), &id) == -1,
           "cursor garbage \"%s\" refused", bad[i]);
    }

    ok(billing_cursor_decode(NULL, 0, &id) == -1, "NULL cursor");
}


static void
test_form(void)
{
    billing_form_t  f;
    char            buf[256], small[24];

    billing_form_init(&f, buf, sizeof(buf));
    ok(billing_form_append(&f, "mode", "payment") == 0
       && billing_form_append(&f, "metadata[purchase_id]",
                              "0f8fad5b-d9cb-469f-a165-70867728950e") == 0
       && billing_form_append(&f, "line_items[0][price_data][product_data]"
                              "[name]", "Starter pack & more") == 0,
       "form appends");
    is_str(buf, "mode=payment&metadata%5Bpurchase_id%5D="
           "0f8fad5b-d9cb-469f-a165-70867728950e&"
           "line_items%5B0%5D%5Bprice_data%5D%5Bproduct_data%5D%5Bname%5D="
           "Starter%20pack%20%26%20more", "form encoding");
    ok(f.len == strlen(buf), "form length");

    billing_form_init(&f, buf, sizeof(buf));
    billing_form_append_n(&f, S("u"), S("caf\xc3\xa9~+/="));
    is_str(buf, "u=caf%C3%A9~%2B%2F%3D", "form: UTF-8 and reserved bytes");

    billing_form_init(&f, small, sizeof(small));
    ok(billing_form_append(&f, "a", "0123456789") == 0, "fits");
    ok(billing_form_append(&f, "b", "0123456789") == -1 && f.overflow
       && strcmp(small, "a=0123456789") == 0,
       "overflow leaves the buffer unchanged");
    ok(billing_form_append(&f, "c", "") == -1, "overflow is sticky");

    billing_form_init(&f, small, sizeof(small));
    ok(billing_form_append(&f, "a", "012345678901234567890") == 0
       && strlen(small) == 23, "exact fit (23 + NUL)");
    billing_form_init(&f, small, sizeof(small));
    ok(billing_form_append(&f, "a", "0123456789012345678901") == -1,
       "one byte too many");
}


int
main(void)
{
    test_b64();
    test_escape();
    test_cursor();
    test_form();

    return tap_done();
}
