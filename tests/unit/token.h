/*
 * Test helpers shared by the JWT and key tests: tokens signed with a key,
 * and the parse + verify + claims sequence the glue runs.  Include after
 * tap.h.
 */

#ifndef BILLING_TOKEN_H
#define BILLING_TOKEN_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "billing_jwt.h"
#include "billing_util.h"


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


/* runs the tests with two RSA-2048 key pairs, then reports */
static int
with_keys(void (*tests)(EVP_PKEY *key, EVP_PKEY *other))
{
    EVP_PKEY  *key, *other;

    key = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t) 2048);
    other = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t) 2048);
    ok(key != NULL && other != NULL, "RSA-2048 key pairs generated");

    tests(key, other);

    EVP_PKEY_free(key);
    EVP_PKEY_free(other);

    return tap_done();
}


#endif
