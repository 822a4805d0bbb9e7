/*
 * ScholarLink Billing: the RSA public keys tokens are verified with: a PEM
 * key from the configuration, or the keys of a JWK Set.
 */

#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/decoder.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>

#include "billing_json.h"
#include "billing_jwk.h"
#include "billing_util.h"


#define BILLING_PEM_MAX          (64 * 1024)
#define BILLING_RSA_E_MAX_BITS   64


/* strnlen() is POSIX, not C11 */
static size_t
bounded_len(const char *s, size_t max)
{
    const char  *z;

    z = memchr(s, '\0', max);

    return z ? (size_t) (z - s) : max;
}


int
billing_jwk_kid_valid(const char *s, size_t len)
{
    return s != NULL && len >= 1 && len <= BILLING_JWT_KID_MAX
           && billing_bytes_in(s, len, 0x20, 0x7e);
}


int
billing_rsa_key_ok(EVP_PKEY *key)
{
    int  bits;

    if (key == NULL || EVP_PKEY_get_base_id(key) != EVP_PKEY_RSA) {
        return 0;
    }

    bits = EVP_PKEY_get_bits(key);

    return bits >= BILLING_RSA_MIN_BITS && bits <= BILLING_RSA_MAX_BITS;
}


/* RSA, 2048..8192 bits, odd e >= 3 of at most 64 bits */
static int
check_rsa_key(EVP_PKEY *pkey, char *err, size_t errlen)
{
    BIGNUM  *e;
    int      ok;

    if (EVP_PKEY_get_base_id(pkey) != EVP_PKEY_RSA) {
        return billing_fail(-1, err, errlen, "key is not an RSA key");
    }

    if (!billing_rsa_key_ok(pkey)) {
        return billing_fail(-1, err, errlen,
                            "RSA key must have 2048 to 8192 bits");
    }

    e = NULL;

    if (EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_RSA_E, &e) != 1) {
        return billing_fail(-1, err, errlen, "RSA key has no public exponent");
    }

    ok = BN_is_odd(e) && BN_num_bits(e) >= 2
         && BN_num_bits(e) <= BILLING_RSA_E_MAX_BITS;

    BN_free(e);

    if (!ok) {
        return billing_fail(-1, err, errlen,
                            "RSA public exponent is not acceptable");
    }

    return 0;
}


EVP_PKEY *
billing_pem_public_key(const char *pem, size_t len, char *err, size_t errlen)
{
    OSSL_DECODER_CTX     *dctx;
    EVP_PKEY             *pkey;
    const unsigned char  *data;
    size_t                dlen;

    if (err && errlen) {
        err[0] = '\0';
    }

    if (pem == NULL || len == 0 || len > BILLING_PEM_MAX) {
        billing_fail(-1, err, errlen, "PEM key is empty or too large");
        return NULL;
    }

    /* a private key where a public one belongs is a configuration error */
    if (billing_contains(pem, len, "PRIVATE KEY")
        || !(billing_contains(pem, len, "-----BEGIN PUBLIC KEY-----")
             || billing_contains(pem, len, "-----BEGIN RSA PUBLIC KEY-----")))
    {
        billing_fail(-1, err, errlen, "expected a PEM \"PUBLIC KEY\" or "
                     "\"RSA PUBLIC KEY\"");
        return NULL;
    }

    pkey = NULL;

    dctx = OSSL_DECODER_CTX_new_for_pkey(&pkey, "PEM", NULL, NULL,
                                         OSSL_KEYMGMT_SELECT_PUBLIC_KEY,
                                         NULL, NULL);
    if (dctx == NULL) {
        ERR_clear_error();
        billing_fail(-1, err, errlen, "cannot create a key decoder");
        return NULL;
    }

    data = (const unsigned char *) pem;
    dlen = len;

    if (OSSL_DECODER_from_data(dctx, &data, &dlen) != 1 || pkey == NULL) {
        OSSL_DECODER_CTX_free(dctx);
        EVP_PKEY_free(pkey);
        ERR_clear_error();
        billing_fail(-1, err, errlen, "cannot decode the PEM public key");
        return NULL;
    }

    OSSL_DECODER_CTX_free(dctx);

    if (check_rsa_key(pkey, err, errlen) != 0) {
        EVP_PKEY_free(pkey);
        ERR_clear_error();
        return NULL;
    }

    ERR_clear_error();

    return pkey;
}


