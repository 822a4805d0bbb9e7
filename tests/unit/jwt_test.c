/*
 * Unit tests: JWT parsing, RS256 verification, claims, PEM keys, JWKS.
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
#include "billing_util.h"
#include "tap.h"


#define NOW       1700000000LL
#define LEEWAY    60
#define ISS       "https://auth.scholarlink.test/"
#define AUD       "billing-api"

#define HDR       "{\"alg\":\"RS256\",\"typ\":\"JWT\",\"kid\":\"k1\"}"


static char *
b64(const void *p, size_t len)
{
    size_t  cap = BILLING_B64URL_ENC_LEN(len) + 1;
    char   *s = malloc(cap);

    if (billing_b64url_encode(p, len, s, cap, NULL) != 0) {
        abort();
    }
    return s;
}


/* header.payload with an RS256 signature by key (or by HMAC if hs) */
static char *
make_token_raw(EVP_PKEY *key, const char *hdr, const char *payload, int hs)
{
    char           *h, *p, *si, *sig64, *tok;
    unsigned char   sig[1024];
    size_t          siglen = sizeof(sig);
    unsigned int    hlen;
    EVP_MD_CTX     *md;

    h = b64(hdr, strlen(hdr));
    p = b64(payload, strlen(payload));
    si = malloc(strlen(h) + strlen(p) + 2);
    sprintf(si, "%s.%s", h, p);

    if (hs) {
        HMAC(EVP_sha256(), "secret", 6, (unsigned char *) si, strlen(si), sig,
             &hlen);
        siglen = hlen;

    } else {
        md = EVP_MD_CTX_new();
        if (EVP_DigestSignInit_ex(md, NULL, "SHA256", NULL, NULL, key, NULL)
            != 1
            || EVP_DigestSign(md, sig, &siglen, (unsigned char *) si,
                              strlen(si)) != 1)
        {
            abort();
        }
        EVP_MD_CTX_free(md);
    }

    sig64 = b64(sig, siglen);
    tok = malloc(strlen(si) + strlen(sig64) + 2);
    sprintf(tok, "%s.%s", si, sig64);

    free(h);
    free(p);
    free(si);
    free(sig64);

    return tok;
}


static char *
make_token(EVP_PKEY *key, const char *payload)
{
    return make_token_raw(key, HDR, payload, 0);
}


/* parse + verify + claims, like the glue does */
static int
check(const char *tok, EVP_PKEY *key, billing_jwt_claims_t *c)
{
    billing_jwt_t  jwt;
    char           err[256];
    int            rc;

    rc = billing_jwt_parse(tok, strlen(tok), &jwt, err, sizeof(err));
    if (rc != BILLING_JWT_OK) {
        return rc;
    }

    rc = billing_jwt_verify_signature(&jwt, key);
    if (rc == BILLING_JWT_OK) {
        rc = billing_jwt_check_claims(&jwt, ISS, AUD, NOW, LEEWAY, c, err,
                                      sizeof(err));
    }

    billing_jwt_free(&jwt);

    return rc;
}


