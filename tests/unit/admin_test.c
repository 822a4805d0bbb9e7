/*
 * Unit tests: what the admin and summary endpoints take from a request
 * before the database sees it: raw path segments, entry ids, dates, the
 * bodies of adjustments, reversals and prices, the purchase list's cursor.
 * The rules mirror sql/functions/_rules.sql (t/sql/080_admin_disputes.sql
 * tests the database's side with the same cases).
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "billing_cursor.h"
#include "billing_json.h"
#include "billing_path.h"
#include "tap.h"


#define S(x)  x, sizeof(x) - 1


static void
test_path(void)
{
    char  out[64];
    long  n;

    is_int(billing_path_count(S("/api/admin/users/u1/balance")), 5,
           "path: five segments");
    is_int(billing_path_count(S("/")), 1, "path: \"/\" has one (empty)");
    is_int(billing_path_count(S("api")), 0, "path: no leading slash");
    is_int(billing_path_count(NULL, 0), 0, "path: NULL");

    n = billing_path_segment(S("/api/admin/users/u1/balance"), 5, 3, out,
                             sizeof(out));
    ok(n == 2 && strcmp(out, "u1") == 0, "path: the id segment");
    n = billing_path_segment(S("/api/admin/users/u1/balance"), 5, 4, out,
                             sizeof(out));
    ok(n == 7 && strcmp(out, "balance") == 0, "path: the last segment");

    /* percent-decoding: a slash, a space, dots and UTF-8 stay in the id */
    n = billing_path_segment(S("/m/openai%2Fgpt-4o/price"), 3, 1, out,
                             sizeof(out));
    ok(n == 13 && strcmp(out, "openai/gpt-4o") == 0, "path: %%2F is a '/'");
    n = billing_path_segment(S("/u/a%20b%2f%2E%2e/x"), 3, 1, out,
                             sizeof(out));
    ok(n == 6 && strcmp(out, "a b/..") == 0, "path: either case, dots kept");
    n = billing_path_segment(S("/u/caf%C3%A9+x/x"), 3, 1, out, sizeof(out));
    ok(n == 7 && memcmp(out, "caf\xc3\xa9+x", 7) == 0,
       "path: UTF-8 bytes, '+' stays '+'");

    /* refused */
    ok(billing_path_segment(S("/a/b/c"), 4, 1, out, sizeof(out)) == -1,
       "path: another number of segments");
    ok(billing_path_segment(S("/a/b/c/d"), 3, 1, out, sizeof(out)) == -1,
       "path: more segments");
    ok(billing_path_segment(S("/a//c"), 3, 0, out, sizeof(out)) == -1,
       "path: an empty segment after the one asked for");
    ok(billing_path_segment(S("//b/c"), 3, 2, out, sizeof(out)) == -1,
       "path: an empty segment before it");
    ok(billing_path_segment(S("/a/b/"), 3, 1, out, sizeof(out)) == -1,
       "path: a trailing slash");
    ok(billing_path_segment(S("/a/%zz/c"), 3, 1, out, sizeof(out)) == -1,
       "path: a malformed escape");
    ok(billing_path_segment(S("/a/%4/c"), 3, 1, out, sizeof(out)) == -1,
       "path: a truncated escape");
    ok(billing_path_segment(S("/a/b%4"), 2, 1, out, sizeof(out)) == -1,
       "path: a truncated escape at the end");
    ok(billing_path_segment(S("/a/x%00y/c"), 3, 1, out, sizeof(out)) == -1,
       "path: an escaped NUL");
    ok(billing_path_segment(S("/a/x\0y/c"), 3, 1, out, sizeof(out)) == -1,
       "path: a raw NUL");
    ok(billing_path_segment(S("/a/abcdef/c"), 3, 1, out, 6) == -1,
       "path: out too small");
    ok(billing_path_segment(S("/a/abcde/c"), 3, 1, out, 6) == 5,
       "path: out just large enough");
    ok(billing_path_segment(S("/a/b/c"), 3, 3, out, sizeof(out)) == -1,
       "path: index beyond count");
}


static void
test_entry_id(void)
{
    int64_t  id;

    ok(billing_entry_id_parse(S("1"), &id) == 0 && id == 1, "entry id 1");
    ok(billing_entry_id_parse(S("9223372036854775807"), &id) == 0
       && id == INT64_MAX, "entry id 2^63-1");
    ok(billing_entry_id_parse(S("9223372036854775808"), &id) == -1,
       "entry id 2^63 refused");
    ok(billing_entry_id_parse(S("0"), &id) == -1, "entry id 0 refused");
    ok(billing_entry_id_parse(S("012"), &id) == -1, "leading zero refused");
    ok(billing_entry_id_parse(S("12a"), &id) == -1, "not a number");
    ok(billing_entry_id_parse(S("-1"), &id) == -1, "negative");
    ok(billing_entry_id_parse(S(""), &id) == -1, "empty");
}


