/*
 * Unit tests: UTF-8, JSON objects and members, request body parsers,
 * idempotency keys, UUIDs, integers of the database's answers.
 */

#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "billing_json.h"
#include "tap.h"


#define S(x)  x, sizeof(x) - 1


typedef struct {
    const char  *bytes;
    size_t       len;
    int          valid;
    const char  *name;
} utf8_case_t;


static void
test_utf8(void)
{
    static const utf8_case_t  cases[] = {
        { S("plain ascii"), 1, "ascii" },
        { S("caf\xc3\xa9"), 1, "2-byte" },
        { S("\xe2\x82\xac"), 1, "3-byte euro" },
        { S("\xf0\x9f\x98\x80"), 1, "valid 4-byte emoji" },
        { S("\xf4\x8f\xbf\xbf"), 1, "U+10FFFF" },
        { S("\xef\xbf\xbd"), 1, "U+FFFD" },
        { S("\xc0\xaf"), 0, "overlong '/' (2-byte)" },
        { S("\xc1\xbf"), 0, "overlong C1 lead" },
        { S("\xe0\x80\xaf"), 0, "overlong 3-byte" },
        { S("\xf0\x80\x80\xaf"), 0, "overlong 4-byte" },
        { S("\xed\xa0\x80"), 0, "surrogate U+D800" },
        { S("\xed\xbf\xbf"), 0, "surrogate U+DFFF" },
        { S("\xf4\x90\x80\x80"), 0, "above U+10FFFF" },
        { S("\xf5\x80\x80\x80"), 0, "F5 lead" },
        { S("\xff"), 0, "FF byte" },
        { S("\x80"), 0, "lone continuation" },
        { S("\xc3"), 0, "truncated 2-byte" },
        { S("\xe2\x82"), 0, "truncated 3-byte" },
        { S("\xf0\x9f\x98"), 0, "truncated 4-byte" },
        { S("\xe2\x28\xa1"), 0, "bad continuation" },
        { "", 0, 1, "empty" },
    };

    size_t  i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        is_int(billing_utf8_valid((const unsigned char *) cases[i].bytes,
                                  cases[i].len), cases[i].valid,
               "utf8: %s", cases[i].name);
    }

    /* the length is honoured: a truncated sequence at the end of the span */
    ok(!billing_utf8_valid((const unsigned char *) "\xc3\xa9", 1),
       "utf8: len cuts a sequence");
}


#define GOOD_RECONCILE \
    "{\"userId\":\"user_1\",\"model\":\"gpt-4o\",\"inputTokens\":1000," \
    "\"outputTokens\":500,\"idempotencyKey\":\"k-1\"}"


typedef struct {
    const char  *body;
    const char  *hdr;         /* NULL: no header */
    int          rc;
    const char  *detail;      /* substring expected in detail */
    const char  *name;
} rec_case_t;