/*
 * Decode a base64url big-endian integer without leading zero bytes.
 * Returns the length, or 0 on error.
 */
static size_t
decode_uint(const char *s, size_t len, unsigned char *buf, size_t cap)
{
    size_t  n, skip;

    if (len == 0 || billing_b64url_decode(s, len, buf, cap, &n) != 0) {
        return 0;
    }

    for (skip = 0; skip < n && buf[skip] == 0; skip++) {
        /* void */
    }

    if (skip == n) {
        return 0;
    }

    memmove(buf, buf + skip, n - skip);

    return n - skip;
}


static int
modulus_bits(const unsigned char *n, size_t len)
{
    int            bits;
    unsigned char  top;

    bits = (int) (len - 1) * 8;

    for (top = n[0]; top; top >>= 1) {
        bits++;
    }

    return bits;
}


/* strict validation of the n and e strings of a JWK */
static int
jwk_numbers_ok(const char *n, size_t nlen, const char *e, size_t elen)
{
    unsigned char  nb[BILLING_B64URL_DEC_MAX(BILLING_JWK_N_MAX)];
    unsigned char  eb[BILLING_B64URL_DEC_MAX(BILLING_JWK_E_MAX)];
    size_t         nn, en;
    int            bits;

    if (nlen > BILLING_JWK_N_MAX || elen > BILLING_JWK_E_MAX) {
        return 0;
    }

    nn = decode_uint(n, nlen, nb, sizeof(nb));
    en = decode_uint(e, elen, eb, sizeof(eb));

    if (nn == 0 || en == 0 || en > 8) {
        return 0;
    }

    bits = modulus_bits(nb, nn);

    if (bits < BILLING_RSA_MIN_BITS || bits > BILLING_RSA_MAX_BITS
        || !(nb[nn - 1] & 1))
    {
        return 0;
    }

    /* e odd and >= 3 */
    if (!(eb[en - 1] & 1) || (en == 1 && eb[0] < 3)) {
        return 0;
    }

    return 1;
}


static int
opt_string_is(const cJSON *obj, const char *name, const char *want)
{
    const cJSON  *it;

    if (billing_json_member(obj, name, &it) != 0) {
        return 0;
    }

    if (it == NULL) {
        return 1;
    }

    return cJSON_IsString(it) && strcmp(it->valuestring, want) == 0;
}


