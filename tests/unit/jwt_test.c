/*
 * Unit tests: JWT parsing, RS256 verification, claims.
 */

#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/encoder.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>

#include "billing_jwt.h"
#include "tap.h"
#include "token.h"


#define S(x)  x, sizeof(x) - 1


static int
has_scope(const billing_jwt_claims_t *c, const char *scope)
{
    return billing_jwt_has_scope(c->scope, strlen(c->scope), scope);
}


static void
test_tokens(EVP_PKEY *key, EVP_PKEY *other)
{
    billing_jwt_claims_t  c;
    billing_jwt_t         jwt;
    char                 *tok, *t2, buf[8192 + 64], err[256], pl[512];
    size_t                n;
    int                   rc;

    tok = make_token(key, payload(""));
    rc = check(tok, key, &c);
    is_int(rc, BILLING_JWT_OK, "good token verifies");
    is_str(c.sub, "user_42", "sub extracted");
    ok(has_scope(&c, "billing:usage"), "has scope billing:usage");
    ok(has_scope(&c, "billing:read"), "has scope billing:read");
    ok(!has_scope(&c, "billing"), "no substring scope match");
    ok(!has_scope(&c, "billing:usage:admin"), "no prefix match");
    ok(!has_scope(&c, ""), "empty scope never matches");
    ok(billing_jwt_has_scope(S("  a   billing:usage "), "billing:usage"),
       "runs of spaces between scopes");
    ok(!billing_jwt_has_scope(S("billing:usage"), "billing:usag"),
       "a shorter scope is not a match");
    ok(!billing_jwt_has_scope("billing:usage", 7, "billing:usage"),
       "only len bytes are read");
    ok(!billing_jwt_has_scope(NULL, 0, "billing:usage"), "no scopes");
    ok(c.exp == NOW + 600, "exp extracted");

    /* kid from the header */
    rc = billing_jwt_parse(tok, strlen(tok), &jwt, err, sizeof(err));
    ok(rc == BILLING_JWT_OK && jwt.has_kid && strcmp(jwt.kid, "k1") == 0,
       "kid parsed");
    billing_jwt_free(&jwt);
    billing_jwt_free(&jwt);     /* idempotent */

    /* wrong key */
    is_int(check(tok, other, &c), BILLING_JWT_BAD_SIGNATURE, "wrong key");

    /* tampered payload: swap in another payload, keep the signature */
    t2 = make_token(key, payload("\"x\":1"));
    {
        char  *d1 = strchr(tok, '.'), *d2 = strrchr(tok, '.');
        char  *e1 = strchr(t2, '.'), *e2 = strrchr(t2, '.');
        snprintf(buf, sizeof(buf), "%.*s%.*s%s", (int) (d1 - tok), tok,
                 (int) (e2 - e1), e1, d2);
    }
    is_int(check(buf, key, &c), BILLING_JWT_BAD_SIGNATURE,
           "tampered payload");
    free(t2);

    /* flipped signature bit */
    strcpy(buf, tok);
    n = strlen(buf);
    buf[n - 5] = buf[n - 5] == 'A' ? 'B' : 'A';
    is_int(check(buf, key, &c), BILLING_JWT_BAD_SIGNATURE,
           "altered signature");

    /* truncated signature (length != modulus) */
    strcpy(buf, tok);
    buf[strlen(buf) - 4] = '\0';
    ok(check(buf, key, &c) != BILLING_JWT_OK, "short signature");

    /* 3 dots, 1 dot, empty parts */
    snprintf(buf, sizeof(buf), "%s.AAAA", tok);
    is_int(check(buf, key, &c), BILLING_JWT_MALFORMED, "three dots");
    is_int(check("abc.def", key, &c), BILLING_JWT_MALFORMED, "one dot");
    is_int(check("..", key, &c), BILLING_JWT_MALFORMED, "empty parts");
    is_int(check("", key, &c), BILLING_JWT_MALFORMED, "empty token");
    {
        char  *d2 = strrchr(tok, '.');
        snprintf(buf, sizeof(buf), "%.*s.", (int) (d2 - tok), tok);
        is_int(check(buf, key, &c), BILLING_JWT_MALFORMED,
               "empty signature");
    }

    /* bad base64 */
    strcpy(buf, tok);
    buf[3] = '*';
    is_int(check(buf, key, &c), BILLING_JWT_MALFORMED, "bad base64 char");
    strcpy(buf, tok);
    {
        char *d1 = strchr(buf, '.');
        memmove(d1 + 1, d1, strlen(d1) + 1);
        *d1 = '=';
    }
    is_int(check(buf, key, &c), BILLING_JWT_MALFORMED, "padding refused");

    /* huge header / token */
    memset(buf, 'A', 8200);
    memcpy(buf + 8200, ".AA.AA", 7);
    is_int(check(buf, key, &c), BILLING_JWT_MALFORMED, "huge token refused");

    /* not NUL terminated: only len bytes are read */
    rc = billing_jwt_parse(tok, strlen(tok) - 1, &jwt, err, sizeof(err));
    if (rc == BILLING_JWT_OK) {
        rc = billing_jwt_verify_signature(&jwt, key);
        billing_jwt_free(&jwt);
    }
    ok(rc != BILLING_JWT_OK, "len honoured");

    free(tok);

    /* alg none (with and without a signature), HS256, RS512, missing */
    tok = make_token_raw(key, "{\"alg\":\"none\",\"typ\":\"JWT\"}",
                         payload(""), 0);
    is_int(check(tok, key, &c), BILLING_JWT_BAD_ALG, "alg none");
    *strrchr(tok, '.') = '\0';
    strcat(tok, ".");
    ok(check(tok, key, &c) != BILLING_JWT_OK, "alg none, empty signature");
    free(tok);

    tok = make_token_raw(key, "{\"alg\":\"HS256\",\"typ\":\"JWT\"}",
                         payload(""), 1);
    is_int(check(tok, key, &c), BILLING_JWT_BAD_ALG, "alg HS256");
    free(tok);

    tok = make_token_raw(key, "{\"alg\":\"RS512\"}", payload(""), 0);
    is_int(check(tok, key, &c), BILLING_JWT_BAD_ALG, "alg RS512");
    free(tok);

    tok = make_token_raw(key, "{\"alg\":\"rs256\"}", payload(""), 0);
    is_int(check(tok, key, &c), BILLING_JWT_BAD_ALG, "alg rs256 (case)");
    free(tok);

    tok = make_token_raw(key, "{\"typ\":\"JWT\"}", payload(""), 0);
    is_int(check(tok, key, &c), BILLING_JWT_BAD_ALG, "alg missing");
    free(tok);

    tok = make_token_raw(key, "{\"alg\":\"RS256\",\"alg\":\"none\"}",
                         payload(""), 0);
    is_int(check(tok, key, &c), BILLING_JWT_BAD_ALG, "duplicate alg");
    free(tok);

    tok = make_token_raw(key, "{\"alg\":\"RS256\"}", payload(""), 0);
    is_int(check(tok, key, &c), BILLING_JWT_OK, "minimal header ok");
    free(tok);

    tok = make_token_raw(key, "{\"alg\":\"RS256\",\"typ\":\"jwt\"}",
                         payload(""), 0);
    is_int(check(tok, key, &c), BILLING_JWT_OK, "typ case-insensitive");
    free(tok);

    tok = make_token_raw(key, "{\"alg\":\"RS256\",\"typ\":\"at+jwt\"}",
                         payload(""), 0);
    is_int(check(tok, key, &c), BILLING_JWT_OK, "typ at+jwt (RFC 9068)");
    free(tok);

    tok = make_token_raw(key, "{\"alg\":\"RS256\",\"typ\":\"JWE\"}",
                         payload(""), 0);
    is_int(check(tok, key, &c), BILLING_JWT_MALFORMED, "typ JWE refused");
    free(tok);

    tok = make_token_raw(key, "{\"alg\":\"RS256\",\"crit\":[\"exp\"]}",
                         payload(""), 0);
    is_int(check(tok, key, &c), BILLING_JWT_MALFORMED, "crit refused");
    free(tok);

    memset(pl, 'k', 129);
    pl[129] = '\0';
    snprintf(buf, sizeof(buf), "{\"alg\":\"RS256\",\"kid\":\"%s\"}", pl);
    tok = make_token_raw(key, buf, payload(""), 0);
    is_int(check(tok, key, &c), BILLING_JWT_MALFORMED, "kid > 128 refused");
    free(tok);

    tok = make_token_raw(key, "{\"alg\":\"RS256\"} x", payload(""), 0);
    is_int(check(tok, key, &c), BILLING_JWT_MALFORMED,
           "header trailing garbage");
    free(tok);

    tok = make_token_raw(key, "[\"alg\",\"RS256\"]", payload(""), 0);
    is_int(check(tok, key, &c), BILLING_JWT_MALFORMED, "header array");
    free(tok);

    tok = make_token_raw(key, HDR, "not json", 0);
    is_int(check(tok, key, &c), BILLING_JWT_MALFORMED, "payload not JSON");
    free(tok);

    /* expiry and leeway */
    snprintf(pl, sizeof(pl), "{\"iss\":\"" ISS "\",\"aud\":\"" AUD "\","
             "\"sub\":\"u\",\"exp\":%lld}", NOW - LEEWAY - 1);
    tok = make_token(key, pl);
    is_int(check(tok, key, &c), BILLING_JWT_EXPIRED,
           "expired beyond leeway");
    free(tok);

    snprintf(pl, sizeof(pl), "{\"iss\":\"" ISS "\",\"aud\":\"" AUD "\","
             "\"sub\":\"u\",\"exp\":%lld}", NOW - LEEWAY);
    tok = make_token(key, pl);
    is_int(check(tok, key, &c), BILLING_JWT_EXPIRED,
           "exp + leeway == now is expired");
    free(tok);

    snprintf(pl, sizeof(pl), "{\"iss\":\"" ISS "\",\"aud\":\"" AUD "\","
             "\"sub\":\"u\",\"exp\":%lld}", NOW - 30);
    tok = make_token(key, pl);
    is_int(check(tok, key, &c), BILLING_JWT_OK, "expired within leeway");
    free(tok);

    snprintf(pl, sizeof(pl), "{\"iss\":\"" ISS "\",\"aud\":\"" AUD "\","
             "\"sub\":\"u\",\"exp\":%lld.5}", NOW + 100);
    tok = make_token(key, pl);
    is_int(check(tok, key, &c), BILLING_JWT_OK, "fractional exp");
    ok(c.valid_until == NOW + 100 + LEEWAY, "valid until exp + leeway");
    free(tok);

    /* an exp at the end of int64_t: exp + leeway saturates (UBSan here) */
    snprintf(pl, sizeof(pl), "{\"iss\":\"" ISS "\",\"aud\":\"" AUD "\","
             "\"sub\":\"u\",\"exp\":9223372036854775807}");
    tok = make_token(key, pl);
    is_int(check(tok, key, &c), BILLING_JWT_OK, "exp of INT64_MAX");
    ok(c.exp == INT64_MAX && c.valid_until == INT64_MAX,
       "exp + leeway saturates at INT64_MAX");
    free(tok);

    snprintf(pl, sizeof(pl), "{\"iss\":\"" ISS "\",\"aud\":\"" AUD "\","
             "\"sub\":\"u\",\"exp\":1e300}");
    tok = make_token(key, pl);
    is_int(check(tok, key, &c), BILLING_JWT_OK, "exp of 1e300");
    ok(c.valid_until == INT64_MAX, "valid until INT64_MAX, no overflow");
    free(tok);

    {
        billing_jwt_t  j;

        /* the largest leeway (clamped to a day) on the largest exp */
        tok = make_token(key, payload(""));
        rc = billing_jwt_parse(tok, strlen(tok), &j, err, sizeof(err));
        ok(rc == BILLING_JWT_OK
           && billing_jwt_check_claims(&j, ISS, AUD, NOW, INT64_MAX, &c, err,
                                       sizeof(err)) == BILLING_JWT_OK
           && c.valid_until == NOW + 600 + 86400,
           "leeway clamped to a day in valid_until");
        billing_jwt_free(&j);
        free(tok);
    }

    snprintf(pl, sizeof(pl), "{\"iss\":\"" ISS "\",\"aud\":\"" AUD "\","
             "\"sub\":\"u\"}");
    tok = make_token(key, pl);
    is_int(check(tok, key, &c), BILLING_JWT_BAD_CLAIMS, "missing exp");
    free(tok);

    snprintf(pl, sizeof(pl), "{\"iss\":\"" ISS "\",\"aud\":\"" AUD "\","
             "\"sub\":\"u\",\"exp\":\"%lld\"}", NOW + 100);
    tok = make_token(key, pl);
    is_int(check(tok, key, &c), BILLING_JWT_BAD_CLAIMS, "string exp");
    free(tok);

    snprintf(pl, sizeof(pl), "{\"iss\":\"" ISS "\",\"aud\":\"" AUD "\","
             "\"sub\":\"u\",\"exp\":1e400}");
    tok = make_token(key, pl);
    is_int(check(tok, key, &c), BILLING_JWT_BAD_CLAIMS, "infinite exp");
    free(tok);

    tok = make_token(key, payload("\"nbf\":1800000000"));
    is_int(check(tok, key, &c), BILLING_JWT_NOT_YET_VALID, "nbf in future");
    free(tok);

    snprintf(pl, sizeof(pl), "\"nbf\":%lld", NOW + 30);
    tok = make_token(key, payload(pl));
    is_int(check(tok, key, &c), BILLING_JWT_OK, "nbf within leeway");
    free(tok);

    snprintf(pl, sizeof(pl), "{\"iss\":\"" ISS "\",\"aud\":\"" AUD "\","
             "\"sub\":\"u\",\"exp\":%lld,\"iat\":%lld}", NOW + 1000,
             NOW + 120);
    tok = make_token(key, pl);
    is_int(check(tok, key, &c), BILLING_JWT_NOT_YET_VALID, "iat in future");
    free(tok);

    tok = make_token(key, payload("\"nbf\":\"soon\""));
    is_int(check(tok, key, &c), BILLING_JWT_BAD_CLAIMS, "string nbf");
    free(tok);

    /* issuer / audience */
    snprintf(pl, sizeof(pl), "{\"iss\":\"https://evil/\",\"aud\":\"" AUD
             "\",\"sub\":\"u\",\"exp\":%lld}", NOW + 100);
    tok = make_token(key, pl);
    is_int(check(tok, key, &c), BILLING_JWT_BAD_ISSUER, "wrong iss");
    free(tok);

    snprintf(pl, sizeof(pl), "{\"aud\":\"" AUD "\",\"sub\":\"u\","
             "\"exp\":%lld}", NOW + 100);
    tok = make_token(key, pl);
    is_int(check(tok, key, &c), BILLING_JWT_BAD_ISSUER, "missing iss");
    free(tok);

    snprintf(pl, sizeof(pl), "{\"iss\":\"" ISS "\",\"aud\":[\"other\",\""
             AUD "\"],\"sub\":\"u\",\"exp\":%lld}", NOW + 100);
    tok = make_token(key, pl);
    is_int(check(tok, key, &c), BILLING_JWT_OK, "aud array containing ours");
    free(tok);

    snprintf(pl, sizeof(pl), "{\"iss\":\"" ISS "\",\"aud\":[\"other\"],"
             "\"sub\":\"u\",\"exp\":%lld}", NOW + 100);
    tok = make_token(key, pl);
    is_int(check(tok, key, &c), BILLING_JWT_BAD_AUDIENCE,
           "aud array without ours");
    free(tok);

    snprintf(pl, sizeof(pl), "{\"iss\":\"" ISS "\",\"aud\":\"billing-api2\","
             "\"sub\":\"u\",\"exp\":%lld}", NOW + 100);
    tok = make_token(key, pl);
    is_int(check(tok, key, &c), BILLING_JWT_BAD_AUDIENCE, "wrong aud");
    free(tok);

    snprintf(pl, sizeof(pl), "{\"iss\":\"" ISS "\",\"aud\":[1],"
             "\"sub\":\"u\",\"exp\":%lld}", NOW + 100);
    tok = make_token(key, pl);
    is_int(check(tok, key, &c), BILLING_JWT_BAD_CLAIMS, "aud array of int");
    free(tok);

    /* sub */
    snprintf(pl, sizeof(pl), "{\"iss\":\"" ISS "\",\"aud\":\"" AUD "\","
             "\"exp\":%lld}", NOW + 100);
    tok = make_token(key, pl);
    is_int(check(tok, key, &c), BILLING_JWT_BAD_CLAIMS, "missing sub");
    free(tok);

    snprintf(pl, sizeof(pl), "{\"iss\":\"" ISS "\",\"aud\":\"" AUD "\","
             "\"sub\":\"\",\"exp\":%lld}", NOW + 100);
    tok = make_token(key, pl);
    is_int(check(tok, key, &c), BILLING_JWT_BAD_CLAIMS, "empty sub");
    free(tok);

    snprintf(pl, sizeof(pl), "{\"iss\":\"" ISS "\",\"aud\":\"" AUD "\","
             "\"sub\":\"a\\nb\",\"exp\":%lld}", NOW + 100);
    tok = make_token(key, pl);
    is_int(check(tok, key, &c), BILLING_JWT_BAD_CLAIMS, "sub with LF");
    free(tok);

    snprintf(pl, sizeof(pl), "{\"iss\":\"" ISS "\",\"aud\":\"" AUD "\","
             "\"sub\":\"a\\u0000b\",\"exp\":%lld}", NOW + 100);
    tok = make_token(key, pl);
    is_int(check(tok, key, &c), BILLING_JWT_MALFORMED, "sub with \\u0000");
    free(tok);

    snprintf(pl, sizeof(pl), "{\"iss\":\"" ISS "\",\"aud\":\"" AUD "\","
             "\"sub\":\"u\",\"sub\":\"admin\",\"exp\":%lld}", NOW + 100);
    tok = make_token(key, pl);
    is_int(check(tok, key, &c), BILLING_JWT_MALFORMED, "duplicate sub");
    free(tok);

    tok = make_token(key, payload("\"scope\":5"));
    ok(check(tok, key, &c) != BILLING_JWT_OK, "duplicate/odd scope refused");
    free(tok);

    ok(strcmp(billing_jwt_strerror(BILLING_JWT_EXPIRED), "token expired") == 0
       && billing_jwt_strerror(999) != NULL, "strerror");
}


int
main(void)
{
    return with_keys(test_tokens);
}