static void
test_reconcile_table(void)
{
    static const rec_case_t  cases[] = {
        { GOOD_RECONCILE, NULL, BILLING_JSON_OK, "", "good" },
        { "  " GOOD_RECONCILE " \r\n\t", NULL, BILLING_JSON_OK, "",
          "surrounding whitespace" },
        { "{\"model\":\"gpt-4o\",\"inputTokens\":1,\"outputTokens\":1,"
          "\"idempotencyKey\":\"k\"}", NULL, BILLING_JSON_INVALID, "userId",
          "missing userId" },
        { "{\"userId\":\"u\",\"inputTokens\":1,\"outputTokens\":1,"
          "\"idempotencyKey\":\"k\"}", NULL, BILLING_JSON_INVALID, "model",
          "missing model" },
        { "{\"userId\":\"u\",\"model\":\"m\",\"outputTokens\":1,"
          "\"idempotencyKey\":\"k\"}", NULL, BILLING_JSON_INVALID,
          "inputTokens", "missing inputTokens" },
        { "{\"userId\":\"u\",\"model\":\"m\",\"inputTokens\":1,"
          "\"idempotencyKey\":\"k\"}", NULL, BILLING_JSON_INVALID,
          "outputTokens", "missing outputTokens" },
        { "{\"userId\":\"u\",\"model\":\"m\",\"inputTokens\":1,"
          "\"outputTokens\":1}", NULL, BILLING_JSON_INVALID,
          "idempotencyKey", "missing key (no header)" },
        { "{\"userId\":\"u\",\"model\":\"m\",\"inputTokens\":1,"
          "\"outputTokens\":1}", "hdr-key", BILLING_JSON_OK, "",
          "header-only key" },
        { GOOD_RECONCILE, "k-1", BILLING_JSON_OK, "", "same key in both" },
        { GOOD_RECONCILE, "k-2", BILLING_JSON_INVALID, "differs",
          "header/body key conflict" },
        { GOOD_RECONCILE, "", BILLING_JSON_INVALID, "Idempotency-Key",
          "empty header key" },
        { GOOD_RECONCILE, "bad key", BILLING_JSON_INVALID, "Idempotency-Key",
          "header key with space" },
        { "{\"userId\":1,\"model\":\"m\",\"inputTokens\":1,"
          "\"outputTokens\":1,\"idempotencyKey\":\"k\"}", NULL,
          BILLING_JSON_INVALID, "userId", "userId wrong type" },
        { "{\"userId\":\"u\",\"model\":\"m\",\"inputTokens\":\"1\","
          "\"outputTokens\":1,\"idempotencyKey\":\"k\"}", NULL,
          BILLING_JSON_INVALID, "inputTokens", "string tokens" },
        { "{\"userId\":\"u\",\"model\":\"m\",\"inputTokens\":true,"
          "\"outputTokens\":1,\"idempotencyKey\":\"k\"}", NULL,
          BILLING_JSON_INVALID, "inputTokens", "bool tokens" },
        { "{\"userId\":\"u\",\"model\":\"m\",\"inputTokens\":null,"
          "\"outputTokens\":1,\"idempotencyKey\":\"k\"}", NULL,
          BILLING_JSON_INVALID, "inputTokens", "null tokens" },
        { "{\"userId\":\"u\",\"model\":\"m\",\"inputTokens\":1000000000,"
          "\"outputTokens\":1000000000,\"idempotencyKey\":\"k\"}", NULL,
          BILLING_JSON_OK, "", "1e9 ok" },
        { "{\"userId\":\"u\",\"model\":\"m\",\"inputTokens\":1e9,"
          "\"outputTokens\":0,\"idempotencyKey\":\"k\"}", NULL,
          BILLING_JSON_OK, "", "1e9 in exponent form ok" },
        { "{\"userId\":\"u\",\"model\":\"m\",\"inputTokens\":1000000001,"
          "\"outputTokens\":1,\"idempotencyKey\":\"k\"}", NULL,
          BILLING_JSON_INVALID, "inputTokens", "1e9+1 rejected" },
        { "{\"userId\":\"u\",\"model\":\"m\",\"inputTokens\":1.5,"
          "\"outputTokens\":1,\"idempotencyKey\":\"k\"}", NULL,
          BILLING_JSON_INVALID, "inputTokens", "1.5 rejected" },
        { "{\"userId\":\"u\",\"model\":\"m\",\"inputTokens\":-1,"
          "\"outputTokens\":1,\"idempotencyKey\":\"k\"}", NULL,
          BILLING_JSON_INVALID, "inputTokens", "-1 rejected" },
        { "{\"userId\":\"u\",\"model\":\"m\",\"inputTokens\":-0.0,"
          "\"outputTokens\":1,\"idempotencyKey\":\"k\"}", NULL,
          BILLING_JSON_OK, "", "-0.0 is 0" },
        { "{\"userId\":\"u\",\"model\":\"m\",\"inputTokens\":1e400,"
          "\"outputTokens\":1,\"idempotencyKey\":\"k\"}", NULL,
          BILLING_JSON_INVALID, "inputTokens", "1e400 rejected" },
        { "{\"userId\":\"u\",\"model\":\"m\",\"inputTokens\":-1e400,"
          "\"outputTokens\":1,\"idempotencyKey\":\"k\"}", NULL,
          BILLING_JSON_INVALID, "inputTokens", "-1e400 rejected" },
        { "{\"userId\":\"u\",\"model\":\"m\",\"inputTokens\":1e-400,"
          "\"outputTokens\":1,\"idempotencyKey\":\"k\"}", NULL,
          BILLING_JSON_OK, "", "1e-400 underflows to 0" },
        { "{\"userId\":\"u\",\"model\":\"m\",\"inputTokens\":"
          "9223372036854775808,\"outputTokens\":1,\"idempotencyKey\":\"k\"}",
          NULL, BILLING_JSON_INVALID, "inputTokens", "2^63 rejected" },
        { "{\"userId\":\"u\",\"model\":\"m\",\"inputTokens\":1,"
          "\"outputTokens\":1,\"idempotencyKey\":\"bad key\"}", NULL,
          BILLING_JSON_INVALID, "idempotencyKey", "key with space" },
        { "{\"userId\":\"u\",\"model\":\"m\",\"inputTokens\":1,"
          "\"outputTokens\":1,\"idempotencyKey\":\"\"}", NULL,
          BILLING_JSON_INVALID, "idempotencyKey: must be 1 to 255 printable "
          "ASCII characters without spaces", "empty key" },
        { "{\"userId\":\"u\",\"model\":\"m\",\"inputTokens\":1,"
          "\"outputTokens\":1,\"idempotencyKey\":\"caf\xc3\xa9\"}", NULL,
          BILLING_JSON_INVALID, "idempotencyKey", "non-ASCII key" },
        /* a model is a name of any characters: the database answers
         * 422 unknown_model for one it has no price for */
        { "{\"userId\":\"u\",\"model\":\"gpt-4o \",\"inputTokens\":1,"
          "\"outputTokens\":1,\"idempotencyKey\":\"k\"}", NULL,
          BILLING_JSON_OK, "", "model with space is a name" },
        { "{\"userId\":\"u\",\"model\":\"mod\xc3\xa8le/4?x=1\",\"inputTokens\":1,"
          "\"outputTokens\":1,\"idempotencyKey\":\"k\"}", NULL,
          BILLING_JSON_OK, "", "model of any characters is a name" },
        { "{\"userId\":\"u\",\"model\":\"\",\"inputTokens\":1,"
          "\"outputTokens\":1,\"idempotencyKey\":\"k\"}", NULL,
          BILLING_JSON_INVALID, "model", "empty model" },
        { "{\"userId\":\"\",\"model\":\"m\",\"inputTokens\":1,"
          "\"outputTokens\":1,\"idempotencyKey\":\"k\"}", NULL,
          BILLING_JSON_INVALID, "userId", "empty userId" },
        { "{\"userId\":\"a\\tb\",\"model\":\"m\",\"inputTokens\":1,"
          "\"outputTokens\":1,\"idempotencyKey\":\"k\"}", NULL,
          BILLING_JSON_INVALID,
          "userId: must be 1 to 255 bytes without control characters",
          "control char in userId" },
        { "{\"userId\":\"a\\u007fb\",\"model\":\"m\",\"inputTokens\":1,"
          "\"outputTokens\":1,\"idempotencyKey\":\"k\"}", NULL,
          BILLING_JSON_INVALID, "userId", "DEL in userId" },
        { "{\"userId\":\"a\\u0085b\",\"model\":\"m\",\"inputTokens\":1,"
          "\"outputTokens\":1,\"idempotencyKey\":\"k\"}", NULL,
          BILLING_JSON_INVALID, "userId", "C1 control in userId" },
        { "{\"userId\":\"a\\u00a0b\",\"model\":\"m\",\"inputTokens\":1,"
          "\"outputTokens\":1,\"idempotencyKey\":\"k\"}", NULL,
          BILLING_JSON_OK, "", "no-break space in userId is printable" },
        { "{\"userId\":\"u\\u0000x\",\"model\":\"m\",\"inputTokens\":1,"
          "\"outputTokens\":1,\"idempotencyKey\":\"k\"}", NULL,
          BILLING_JSON_INVALID, "JSON object", "\\u0000 escape refused" },
        { "{\"userId\":\"u\\\\u0000x\",\"model\":\"m\",\"inputTokens\":1,"
          "\"outputTokens\":1,\"idempotencyKey\":\"k\"}", NULL,
          BILLING_JSON_OK, "", "escaped backslash then u0000 is fine" },
        { "{\"userId\":\"caf\xc3\xa9\",\"model\":\"m\",\"inputTokens\":1,"
          "\"outputTokens\":1,\"idempotencyKey\":\"k\"}", NULL,
          BILLING_JSON_OK, "", "UTF-8 userId ok" },
        { "{\"userId\":\"\xc0\xaf\",\"model\":\"m\",\"inputTokens\":1,"
          "\"outputTokens\":1,\"idempotencyKey\":\"k\"}", NULL,
          BILLING_JSON_BAD_UTF8, "UTF-8", "overlong in body" },
        { "{\"userId\":\"\\ud800\",\"model\":\"m\",\"inputTokens\":1,"
          "\"outputTokens\":1,\"idempotencyKey\":\"k\"}", NULL,
          BILLING_JSON_INVALID, "", "lone surrogate escape" },
        { GOOD_RECONCILE "x", NULL, BILLING_JSON_INVALID, "JSON object",
          "trailing garbage" },
        { GOOD_RECONCILE "{}", NULL, BILLING_JSON_INVALID, "JSON object",
          "two objects" },
        { "[1,2]", NULL, BILLING_JSON_INVALID, "JSON object", "array" },
        { "\"str\"", NULL, BILLING_JSON_INVALID, "JSON object", "string" },
        { "", NULL, BILLING_JSON_INVALID, "JSON object", "empty body" },
        { "{\"userId\":\"u\",", NULL, BILLING_JSON_INVALID, "JSON object",
          "truncated" },
        { "{\"userId\":\"u\",\"userId\":\"v\",\"model\":\"m\","
          "\"inputTokens\":1,\"outputTokens\":1,\"idempotencyKey\":\"k\"}",
          NULL, BILLING_JSON_INVALID, "more than once", "duplicate field" },
        { "{\"userId\":\"u\",\"model\":\"m\",\"inputTokens\":1,"
          "\"outputTokens\":1,\"idempotencyKey\":\"k\",\"extra\":[1,{}],"
          "\"holdId\":null}", NULL, BILLING_JSON_OK, "",
          "unknown field ignored, null holdId" },
        { "{\"userId\":\"u\",\"model\":\"m\",\"inputTokens\":1,"
          "\"outputTokens\":1,\"idempotencyKey\":\"k\","
          "\"holdId\":\"not-a-uuid\"}", NULL, BILLING_JSON_INVALID, "holdId",
          "bad holdId" },
        { "{\"userId\":\"u\",\"model\":\"m\",\"inputTokens\":1,"
          "\"outputTokens\":1,\"idempotencyKey\":\"k\",\"holdId\":5}", NULL,
          BILLING_JSON_INVALID, "holdId", "holdId wrong type" },
        { "{\"userId\":\"u\"\x01,\"model\":\"m\"}", NULL,
          BILLING_JSON_INVALID, "JSON object", "control byte outside string" },
    };

    billing_reconcile_req_t  req;
    char                     detail[256];
    size_t                   i;
    int                      rc;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        detail[0] = '\0';
        rc = billing_parse_reconcile(cases[i].body, strlen(cases[i].body),
                                     cases[i].hdr,
                                     cases[i].hdr ? strlen(cases[i].hdr) : 0,
                                     &req, detail, sizeof(detail));
        ok(rc == cases[i].rc && strstr(detail, cases[i].detail) != NULL,
           "reconcile: %s (rc %d, \"%s\")", cases[i].name, rc, detail);
    }
}