static char *
payload(const char *extra)
{
    static char  buf[4096];

    snprintf(buf, sizeof(buf), "{\"iss\":\"" ISS "\",\"aud\":\"" AUD "\","
             "\"sub\":\"user_42\",\"exp\":%lld,\"iat\":%lld,"
             "\"scope\":\"billing:read billing:usage\"%s%s}",
             NOW + 600, NOW - 10, extra[0] ? "," : "", extra);
    return buf;
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
    ok(billing_jwt_has_scope(&c, "billing:usage"), "has scope billing:usage");
    ok(billing_jwt_has_scope(&c, "billing:read"), "has scope billing:read");
    ok(!billing_jwt_has_scope(&c, "billing"), "no substring scope match");
    ok(!billing_jwt_has_scope(&c, "billing:usage:admin"), "no prefix match");
    ok(!billing_jwt_has_scope(&c, ""), "empty scope never matches");
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
    free(tok);

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


static char *
pem_of(EVP_PKEY *key, const char *structure)
{
    OSSL_ENCODER_CTX  *ectx;
    unsigned char     *data = NULL;
    size_t             len = 0;
    char              *s;

    ectx = OSSL_ENCODER_CTX_new_for_pkey(key, EVP_PKEY_PUBLIC_KEY, "PEM",
                                         structure, NULL);
    if (ectx == NULL || OSSL_ENCODER_to_data(ectx, &data, &len) != 1) {
        abort();
    }
    OSSL_ENCODER_CTX_free(ectx);

    s = malloc(len + 1);
    memcpy(s, data, len);
    s[len] = '\0';
    OPENSSL_free(data);

    return s;
}


static void
test_pem(EVP_PKEY *key)
{
    EVP_PKEY  *pk, *small, *ec;
    char      *pem, err[256];
    char      *tok;

    pem = pem_of(key, "SubjectPublicKeyInfo");
    ok(strstr(pem, "BEGIN PUBLIC KEY") != NULL, "SPKI PEM exported");
    pk = billing_pem_public_key(pem, strlen(pem), err, sizeof(err));
    ok(pk != NULL, "SPKI PEM loads: %s", err);
    tok = make_token(key, payload(""));
    is_int(check(tok, pk, NULL), BILLING_JWT_OK, "verify with PEM key");
    EVP_PKEY_free(pk);
    free(pem);

    pem = pem_of(key, "type-specific");
    ok(strstr(pem, "BEGIN RSA PUBLIC KEY") != NULL, "PKCS#1 PEM exported");
    pk = billing_pem_public_key(pem, strlen(pem), err, sizeof(err));
    ok(pk != NULL, "RSA PUBLIC KEY PEM loads: %s", err);
    is_int(check(tok, pk, NULL), BILLING_JWT_OK, "verify with PKCS#1 key");
    EVP_PKEY_free(pk);
    free(pem);
    free(tok);

    small = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t) 1024);
    pem = pem_of(small, "SubjectPublicKeyInfo");
    pk = billing_pem_public_key(pem, strlen(pem), err, sizeof(err));
    ok(pk == NULL && strstr(err, "2048"), "1024-bit key refused: %s", err);
    tok = make_token(small, payload(""));
    is_int(check(tok, small, NULL), BILLING_JWT_BAD_SIGNATURE,
           "1024-bit key never verifies");
    free(tok);
    free(pem);
    EVP_PKEY_free(small);

    ec = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    pem = pem_of(ec, "SubjectPublicKeyInfo");
    pk = billing_pem_public_key(pem, strlen(pem), err, sizeof(err));
    ok(pk == NULL && strstr(err, "RSA"), "EC key refused: %s", err);
    free(pem);
    EVP_PKEY_free(ec);

    pk = billing_pem_public_key("garbage", 7, err, sizeof(err));
    ok(pk == NULL, "garbage PEM refused");

    {
        BIO   *b = BIO_new(BIO_s_mem());
        char  *data;
        long   n;

        PEM_write_bio_PrivateKey(b, key, NULL, NULL, 0, NULL, NULL);
        n = BIO_get_mem_data(b, &data);
        pk = billing_pem_public_key(data, (size_t) n, err, sizeof(err));
        ok(pk == NULL, "private key PEM refused");
        BIO_free(b);
    }

    ok(ERR_peek_error() == 0, "OpenSSL error queue left empty");
}


static char *
bn_b64(EVP_PKEY *key, const char *name)
{
    BIGNUM         *bn = NULL;
    unsigned char   buf[1024];
    int             n;

    if (EVP_PKEY_get_bn_param(key, name, &bn) != 1) {
        abort();
    }
    n = BN_bn2bin(bn, buf);
    BN_free(bn);

    return b64(buf, (size_t) n);
}


