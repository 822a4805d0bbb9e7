/*
 * Unit tests: base64url, hex, UTF-8, the JSON pre-scan and compaction,
 * the escaper,
 * small helpers, cursors, form encoding.
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
test_hex(void)
{
    unsigned char  raw[4] = { 0x00, 0x7f, 0xab, 0xff }, dec[8];
    char           hex[9];

    billing_hex_encode(raw, sizeof(raw), hex);
    is_str(hex, "007fabff", "hex encode (lower case)");

    ok(billing_hex_decode(S("007FabfF"), dec, sizeof(dec)) == 0
       && memcmp(dec, raw, 4) == 0, "hex decode, either case");
    ok(billing_hex_decode(S("007"), dec, sizeof(dec)) == -1,
       "odd length refused");
    ok(billing_hex_decode(S("0g"), dec, sizeof(dec)) == -1,
       "non-hex digit refused");
    ok(billing_hex_decode(S("007fabff"), dec, 3) == -1,
       "small buffer refused");
    ok(billing_hex_decode(S(""), dec, sizeof(dec)) == 0, "empty is empty");
}


static void
test_utf8(void)
{
    static const struct {
        const char  *bytes;
        size_t       len;
    } seq[] = {
        { "a", 1 }, { "\xc3\xa9", 2 }, { "\xe2\x82\xac", 3 },
        { "\xf0\x9f\x98\x80", 4 }, { "\xf4\x8f\xbf\xbf", 4 },
        { "\xc0\xaf", 0 }, { "\xe0\x80\xaf", 0 }, { "\xed\xa0\x80", 0 },
        { "\xf4\x90\x80\x80", 0 }, { "\x80", 0 }, { "\xff", 0 },
    };

    size_t  i;

    for (i = 0; i < sizeof(seq) / sizeof(seq[0]); i++) {
        is_int(billing_utf8_seq_len((const unsigned char *) seq[i].bytes,
                                    strlen(seq[i].bytes)),
               seq[i].len, "UTF-8 sequence %zu", i);
    }

    is_int(billing_utf8_seq_len((const unsigned char *) "\xc3\xa9", 1), 0,
           "a sequence cut by len is not one");

    ok(billing_is_printable_utf8(S("user 42 caf\xc3\xa9")), "printable");
    ok(billing_is_printable_utf8(S("")), "empty is printable");
    ok(!billing_is_printable_utf8(S("a\tb")), "C0 control refused");
    ok(!billing_is_printable_utf8(S("a\x7f")), "DEL refused");
    ok(!billing_is_printable_utf8(S("a\xc2\x85")), "C1 control refused");
    ok(billing_is_printable_utf8(S("\xc2\xa0")), "U+00A0 is printable");
    ok(!billing_is_printable_utf8(S("\xc3")), "truncated UTF-8 refused");
}


static void
test_prescan(void)
{
    ok(billing_json_prescan(S("{\"a\": \"b\\u0041\"}\r\n\t")) == 0,
       "prescan: ordinary JSON with whitespace");
    ok(billing_json_prescan(S("{\"a\": \"b\\\\u0000\"}")) == 0,
       "prescan: an escaped backslash before u0000 is text");
    ok(billing_json_prescan(S("{\"a\": \"b\\u0000\"}")) == -1,
       "prescan: \\u0000 refused");
    ok(billing_json_prescan(S("{\"a\": \"b\tc\"}")) == -1,
       "prescan: raw tab inside a string refused");
    ok(billing_json_prescan(S("{\"a\":\x01 1}")) == -1,
       "prescan: control character outside strings refused");
    ok(billing_json_prescan(S("{\"a\":\x00 1}")) == -1,
       "prescan: NUL refused");
}


static void
test_small_helpers(void)
{
    char  err[16];

    ok(billing_bytes_in(S("k-1~"), 0x21, 0x7e), "bytes in range");
    ok(!billing_bytes_in(S("k 1"), 0x21, 0x7e), "a byte below the range");
    ok(!billing_bytes_in(S("k\x80"), 0x21, 0x7e), "a byte above the range");
    ok(billing_bytes_in(S(""), 0x21, 0x7e), "no bytes: true");

    ok(billing_contains(S("-----BEGIN PUBLIC KEY-----"), "PUBLIC KEY"),
       "contains");
    ok(!billing_contains("PUBLIC KEY", 6, "PUBLIC KEY"),
       "contains reads only len bytes");
    ok(billing_contains(S("abc"), ""), "the empty needle is everywhere");
    ok(!billing_contains(S(""), "a"), "nothing contains a");

    is_int(billing_fail(7, err, sizeof(err), "%s %d", "too long a text", 42),
           7, "billing_fail returns its code");
    is_str(err, "too long a text", "and truncates the message to err");
    is_int(billing_fail(-1, NULL, 0, "x"), -1, "billing_fail without err");
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

    is_int(billing_form_encoded_len(S("az09-._~")), 8,
           "form: unreserved bytes stay");
    is_int(billing_form_encoded_len(S("a b&\xc3\xa9")), 14,
           "form: every other byte is three");

    billing_form_init(&f, small, sizeof(small));
    ok(billing_form_append(&f, "a", "012345678901234567890") == 0
       && strlen(small) == 23, "exact fit (23 + NUL)");
    billing_form_init(&f, small, sizeof(small));
    ok(billing_form_append(&f, "a", "0123456789012345678901") == -1,
       "one byte too many");
}


static void
test_compact(void)
{
    static const struct {
        const char  *in;
        const char  *out;
    } v[] = {
        /* what PostgreSQL's json_build_object and json_agg write */
        { "{\"a\" : 1, \"b\" : \"x y\"}", "{\"a\":1,\"b\":\"x y\"}" },
        { "[{\"a\" : 1}, \n {\"a\" : 2}]", "[{\"a\":1},{\"a\":2}]" },
        /* whitespace inside strings stays, escapes do not end a string */
        { "{\"k\" : \"a \\\" : b\"}", "{\"k\":\"a \\\" : b\"}" },
        { "{\"k\" : \"\\\\\", \"j\" : 2}", "{\"k\":\"\\\\\",\"j\":2}" },
        { "\t{ }\r\n", "{}" },
        { "", "" },
        { "{\"status\":\"ok\"}", "{\"status\":\"ok\"}" },
    };

    char    buf[128];
    size_t  i, n;

    for (i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        n = strlen(v[i].in);
        memcpy(buf, v[i].in, n);
        n = billing_json_compact(buf, n);
        ok(n == strlen(v[i].out) && memcmp(buf, v[i].out, n) == 0,
           "compact %zu: \"%.*s\"", i, (int) n, buf);
    }
}


int
main(void)
{
    test_b64();
    test_hex();
    test_utf8();
    test_prescan();
    test_compact();
    test_small_helpers();
    test_escape();
    test_cursor();
    test_form();

    return tap_done();
}