static void
test_date(void)
{
    static const struct {
        const char  *s;
        int          valid;
    } cases[] = {
        { "2025-03-01", 1 }, { "2024-02-29", 1 }, { "2000-02-29", 1 },
        { "0001-01-01", 1 }, { "9999-12-31", 1 }, { "2025-12-31", 1 },
        { "2023-02-29", 0 }, { "1900-02-29", 0 }, { "2024-04-31", 0 },
        { "0000-01-01", 0 }, { "2024-00-10", 0 }, { "2024-13-01", 0 },
        { "2024-01-00", 0 }, { "2024-1-01", 0 }, { " 2024-01-01", 0 },
        { "2024-01-01T", 0 }, { "2024/01/01", 0 }, { "", 0 },
        { "2024-01-3a", 0 },
    };

    size_t  i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        is_int(billing_date_valid(cases[i].s, strlen(cases[i].s)),
               cases[i].valid, "date \"%s\"", cases[i].s);
    }

    ok(!billing_date_valid(NULL, 10), "date NULL");
}


static void
test_adjustment(void)
{
    static const struct {
        const char  *body;
        const char  *detail;      /* NULL: accepted */
    } cases[] = {
        { "{\"userId\":\"u\",\"amountMicros\":-5,\"reason\":\"r\","
          "\"idempotencyKey\":\"k\"}", NULL },
        { "{\"userId\":\"u\",\"amountMicros\":0,\"reason\":\"r\","
          "\"idempotencyKey\":\"k\"}", "amountMicros: must not be 0" },
        { "{\"userId\":\"u\",\"amountMicros\":-1000000000000001,"
          "\"reason\":\"r\",\"idempotencyKey\":\"k\"}",
          "amountMicros: must be an integer between -1000000000000000 and "
          "1000000000000000" },
        { "{\"userId\":\"u\",\"amountMicros\":\"5\",\"reason\":\"r\","
          "\"idempotencyKey\":\"k\"}", "amountMicros: must be an integer" },
        { "{\"userId\":\"u\",\"amountMicros\":5,\"idempotencyKey\":\"k\"}",
          "reason: field is required" },
        { "{\"userId\":\"u\",\"amountMicros\":5,\"reason\":\"\","
          "\"idempotencyKey\":\"k\"}", "reason: must be 1 to 500 characters" },
        { "{\"amountMicros\":5,\"reason\":\"r\",\"idempotencyKey\":\"k\"}",
          "userId: field is required" },
        { "{\"userId\":\"u\",\"amountMicros\":5,\"reason\":\"r\"}",
          "idempotencyKey: field or Idempotency-Key header is required" },
        { "{\"userId\":\"u\",\"amountMicros\":5,\"reason\":\"r\","
          "\"reason\":\"s\",\"idempotencyKey\":\"k\"}",
          "reason: field is given more than once" },
    };

    char                      detail[256], body[2200];
    size_t                    i;
    billing_adjustment_req_t  req;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int rc = billing_parse_adjustment(cases[i].body,
                                          strlen(cases[i].body), NULL, 0,
                                          &req, detail, sizeof(detail));
        if (cases[i].detail == NULL) {
            ok(rc == BILLING_JSON_OK && req.amount_micros == -5
               && strcmp(req.user_id, "u") == 0
               && strcmp(req.reason, "r") == 0
               && strcmp(req.idempotency_key, "k") == 0,
               "adjustment %zu accepted", i);
        } else {
            ok(rc == BILLING_JSON_INVALID, "adjustment %zu refused", i);
            is_str(detail, cases[i].detail, "adjustment %zu: detail", i);
        }
    }

    /* 500 characters of two bytes each fit; 501 do not */
    strcpy(body, "{\"userId\":\"u\",\"amountMicros\":1,\"idempotencyKey\":\"k\","
                 "\"reason\":\"");
    for (i = 0; i < 500; i++) {
        strcat(body, "\xc3\xa9");
    }
    strcat(body, "\"}");
    ok(billing_parse_adjustment(body, strlen(body), NULL, 0, &req, detail,
                                sizeof(detail)) == BILLING_JSON_OK
       && strlen(req.reason) == 1000, "reason: 500 characters (1000 bytes)");

    strcpy(body + strlen(body) - 2, "\xc3\xa9\"}");
    ok(billing_parse_adjustment(body, strlen(body), NULL, 0, &req, detail,
                                sizeof(detail)) == BILLING_JSON_INVALID,
       "reason: 501 characters refused");

    /* the header key, alone or equal to the body's */
    ok(billing_parse_adjustment(S("{\"userId\":\"u\",\"amountMicros\":1,"
                                  "\"reason\":\"r\"}"), S("hk"), &req,
                                detail, sizeof(detail)) == BILLING_JSON_OK
       && strcmp(req.idempotency_key, "hk") == 0, "adjustment: header key");
    ok(billing_parse_adjustment(S("{\"userId\":\"u\",\"amountMicros\":1,"
                                  "\"reason\":\"r\",\"idempotencyKey\":"
                                  "\"bk\"}"), S("hk"), &req, detail,
                                sizeof(detail)) == BILLING_JSON_INVALID,
       "adjustment: header and body keys differ");
}


