/*
 * Unit tests: PEM public keys, JWK Sets, key ids.
 */

#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/encoder.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "billing_jwk.h"
#include "tap.h"
#include "token.h"


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


static void
test_kid_and_size(EVP_PKEY *key)
{
    char       kid[BILLING_JWT_KID_MAX + 2];
    EVP_PKEY  *small, *ec;

    ok(billing_jwk_kid_valid("k1", 2), "kid k1");
    ok(billing_jwk_kid_valid("a b~", 4), "kid with space and tilde");
    ok(!billing_jwk_kid_valid("", 0), "empty kid refused");
    ok(!billing_jwk_kid_valid("k\x01", 2), "control character refused");
    ok(!billing_jwk_kid_valid("caf\xc3\xa9", 5), "non-ASCII refused");
    ok(!billing_jwk_kid_valid(NULL, 3), "NULL kid refused");

    memset(kid, 'k', sizeof(kid));
    ok(billing_jwk_kid_valid(kid, BILLING_JWT_KID_MAX), "kid of 128");
    ok(!billing_jwk_kid_valid(kid, BILLING_JWT_KID_MAX + 1),
       "kid of 129 refused");

    small = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t) 1024);
    ec = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");

    ok(billing_rsa_key_ok(key), "RSA-2048 is a usable size");
    ok(!billing_rsa_key_ok(small), "RSA-1024 is not");
    ok(!billing_rsa_key_ok(ec), "an EC key is not");
    ok(!billing_rsa_key_ok(NULL), "no key is not");

    EVP_PKEY_free(small);
    EVP_PKEY_free(ec);
}


static void
test_keys(EVP_PKEY *key, EVP_PKEY *other)
{
    test_kid_and_size(key);
    test_pem(key);
    test_jwks(key, other);
}


int
main(void)
{
    return with_keys(test_keys);
}