/* a model of n copies of the character c: rc expected, copied exactly */
static void
test_model_length(const char *c, size_t n, int expect)
{
    static char              model[4 * 129 + 1], body[sizeof(model) + 200];
    billing_reconcile_req_t  req;
    char                     detail[256];
    size_t                   i, clen;
    int                      rc;

    clen = strlen(c);
    for (i = 0; i < n; i++) {
        memcpy(model + i * clen, c, clen);
    }
    model[n * clen] = '\0';

    snprintf(body, sizeof(body), "{\"userId\":\"u\",\"model\":\"%s\","
             "\"inputTokens\":1,\"outputTokens\":1,\"idempotencyKey\":\"k\"}",
             model);
    rc = billing_parse_reconcile(body, strlen(body), NULL, 0, &req, detail,
                                 sizeof(detail));

    if (expect == BILLING_JSON_OK) {
        ok(rc == BILLING_JSON_OK && strcmp(req.model, model) == 0,
           "reconcile: model of %zu %zu-byte characters accepted", n, clen);
    } else {
        ok(rc == expect
           && strcmp(detail, "model: must be 1 to 128 characters") == 0,
           "reconcile: model of %zu %zu-byte characters refused (\"%s\")",
           n, clen, detail);
    }
}


static void
test_reconcile_values(void)
{
    billing_reconcile_req_t  req;
    char                     detail[256], key[300], body[600];
    int                      rc;

    rc = billing_parse_reconcile(S(GOOD_RECONCILE), NULL, 0, &req, detail,
                                 sizeof(detail));
    ok(rc == BILLING_JSON_OK && strcmp(req.user_id, "user_1") == 0
       && strcmp(req.model, "gpt-4o") == 0 && req.input_tokens == 1000
       && req.output_tokens == 500 && strcmp(req.idempotency_key, "k-1") == 0
       && !req.has_hold, "reconcile: values copied");

    rc = billing_parse_reconcile(S("{\"userId\":\"u\",\"model\":\"m\","
        "\"inputTokens\":0,\"outputTokens\":0,"
        "\"holdId\":\"0F8FAD5B-D9CB-469F-A165-70867728950E\"}"),
        S("hk"), &req, detail, sizeof(detail));
    ok(rc == BILLING_JSON_OK && req.has_hold
       && strcmp(req.hold_id, "0f8fad5b-d9cb-469f-a165-70867728950e") == 0
       && strcmp(req.idempotency_key, "hk") == 0,
       "reconcile: holdId lower-cased, header key used");

    memset(key, 'k', 255);
    key[255] = '\0';
    snprintf(body, sizeof(body), "{\"userId\":\"u\",\"model\":\"m\","
             "\"inputTokens\":1,\"outputTokens\":1,\"idempotencyKey\":\"%s\"}",
             key);
    rc = billing_parse_reconcile(body, strlen(body), NULL, 0, &req, detail,
                                 sizeof(detail));
    ok(rc == BILLING_JSON_OK && strlen(req.idempotency_key) == 255,
       "reconcile: 255-char key ok");

    key[255] = 'k';
    key[256] = '\0';
    snprintf(body, sizeof(body), "{\"userId\":\"u\",\"model\":\"m\","
             "\"inputTokens\":1,\"outputTokens\":1,\"idempotencyKey\":\"%s\"}",
             key);
    rc = billing_parse_reconcile(body, strlen(body), NULL, 0, &req, detail,
                                 sizeof(detail));
    ok(rc == BILLING_JSON_INVALID && strstr(detail, "idempotencyKey"),
       "reconcile: 256-char key rejected");

    rc = billing_parse_reconcile(S("{\"userId\":\"u\",\"model\":\"m\","
        "\"inputTokens\":1,\"outputTokens\":1}"), key, 256, &req, detail,
        sizeof(detail));
    ok(rc == BILLING_JSON_INVALID, "reconcile: 256-char header key rejected");

    /* the body need not be NUL-terminated: parse only a prefix */
    rc = billing_parse_reconcile(GOOD_RECONCILE "garbage",
                                 sizeof(GOOD_RECONCILE) - 1, NULL, 0, &req,
                                 detail, sizeof(detail));
    ok(rc == BILLING_JSON_OK, "reconcile: len honoured");

    rc = billing_parse_reconcile(S(GOOD_RECONCILE), NULL, 0, &req, NULL, 0);
    ok(rc == BILLING_JSON_OK, "reconcile: NULL detail ok");

    rc = billing_parse_reconcile(NULL, 0, NULL, 0, &req, detail,
                                 sizeof(detail));
    ok(rc == BILLING_JSON_INVALID, "reconcile: NULL body");

    /* model: 1..128 characters of 1 to 4 bytes (the database's length) */
    test_model_length("m", 128, BILLING_JSON_OK);
    test_model_length("m", 129, BILLING_JSON_INVALID);
    test_model_length("\xc3\xa9", 128, BILLING_JSON_OK);
    test_model_length("\xc3\xa9", 129, BILLING_JSON_INVALID);
    test_model_length("\xf0\x9f\x98\x80", 128, BILLING_JSON_OK);
    test_model_length("\xf0\x9f\x98\x80", 129, BILLING_JSON_INVALID);

    /* deep nesting in an unknown field does not crash */
    {
        static char  deep[20000];
        size_t       i, n = 0;

        n += (size_t) snprintf(deep, sizeof(deep), "{\"x\":");
        for (i = 0; i < 5000; i++) {
            deep[n++] = '[';
        }
        for (i = 0; i < 5000; i++) {
            deep[n++] = ']';
        }
        deep[n++] = '}';
        rc = billing_parse_reconcile(deep, n, NULL, 0, &req, detail,
                                     sizeof(detail));
        ok(rc == BILLING_JSON_INVALID, "reconcile: deep nesting refused");
    }
}