static void
test_reversal_price(void)
{
    char                     detail[256];
    billing_reversal_req_t   rev;
    billing_price_req_t      price;

    ok(billing_parse_reversal(S("{\"reason\":\"outage\","
                                "\"idempotencyKey\":\"k\"}"), NULL, 0, &rev,
                              detail, sizeof(detail)) == BILLING_JSON_OK
       && strcmp(rev.reason, "outage") == 0, "reversal accepted");
    ok(billing_parse_reversal(S("{\"idempotencyKey\":\"k\"}"), NULL, 0, &rev,
                              detail, sizeof(detail)) == BILLING_JSON_INVALID,
       "reversal without a reason");
    is_str(detail, "reason: field is required", "reversal: detail");

    ok(billing_parse_price(S("{\"inputMicrosPerMTok\":0,"
                             "\"outputMicrosPerMTok\":1000000000000,"
                             "\"idempotencyKey\":\"k\"}"), NULL, 0, &price,
                           detail, sizeof(detail)) == BILLING_JSON_OK
       && price.input_micros_per_mtok == 0
       && price.output_micros_per_mtok == 1000000000000LL
       && !price.has_effective_from && !price.has_reason,
       "price: the least body");
    ok(billing_parse_price(S("{\"inputMicrosPerMTok\":1,"
                             "\"outputMicrosPerMTok\":2,\"effectiveFrom\":"
                             "\"2030-01-01T00:00:00Z\",\"reason\":null,"
                             "\"idempotencyKey\":\"k\"}"), NULL, 0, &price,
                           detail, sizeof(detail)) == BILLING_JSON_OK
       && price.has_effective_from && !price.has_reason
       && strcmp(price.effective_from, "2030-01-01T00:00:00Z") == 0,
       "price: effectiveFrom given, reason null");
    ok(billing_parse_price(S("{\"inputMicrosPerMTok\":-1,"
                             "\"outputMicrosPerMTok\":2,"
                             "\"idempotencyKey\":\"k\"}"), NULL, 0, &price,
                           detail, sizeof(detail)) == BILLING_JSON_INVALID,
       "price: negative");
    is_str(detail, "inputMicrosPerMTok: must be an integer between 0 and "
           "1000000000000", "price: detail");
    ok(billing_parse_price(S("{\"inputMicrosPerMTok\":1,"
                             "\"outputMicrosPerMTok\":2,\"effectiveFrom\":5,"
                             "\"idempotencyKey\":\"k\"}"), NULL, 0, &price,
                           detail, sizeof(detail)) == BILLING_JSON_INVALID,
       "price: effectiveFrom not a string");
    is_str(detail, "effectiveFrom: must be a string", "price: detail");
    ok(billing_parse_price(S("{\"inputMicrosPerMTok\":1,"
                             "\"outputMicrosPerMTok\":2,\"effectiveFrom\":"
                             "\"2030-01-01T00:00:00.000000000000000000000000"
                             "000000000000000000000Z\",\"idempotencyKey\":"
                             "\"k\"}"), NULL, 0, &price, detail,
                           sizeof(detail)) == BILLING_JSON_INVALID,
       "price: an effectiveFrom longer than any timestamp");
}


static void
test_purchase_cursor(void)
{
    static const char  *bad[] = {
        "", "x",
        /* "p1:" + an upper-case UUID: not what encode writes */
        "cDE6MEQ3OTk0MjItMDAwMC00MDAwLTgwMDAtMDAwMDAwMDAwMDAw",
        /* "c1:1", a ledger cursor */
        "YzE6MQ",
        /* "p1:" + 35 characters */
        "cDE6MGQ3OTk0MjItMDAwMC00MDAwLTgwMDAtMDAwMDAwMDAwMDA",
    };

    char    c[BILLING_PURCHASE_CURSOR_MAX], uuid[BILLING_UUID_LEN + 1];
    size_t  i;

    ok(billing_purchase_cursor_encode(S("0D799422-0000-4000-8000-000000000000"),
                                      c, sizeof(c)) == 0
       && billing_purchase_cursor_decode(c, strlen(c), uuid) == 0
       && strcmp(uuid, "0d799422-0000-4000-8000-000000000000") == 0,
       "purchase cursor round trip, lower case (%s)", c);
    ok(strlen(c) == 52, "purchase cursor: 52 characters");
    ok(billing_purchase_cursor_encode(S("not-a-uuid"), c, sizeof(c)) == -1,
       "purchase cursor: not a UUID");
    ok(billing_purchase_cursor_encode(S("0d799422-0000-4000-8000-000000000000"),
                                      c, 52) == -1,
       "purchase cursor: small buffer");

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ok(billing_purchase_cursor_decode(bad[i], strlen(bad[i]), uuid) == -1,
           "purchase cursor garbage %zu refused", i);
    }
}


int
main(void)
{
    test_path();
    test_entry_id();
    test_date();
    test_adjustment();
    test_reversal_price();
    test_purchase_cursor();

    return tap_done();
}