int
billing_jwks_parse(const char *json, size_t len, billing_jwk_t **keys,
    size_t *nkeys, char *err, size_t errlen)
{
    cJSON          *root;
    const cJSON    *arr, *k, *kty, *kid, *n, *e;
    billing_jwk_t  *out, *jk;
    size_t          cnt, nlen, elen, klen;

    *keys = NULL;
    *nkeys = 0;

    if (err && errlen) {
        err[0] = '\0';
    }

    if (json == NULL || len == 0 || len > BILLING_JWKS_MAX_LEN) {
        return billing_fail(-1, err, errlen, "JWKS is empty or too large");
    }

    if (billing_json_parse_object(json, len, &root) != BILLING_JSON_OK) {
        return billing_fail(-1, err, errlen, "JWKS is not a JSON object");
    }

    if (billing_json_member(root, "keys", &arr) != 0 || !cJSON_IsArray(arr)) {
        cJSON_Delete(root);
        return billing_fail(-1, err, errlen, "JWKS has no \"keys\" array");
    }

    out = calloc(BILLING_JWKS_MAX_KEYS, sizeof(billing_jwk_t));
    if (out == NULL) {
        cJSON_Delete(root);
        return billing_fail(-1, err, errlen, "out of memory");
    }

    cnt = 0;

    cJSON_ArrayForEach(k, arr) {

        if (cnt == BILLING_JWKS_MAX_KEYS) {
            break;
        }

        if (!cJSON_IsObject(k)) {
            continue;
        }

        if (billing_json_member(k, "kty", &kty) != 0 || !cJSON_IsString(kty)
            || strcmp(kty->valuestring, "RSA") != 0
            || !opt_string_is(k, "use", "sig")
            || !opt_string_is(k, "alg", "RS256")
            || billing_json_member(k, "kid", &kid) != 0
            || billing_json_member(k, "n", &n) != 0
            || billing_json_member(k, "e", &e) != 0
            || !cJSON_IsString(n) || !cJSON_IsString(e))
        {
            continue;
        }

        if (kid && !(cJSON_IsString(kid)
                     && billing_jwk_kid_valid(kid->valuestring,
                                              strlen(kid->valuestring))))
        {
            continue;
        }

        nlen = strlen(n->valuestring);
        elen = strlen(e->valuestring);

        if (!jwk_numbers_ok(n->valuestring, nlen, e->valuestring, elen)) {
            continue;
        }

        jk = &out[cnt++];

        if (kid) {
            klen = strlen(kid->valuestring);
            memcpy(jk->kid, kid->valuestring, klen + 1);
            jk->has_kid = 1;
        }

        memcpy(jk->n, n->valuestring, nlen + 1);
        memcpy(jk->e, e->valuestring, elen + 1);
    }

    cJSON_Delete(root);

    if (cnt == 0) {
        free(out);
        return billing_fail(-1, err, errlen, "JWKS holds no usable RS256 key");
    }

    *keys = out;
    *nkeys = cnt;

    return 0;
}


void
billing_jwks_free(billing_jwk_t *keys)
{
    free(keys);
}


EVP_PKEY *
billing_jwk_to_pkey(const billing_jwk_t *k)
{
    unsigned char   nb[BILLING_B64URL_DEC_MAX(BILLING_JWK_N_MAX)];
    unsigned char   eb[BILLING_B64URL_DEC_MAX(BILLING_JWK_E_MAX)];
    size_t          nlen, elen, nn, en;
    BIGNUM         *bn_n, *bn_e;
    OSSL_PARAM_BLD *bld;
    OSSL_PARAM     *params;
    EVP_PKEY_CTX   *ctx;
    EVP_PKEY       *pkey;

    if (k == NULL) {
        return NULL;
    }

    /* the struct may come from shared memory: trust nothing */
    nlen = bounded_len(k->n, sizeof(k->n));
    elen = bounded_len(k->e, sizeof(k->e));

    if (nlen == sizeof(k->n) || elen == sizeof(k->e)
        || !jwk_numbers_ok(k->n, nlen, k->e, elen))
    {
        return NULL;
    }

    nn = decode_uint(k->n, nlen, nb, sizeof(nb));
    en = decode_uint(k->e, elen, eb, sizeof(eb));

    bn_n = BN_bin2bn(nb, (int) nn, NULL);
    bn_e = BN_bin2bn(eb, (int) en, NULL);
    bld = OSSL_PARAM_BLD_new();
    params = NULL;
    ctx = NULL;
    pkey = NULL;

    if (bn_n == NULL || bn_e == NULL || bld == NULL
        || OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn_n) != 1
        || OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, bn_e) != 1
        || (params = OSSL_PARAM_BLD_to_param(bld)) == NULL
        || (ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL)) == NULL
        || EVP_PKEY_fromdata_init(ctx) != 1
        || EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) != 1)
    {
        EVP_PKEY_free(pkey);
        pkey = NULL;
    }

    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    BN_free(bn_n);
    BN_free(bn_e);

    if (pkey && check_rsa_key(pkey, NULL, 0) != 0) {
        EVP_PKEY_free(pkey);
        pkey = NULL;
    }

    ERR_clear_error();

    return pkey;
}