static void
test_hold_purchase(void)
{
    billing_hold_req_t      h;
    billing_purchase_req_t  p;
    char                    detail[256];
    int                     rc;

    rc = billing_parse_hold(S("{\"userId\":\"u\",\"amountMicros\":5000,"
        "\"idempotencyKey\":\"h1\"}"), NULL, 0, &h, detail, sizeof(detail));
    ok(rc == BILLING_JSON_OK && h.amount_micros == 5000
       && h.ttl_seconds == 600 && strcmp(h.idempotency_key, "h1") == 0,
       "hold: defaults ttl to 600");

    rc = billing_parse_hold(S("{\"userId\":\"u\",\"amountMicros\":"
        "1000000000000000,\"ttlSeconds\":3600}"), S("h2"), &h, detail,
        sizeof(detail));
    ok(rc == BILLING_JSON_OK && h.amount_micros == 1000000000000000LL
       && h.ttl_seconds == 3600, "hold: 1e15 exact, ttl 3600");

    rc = billing_parse_hold(S("{\"userId\":\"u\",\"amountMicros\":"
        "999999999999999,\"ttlSeconds\":1}"), S("h2"), &h, detail,
        sizeof(detail));
    ok(rc == BILLING_JSON_OK && h.amount_micros == 999999999999999LL,
       "hold: 1e15-1 exact");

    rc = billing_parse_hold(S("{\"userId\":\"u\",\"amountMicros\":"
        "1000000000000001}"), S("h2"), &h, detail, sizeof(detail));
    ok(rc == BILLING_JSON_INVALID
       && strcmp(detail, "amountMicros: must be an integer between 1 and "
                 "1000000000000000") == 0,
       "hold: 1e15+1 rejected, as the database words it");

    rc = billing_parse_hold(S("{\"userId\":\"u\",\"amountMicros\":0}"),
                            S("h2"), &h, detail, sizeof(detail));
    ok(rc == BILLING_JSON_INVALID, "hold: 0 rejected");

    rc = billing_parse_hold(S("{\"userId\":\"u\",\"amountMicros\":5,"
        "\"ttlSeconds\":3601}"), S("h2"), &h, detail, sizeof(detail));
    ok(rc == BILLING_JSON_INVALID
       && strcmp(detail, "ttlSeconds: must be an integer between 1 and "
                 "3600") == 0,
       "hold: ttl 3601 rejected, as the database words it");

    rc = billing_parse_hold(S("{\"userId\":\"u\",\"amountMicros\":5,"
        "\"ttlSeconds\":0}"), S("h2"), &h, detail, sizeof(detail));
    ok(rc == BILLING_JSON_INVALID, "hold: ttl 0 rejected");

    rc = billing_parse_hold(S("{\"userId\":\"u\",\"amountMicros\":5}"),
                            NULL, 0, &h, detail, sizeof(detail));
    ok(rc == BILLING_JSON_INVALID && strstr(detail, "idempotencyKey"),
       "hold: key required");

    rc = billing_parse_purchase(S("{\"packageCode\":\"starter\"}"), &p,
                                detail, sizeof(detail));
    ok(rc == BILLING_JSON_OK && strcmp(p.package_code, "starter") == 0,
       "purchase: good");

    rc = billing_parse_purchase(S("{\"packageCode\":\"Starter\"}"), &p,
                                detail, sizeof(detail));
    ok(rc == BILLING_JSON_INVALID
       && strcmp(detail, "packageCode: must be 1 to 64 characters of "
                 "a-z 0-9 _ -") == 0,
       "purchase: upper case rejected, as the database words it");

    rc = billing_parse_purchase(S("{\"packageCode\":\"\"}"), &p, detail,
                                sizeof(detail));
    ok(rc == BILLING_JSON_INVALID, "purchase: empty rejected");

    rc = billing_parse_purchase(S("{}"), &p, detail, sizeof(detail));
    ok(rc == BILLING_JSON_INVALID && strstr(detail, "required"),
       "purchase: missing");

    rc = billing_parse_purchase(S("{\"packageCode\":\"aaaaaaaaaaaaaaaaaaaaaaaa"
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"}"), &p, detail,
        sizeof(detail));
    ok(rc == BILLING_JSON_INVALID, "purchase: 65 chars rejected");

    rc = billing_parse_purchase(S("\xef\xbb\xbf{\"packageCode\":\"pro\"}"),
                                &p, detail, sizeof(detail));
    ok(rc == BILLING_JSON_OK, "purchase: UTF-8 BOM tolerated");
}