static void
test_jwks(EVP_PKEY *key, EVP_PKEY *other)
{
    billing_jwk_t  *keys;
    size_t          nkeys;
    char           *n, *e, *n2, *e2, *json, err[256], *tok;
    EVP_PKEY       *pk;
    int             rc;

    n = bn_b64(key, OSSL_PKEY_PARAM_RSA_N);
    e = bn_b64(key, OSSL_PKEY_PARAM_RSA_E);
    n2 = bn_b64(other, OSSL_PKEY_PARAM_RSA_N);
    e2 = bn_b64(other, OSSL_PKEY_PARAM_RSA_E);
    json = malloc(16384);

    snprintf(json, 16384,
             "{\"keys\":["
             "{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"a\",\"y\":\"b\"},"
             "{\"kty\":\"RSA\",\"use\":\"enc\",\"kid\":\"enc\",\"n\":\"%s\","
             "\"e\":\"%s\"},"
             "{\"kty\":\"RSA\",\"alg\":\"RS512\",\"kid\":\"rs512\","
             "\"n\":\"%s\",\"e\":\"%s\"},"
             "{\"kty\":\"RSA\",\"kid\":\"short\",\"n\":\"AQAB\",\"e\":\"AQAB\"},"
             "{\"kty\":\"RSA\",\"kid\":\"e1\",\"n\":\"%s\",\"e\":\"AQ\"},"
             "{\"kty\":\"RSA\",\"kid\":\"pad\",\"n\":\"%s=\",\"e\":\"AQAB\"},"
             "{\"kty\":\"RSA\",\"use\":\"sig\",\"alg\":\"RS256\",\"kid\":\"k1\","
             "\"n\":\"%s\",\"e\":\"%s\"},"
             "{\"kty\":\"RSA\",\"kid\":\"k2\",\"n\":\"%s\",\"e\":\"%s\"}"
             "]}", n, e, n, e, n, n, n, e, n2, e2);

    rc = billing_jwks_parse(json, strlen(json), &keys, &nkeys, err,
                            sizeof(err));
    ok(rc == 0 && nkeys == 2, "JWKS keeps only usable RS256 keys (%zu)",
       nkeys);
    ok(rc == 0 && strcmp(keys[0].kid, "k1") == 0 && keys[0].has_kid
       && strcmp(keys[1].kid, "k2") == 0, "JWKS kids");

    pk = billing_jwk_to_pkey(&keys[0]);
    ok(pk != NULL, "JWK -> EVP_PKEY");
    tok = make_token(key, payload(""));
    is_int(check(tok, pk, NULL), BILLING_JWT_OK,
           "token verifies with the JWK-built key");
    EVP_PKEY_free(pk);

    pk = billing_jwk_to_pkey(&keys[1]);
    is_int(check(tok, pk, NULL), BILLING_JWT_BAD_SIGNATURE,
           "other JWK does not verify");
    EVP_PKEY_free(pk);

    /* a corrupted struct (as if from shared memory) is refused */
    keys[0].e[0] = '!';
    ok(billing_jwk_to_pkey(&keys[0]) == NULL, "corrupted JWK refused");
    memset(keys[0].n, 'A', sizeof(keys[0].n));
    ok(billing_jwk_to_pkey(&keys[0]) == NULL, "unterminated JWK refused");

    billing_jwks_free(keys);
    free(tok);

    rc = billing_jwks_parse("{\"keys\":[]}", 11, &keys, &nkeys, err,
                            sizeof(err));
    ok(rc == -1 && keys == NULL, "empty JWKS is an error: %s", err);
    rc = billing_jwks_parse("{\"keys\":{}}", 11, &keys, &nkeys, err,
                            sizeof(err));
    ok(rc == -1, "keys not an array");
    rc = billing_jwks_parse("[]", 2, &keys, &nkeys, err, sizeof(err));
    ok(rc == -1, "JWKS not an object");
    rc = billing_jwks_parse("{\"keys\":[", 9, &keys, &nkeys, err,
                            sizeof(err));
    ok(rc == -1, "truncated JWKS");

    free(n);
    free(e);
    free(n2);
    free(e2);
    free(json);
}


int
main(void)
{
    EVP_PKEY  *key, *other;

    key = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t) 2048);
    other = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t) 2048);
    ok(key != NULL && other != NULL, "RSA-2048 key pairs generated");

    test_tokens(key, other);
    test_pem(key);
    test_jwks(key, other);

    EVP_PKEY_free(key);
    EVP_PKEY_free(other);

    return tap_done();
}