static void
test_object_and_members(void)
{
    cJSON        *root;
    const cJSON  *it;

    ok(billing_json_parse_object(S("{\"a\": 1, \"b\": {\"a\": 2}} \n"), &root)
       == BILLING_JSON_OK && root != NULL, "object with trailing whitespace");

    ok(billing_json_member(root, "a", &it) == 0 && cJSON_IsNumber(it)
       && it->valuedouble == 1, "top-level member");
    ok(billing_json_member(root, "c", &it) == 0 && it == NULL,
       "absent member is NULL");
    ok(billing_json_member(root, "A", &it) == 0 && it == NULL,
       "names are case-sensitive");
    cJSON_Delete(root);

    ok(billing_json_parse_object(S("{\"a\": 1, \"a\": 2}"), &root)
       == BILLING_JSON_OK, "duplicate names parse");
    ok(billing_json_member(root, "a", &it) == -1,
       "but the member given twice is refused");
    cJSON_Delete(root);

    is_int(billing_json_parse_object(S("[1]"), &root), BILLING_JSON_INVALID,
           "an array is not an object");
    ok(root == NULL, "and *root stays NULL");
    is_int(billing_json_parse_object(S("{} {}"), &root),
           BILLING_JSON_INVALID, "two objects refused");
    is_int(billing_json_parse_object(S("{\"a\": \"\xff\"}"), &root),
           BILLING_JSON_BAD_UTF8, "invalid UTF-8 refused as such");
    is_int(billing_json_parse_object(S("{\"a\": \"\\u0000\"}"), &root),
           BILLING_JSON_INVALID, "\\u0000 refused");
    is_int(billing_json_parse_object(NULL, 0, &root), BILLING_JSON_INVALID,
           "NULL refused");
}


static void
test_idempotency_key(void)
{
    char  key[257];

    ok(billing_idempotency_key_valid(S("k-1")), "key k-1");
    ok(billing_idempotency_key_valid(S("!~")), "printable ASCII ends");
    ok(!billing_idempotency_key_valid(S("k 1")), "space refused");
    ok(!billing_idempotency_key_valid(S("k\x7f")), "DEL refused");
    ok(!billing_idempotency_key_valid(S("caf\xc3\xa9")), "non-ASCII refused");
    ok(!billing_idempotency_key_valid(S("")), "empty refused");
    ok(!billing_idempotency_key_valid(NULL, 3), "NULL refused");

    memset(key, 'k', sizeof(key));
    ok(billing_idempotency_key_valid(key, 255), "255 characters");
    ok(!billing_idempotency_key_valid(key, 256), "256 refused");
}


static void
test_uint_member(void)
{
    static const struct {
        const char  *body;
        int          rc;
        int64_t      value;
    } cases[] = {
        { "{\"chargedMicros\": 120, \"balanceMicros\": 5}", 0, 120 },
        { "{\"a\": {\"chargedMicros\": 7}, \"chargedMicros\": 0}", 0, 0 },
        { "{\"chargedMicros\": 9007199254740992}", 0, 9007199254740992LL },
        { "{\"chargedMicros\": 1e3}", 0, 1000 },
        { "{\"chargedMicros\": 9007199254740994}", -1, 0 },
        { "{\"chargedMicros\": -1}", -1, 0 },
        { "{\"chargedMicros\": 1.5}", -1, 0 },
        { "{\"chargedMicros\": \"120\"}", -1, 0 },
        { "{\"chargedMicros\": null}", -1, 0 },
        { "{\"chargedMicros\": 1, \"chargedMicros\": 2}", -1, 0 },
        { "{\"other\": 120}", -1, 0 },
        { "{\"xchargedMicros\": 120}", -1, 0 },
        { "[120]", -1, 0 },
        { "{\"chargedMicros\": 120", -1, 0 },
        { "", -1, 0 },
    };

    size_t   i;
    int64_t  v;
    int      rc;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        v = -7;
        rc = billing_json_uint_member(cases[i].body, strlen(cases[i].body),
                                      "chargedMicros", &v);
        is_int(rc, cases[i].rc, "uint member of %s", cases[i].body);
        is_int(v, cases[i].rc == 0 ? cases[i].value : -7,
               "  value, untouched on failure");
    }

    ok(billing_json_uint_member(NULL, 0, "n", &v) == -1, "uint member: NULL");
}


static void
test_uuid(void)
{
    char  out[BILLING_UUID_LEN + 1];

    ok(billing_uuid_valid(S("0f8fad5b-d9cb-469f-a165-70867728950e")),
       "uuid: valid");
    ok(billing_uuid_valid(S("0F8FAD5B-D9CB-469F-A165-70867728950E")),
       "uuid: upper case valid");
    ok(!billing_uuid_valid(S("0f8fad5bd9cb469fa16570867728950e")),
       "uuid: no hyphens rejected");
    ok(!billing_uuid_valid(S("{0f8fad5b-d9cb-469f-a165-70867728950e}")),
       "uuid: braces rejected");
    ok(!billing_uuid_valid(S("0f8fad5b-d9cb-469f-a165-70867728950g")),
       "uuid: non-hex rejected");
    ok(!billing_uuid_valid(S("0f8fad5b-d9cb-469f-a165-70867728950")),
       "uuid: short rejected");
    ok(!billing_uuid_valid(NULL, BILLING_UUID_LEN), "uuid: NULL");
    ok(billing_uuid_normalize(S("0F8FAD5B-D9CB-469F-A165-70867728950E"), out)
       == 0 && strcmp(out, "0f8fad5b-d9cb-469f-a165-70867728950e") == 0,
       "uuid: normalize");
}


int
main(void)
{
    test_utf8();
    test_reconcile_table();
    test_reconcile_values();
    test_hold_purchase();
    test_uuid();
    test_object_and_members();
    test_idempotency_key();
    test_uint_member();

    return tap_done();
}
