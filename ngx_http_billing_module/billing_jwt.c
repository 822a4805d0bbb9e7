/*
 * ScholarLink Billing: RS256 JWT verification, PEM keys and JWK Sets.
 */

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/decoder.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/rsa.h>

#include "billing_json.h"
#include "billing_jwt.h"
#include "billing_util.h"


#define BILLING_PEM_MAX          (64 * 1024)
#define BILLING_JWT_LEEWAY_MAX   86400
#define BILLING_RSA_E_MAX_BITS   64


/* strnlen() is POSIX, not C11 */
static size_t
bounded_len(const char *s, size_t max)
{
    const char  *z;

    z = memchr(s, '\0', max);

    return z ? (size_t) (z - s) : max;
}


static int
jwt_fail(int rc, char *err, size_t errlen, const char *fmt, ...)
{
    va_list  ap;

    if (err && errlen) {
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }

    return rc;
}


const char *
billing_jwt_strerror(int rc)
{
    switch (rc) {
    case BILLING_JWT_OK:
        return "ok";
    case BILLING_JWT_MALFORMED:
        return "malformed token";
    case BILLING_JWT_BAD_ALG:
        return "unsupported algorithm";
    case BILLING_JWT_BAD_SIGNATURE:
        return "bad signature";
    case BILLING_JWT_EXPIRED:
        return "token expired";
    case BILLING_JWT_NOT_YET_VALID:
        return "token not yet valid";
    case BILLING_JWT_BAD_ISSUER:
        return "bad issuer";
    case BILLING_JWT_BAD_AUDIENCE:
        return "bad audience";
    case BILLING_JWT_BAD_CLAIMS:
        return "bad claims";
    default:
        return "unknown error";
    }
}


/* member by name; -1 if it occurs more than once */
static int
member(const cJSON *obj, const char *name, const cJSON **item)
{
    const cJSON  *c;

    *item = NULL;

    for (c = obj->child; c; c = c->next) {
        if (c->string && strcmp(c->string, name) == 0) {
            if (*item) {
                return -1;
            }
            *item = c;
        }
    }

    return 0;
}


/* decode one base64url part and parse it as a JSON object */
static int
decode_json_part(const char *p, size_t len, cJSON **out)
{
    unsigned char  *buf;
    size_t          n;
    int             rc;

    *out = NULL;

    buf = malloc(BILLING_B64URL_DEC_MAX(len) + 1);
    if (buf == NULL) {
        return -1;
    }

    if (billing_b64url_decode(p, len, buf, BILLING_B64URL_DEC_MAX(len) + 1,
                              &n) != 0)
    {
        free(buf);
        return -1;
    }

    rc = billing_json_parse_object((const char *) buf, n, out);

    free(buf);

    return rc == BILLING_JSON_OK ? 0 : -1;
}


static int
ascii_ieq(const char *a, const char *b)
{
    size_t  i;

    for (i = 0; a[i] && b[i]; i++) {
        unsigned char x = (unsigned char) a[i], y = (unsigned char) b[i];

        if (x >= 'A' && x <= 'Z') {
            x = (unsigned char) (x - 'A' + 'a');
        }
        if (y >= 'A' && y <= 'Z') {
            y = (unsigned char) (y - 'A' + 'a');
        }
        if (x != y) {
            return 0;
        }
    }

    return a[i] == b[i];
}


static int
kid_valid(const char *s, size_t len)
{
    size_t  i;

    if (len < 1 || len > BILLING_JWT_KID_MAX) {
        return 0;
    }

    for (i = 0; i < len; i++) {
        if ((unsigned char) s[i] < 0x20 || (unsigned char) s[i] > 0x7e) {
            return 0;
        }
    }

    return 1;
}


int
billing_jwt_parse(const char *token, size_t len, billing_jwt_t *jwt,
    char *err, size_t errlen)
{
    const char    *d1, *d2;
    const cJSON   *it;
    size_t         hlen, plen, slen, n;
    int            rc;

    memset(jwt, 0, sizeof(*jwt));

    if (err && errlen) {
        err[0] = '\0';
    }

    if (token == NULL || len == 0 || len > BILLING_JWT_MAX_LEN) {
        return jwt_fail(BILLING_JWT_MALFORMED, err, errlen,
                        "token is empty or longer than %d bytes",
                        BILLING_JWT_MAX_LEN);
    }

    d1 = memchr(token, '.', len);
    d2 = d1 ? memchr(d1 + 1, '.', (size_t) (token + len - (d1 + 1))) : NULL;

    if (d2 == NULL
        || memchr(d2 + 1, '.', (size_t) (token + len - (d2 + 1))) != NULL)
    {
        return jwt_fail(BILLING_JWT_MALFORMED, err, errlen,
                        "token must have exactly three parts");
    }

    hlen = (size_t) (d1 - token);
    plen = (size_t) (d2 - (d1 + 1));
    slen = (size_t) (token + len - (d2 + 1));

    if (hlen == 0 || plen == 0 || slen == 0) {
        return jwt_fail(BILLING_JWT_MALFORMED, err, errlen,
                        "token has an empty part");
    }

    if (decode_json_part(token, hlen, &jwt->header) != 0) {
        rc = jwt_fail(BILLING_JWT_MALFORMED, err, errlen,
                      "token header is not base64url JSON object");
        goto failed;
    }

    /* the algorithm is pinned: anything but RS256 (none, HS256...) */
    if (member(jwt->header, "alg", &it) != 0 || it == NULL
        || !cJSON_IsString(it) || strcmp(it->valuestring, "RS256") != 0)
    {
        rc = jwt_fail(BILLING_JWT_BAD_ALG, err, errlen,
                      "token algorithm must be RS256");
        goto failed;
    }

    if (member(jwt->header, "typ", &it) != 0
        || (it && (!cJSON_IsString(it)
                   || !(ascii_ieq(it->valuestring, "JWT")
                        || ascii_ieq(it->valuestring, "application/jwt")
                        || ascii_ieq(it->valuestring, "at+jwt")
                        || ascii_ieq(it->valuestring, "application/at+jwt")))))
    {
        rc = jwt_fail(BILLING_JWT_MALFORMED, err, errlen,
                      "token type must be JWT");
        goto failed;
    }

    if (member(jwt->header, "crit", &it) != 0 || it != NULL) {
        rc = jwt_fail(BILLING_JWT_MALFORMED, err, errlen,
                      "critical header extensions are not supported");
        goto failed;
    }

    if (member(jwt->header, "kid", &it) != 0) {
        rc = jwt_fail(BILLING_JWT_MALFORMED, err, errlen,
                      "duplicate kid header");
        goto failed;
    }

    if (it) {
        if (!cJSON_IsString(it)
            || !kid_valid(it->valuestring, strlen(it->valuestring)))
        {
            rc = jwt_fail(BILLING_JWT_MALFORMED, err, errlen,
                          "kid must be 1 to %d printable characters",
                          BILLING_JWT_KID_MAX);
            goto failed;
        }

        n = strlen(it->valuestring);
        memcpy(jwt->kid, it->valuestring, n);
        jwt->kid[n] = '\0';
        jwt->has_kid = 1;
    }

    if (decode_json_part(d1 + 1, plen, &jwt->payload) != 0) {
        rc = jwt_fail(BILLING_JWT_MALFORMED, err, errlen,
                      "token payload is not base64url JSON object");
        goto failed;
    }

    /* an 8192-bit signature is 1024 bytes; more is never valid */
    if (slen > BILLING_B64URL_ENC_LEN(BILLING_RSA_MAX_BITS / 8)) {
        rc = jwt_fail(BILLING_JWT_MALFORMED, err, errlen,
                      "token signature is too long");
        goto failed;
    }

    jwt->sig = malloc(BILLING_B64URL_DEC_MAX(slen));
    jwt->signing_input = malloc(hlen + 1 + plen + 1);

    if (jwt->sig == NULL || jwt->signing_input == NULL) {
        rc = jwt_fail(BILLING_JWT_MALFORMED, err, errlen, "out of memory");
        goto failed;
    }

    if (billing_b64url_decode(d2 + 1, slen, jwt->sig,
                              BILLING_B64URL_DEC_MAX(slen), &jwt->sig_len)
        != 0 || jwt->sig_len == 0)
    {
        rc = jwt_fail(BILLING_JWT_MALFORMED, err, errlen,
                      "token signature is not base64url");
        goto failed;
    }

    jwt->signing_input_len = hlen + 1 + plen;
    memcpy(jwt->signing_input, token, jwt->signing_input_len);
    jwt->signing_input[jwt->signing_input_len] = '\0';

    return BILLING_JWT_OK;

failed:

    billing_jwt_free(jwt);

    return rc;
}


void
billing_jwt_free(billing_jwt_t *jwt)
{
    if (jwt == NULL) {
        return;
    }

    cJSON_Delete(jwt->header);
    cJSON_Delete(jwt->payload);
    free(jwt->sig);
    free(jwt->signing_input);

    memset(jwt, 0, sizeof(*jwt));
}


static int
rsa_bits_ok(EVP_PKEY *key)
{
    int  bits;

    if (EVP_PKEY_get_base_id(key) != EVP_PKEY_RSA) {
        return 0;
    }

    bits = EVP_PKEY_get_bits(key);

    return bits >= BILLING_RSA_MIN_BITS && bits <= BILLING_RSA_MAX_BITS;
}


int
billing_jwt_verify_signature(const billing_jwt_t *jwt, EVP_PKEY *key)
{
    EVP_MD_CTX    *md;
    EVP_PKEY_CTX  *pctx;
    int            ok;

    if (jwt == NULL || key == NULL || jwt->sig == NULL
        || jwt->signing_input == NULL || !rsa_bits_ok(key)
        || EVP_PKEY_get_size(key) <= 0
        || (size_t) EVP_PKEY_get_size(key) != jwt->sig_len)
    {
        return BILLING_JWT_BAD_SIGNATURE;
    }

    md = EVP_MD_CTX_new();
    if (md == NULL) {
        ERR_clear_error();
        return BILLING_JWT_BAD_SIGNATURE;
    }

    pctx = NULL;

    ok = EVP_DigestVerifyInit_ex(md, &pctx, "SHA256", NULL, NULL, key, NULL)
             == 1
         && EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) == 1
         && EVP_DigestVerify(md, jwt->sig, jwt->sig_len,
                             (const unsigned char *) jwt->signing_input,
                             jwt->signing_input_len) == 1;

    EVP_MD_CTX_free(md);

    /* nginx may report stale queue entries on unrelated SSL errors */
    ERR_clear_error();

    return ok ? BILLING_JWT_OK : BILLING_JWT_BAD_SIGNATURE;
}


/* a finite JSON number, or -1 */
static int
numeric_date(const cJSON *it, double *v)
{
    if (!cJSON_IsNumber(it) || !isfinite(it->valuedouble)) {
        return -1;
    }

    *v = it->valuedouble;

    return 0;
}


int
billing_jwt_check_claims(const billing_jwt_t *jwt, const char *issuer,
    const char *audience, int64_t now, int64_t leeway,
    billing_jwt_claims_t *out, char *err, size_t errlen)
{
    static const char  *names[] = {
        "iss", "aud", "exp", "nbf", "iat", "sub", "scope"
    };

    const cJSON  *iss, *aud, *exp, *nbf, *iat, *sub, *scope, *el, *dummy;
    double        vexp, v, dnow, dleeway;
    size_t        i, n;
    int           match;

    if (err && errlen) {
        err[0] = '\0';
    }

    if (out) {
        memset(out, 0, sizeof(*out));
    }

    if (jwt == NULL || jwt->payload == NULL) {
        return jwt_fail(BILLING_JWT_MALFORMED, err, errlen, "no payload");
    }

    for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (member(jwt->payload, names[i], &dummy) != 0) {
            return jwt_fail(BILLING_JWT_MALFORMED, err, errlen,
                            "claim \"%s\" is given more than once", names[i]);
        }
    }

    iss = cJSON_GetObjectItemCaseSensitive(jwt->payload, "iss");
    aud = cJSON_GetObjectItemCaseSensitive(jwt->payload, "aud");
    exp = cJSON_GetObjectItemCaseSensitive(jwt->payload, "exp");
    nbf = cJSON_GetObjectItemCaseSensitive(jwt->payload, "nbf");
    iat = cJSON_GetObjectItemCaseSensitive(jwt->payload, "iat");
    sub = cJSON_GetObjectItemCaseSensitive(jwt->payload, "sub");
    scope = cJSON_GetObjectItemCaseSensitive(jwt->payload, "scope");

    if (leeway < 0) {
        leeway = 0;
    }
    if (leeway > BILLING_JWT_LEEWAY_MAX) {
        leeway = BILLING_JWT_LEEWAY_MAX;
    }

    dnow = (double) now;
    dleeway = (double) leeway;

    if (issuer
        && (!cJSON_IsString(iss) || strcmp(iss->valuestring, issuer) != 0))
    {
        return jwt_fail(BILLING_JWT_BAD_ISSUER, err, errlen,
                        "issuer does not match");
    }

    if (audience) {
        match = 0;

        if (cJSON_IsString(aud)) {
            match = strcmp(aud->valuestring, audience) == 0;

        } else if (cJSON_IsArray(aud)) {
            cJSON_ArrayForEach(el, aud) {
                if (!cJSON_IsString(el)) {
                    return jwt_fail(BILLING_JWT_BAD_CLAIMS, err, errlen,
                                    "aud must hold strings");
                }
                if (strcmp(el->valuestring, audience) == 0) {
                    match = 1;
                }
            }

        } else if (aud != NULL) {
            return jwt_fail(BILLING_JWT_BAD_CLAIMS, err, errlen,
                            "aud must be a string or an array");
        }

        if (!match) {
            return jwt_fail(BILLING_JWT_BAD_AUDIENCE, err, errlen,
                            "audience does not match");
        }
    }

    if (exp == NULL || numeric_date(exp, &vexp) != 0) {
        return jwt_fail(BILLING_JWT_BAD_CLAIMS, err, errlen,
                        "exp is required and must be a number");
    }

    if (!(dnow < vexp + dleeway)) {
        return jwt_fail(BILLING_JWT_EXPIRED, err, errlen, "token expired");
    }

    if (nbf) {
        if (numeric_date(nbf, &v) != 0) {
            return jwt_fail(BILLING_JWT_BAD_CLAIMS, err, errlen,
                            "nbf must be a number");
        }
        if (v > dnow + dleeway) {
            return jwt_fail(BILLING_JWT_NOT_YET_VALID, err, errlen,
                            "token not valid yet (nbf)");
        }
    }

    if (iat) {
        if (numeric_date(iat, &v) != 0) {
            return jwt_fail(BILLING_JWT_BAD_CLAIMS, err, errlen,
                            "iat must be a number");
        }
        if (v > dnow + dleeway) {
            return jwt_fail(BILLING_JWT_NOT_YET_VALID, err, errlen,
                            "token issued in the future (iat)");
        }
    }

    if (!cJSON_IsString(sub)) {
        return jwt_fail(BILLING_JWT_BAD_CLAIMS, err, errlen,
                        "sub is required and must be a string");
    }

    n = strlen(sub->valuestring);

    if (n == 0 || n > 255 || !billing_is_printable_utf8(sub->valuestring, n))
    {
        return jwt_fail(BILLING_JWT_BAD_CLAIMS, err, errlen,
                        "sub must be 1 to 255 printable bytes");
    }

    if (out) {
        memcpy(out->sub, sub->valuestring, n + 1);
    }

    if (scope && !cJSON_IsNull(scope)) {
        if (!cJSON_IsString(scope)) {
            return jwt_fail(BILLING_JWT_BAD_CLAIMS, err, errlen,
                            "scope must be a string");
        }

        n = strlen(scope->valuestring);

        if (n > 1023 || !billing_is_printable_utf8(scope->valuestring, n)) {
            return jwt_fail(BILLING_JWT_BAD_CLAIMS, err, errlen,
                            "scope is too long or not printable");
        }

        if (out) {
            memcpy(out->scope, scope->valuestring, n + 1);
        }
    }

    if (out) {
        /* the range check keeps the conversion defined */
        if (vexp >= 9.0e18) {
            out->exp = INT64_MAX;
        } else if (vexp <= -9.0e18) {
            out->exp = INT64_MIN;
        } else {
            out->exp = (int64_t) vexp;
        }
    }

    return BILLING_JWT_OK;
}


int
billing_jwt_has_scope(const billing_jwt_claims_t *c, const char *scope)
{
    const char  *p, *end, *tok;
    size_t       n, slen;

    if (c == NULL || scope == NULL) {
        return 0;
    }

    slen = strlen(scope);
    if (slen == 0) {
        return 0;
    }

    p = c->scope;
    end = c->scope + bounded_len(c->scope, sizeof(c->scope));

    while (p < end) {
        while (p < end && *p == ' ') {
            p++;
        }

        tok = p;

        while (p < end && *p != ' ') {
            p++;
        }

        n = (size_t) (p - tok);

        if (n == slen && memcmp(tok, scope, n) == 0) {
            return 1;
        }
    }

    return 0;
}


/* RSA, 2048..8192 bits, odd e >= 3 of at most 64 bits */
static int
check_rsa_key(EVP_PKEY *pkey, char *err, size_t errlen)
{
    BIGNUM  *e;
    int      ok;

    if (EVP_PKEY_get_base_id(pkey) != EVP_PKEY_RSA) {
        jwt_fail(-1, err, errlen, "key is not an RSA key");
        return -1;
    }

    if (!rsa_bits_ok(pkey)) {
        jwt_fail(-1, err, errlen, "RSA key must have 2048 to 8192 bits");
        return -1;
    }

    e = NULL;

    if (EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_RSA_E, &e) != 1) {
        jwt_fail(-1, err, errlen, "RSA key has no public exponent");
        return -1;
    }

    ok = BN_is_odd(e) && BN_num_bits(e) >= 2
         && BN_num_bits(e) <= BILLING_RSA_E_MAX_BITS;

    BN_free(e);

    if (!ok) {
        jwt_fail(-1, err, errlen, "RSA public exponent is not acceptable");
        return -1;
    }

    return 0;
}


static int
contains(const char *p, size_t len, const char *needle)
{
    size_t  i, n;

    n = strlen(needle);

    for (i = 0; n <= len && i <= len - n; i++) {
        if (memcmp(p + i, needle, n) == 0) {
            return 1;
        }
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
        jwt_fail(-1, err, errlen, "PEM key is empty or too large");
        return NULL;
    }

    /* a private key where a public one belongs is a configuration error */
    if (contains(pem, len, "PRIVATE KEY")
        || !(contains(pem, len, "-----BEGIN PUBLIC KEY-----")
             || contains(pem, len, "-----BEGIN RSA PUBLIC KEY-----")))
    {
        jwt_fail(-1, err, errlen, "expected a PEM \"PUBLIC KEY\" or "
                 "\"RSA PUBLIC KEY\"");
        return NULL;
    }

    pkey = NULL;

    dctx = OSSL_DECODER_CTX_new_for_pkey(&pkey, "PEM", NULL, NULL,
                                         OSSL_KEYMGMT_SELECT_PUBLIC_KEY,
                                         NULL, NULL);
    if (dctx == NULL) {
        ERR_clear_error();
        jwt_fail(-1, err, errlen, "cannot create a key decoder");
        return NULL;
    }

    data = (const unsigned char *) pem;
    dlen = len;

    if (OSSL_DECODER_from_data(dctx, &data, &dlen) != 1 || pkey == NULL) {
        OSSL_DECODER_CTX_free(dctx);
        EVP_PKEY_free(pkey);
        ERR_clear_error();
        jwt_fail(-1, err, errlen, "cannot decode the PEM public key");
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

    if (member(obj, name, &it) != 0) {
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
        jwt_fail(-1, err, errlen, "JWKS is empty or too large");
        return -1;
    }

    if (billing_json_parse_object(json, len, &root) != BILLING_JSON_OK) {
        jwt_fail(-1, err, errlen, "JWKS is not a JSON object");
        return -1;
    }

    if (member(root, "keys", &arr) != 0 || !cJSON_IsArray(arr)) {
        cJSON_Delete(root);
        jwt_fail(-1, err, errlen, "JWKS has no \"keys\" array");
        return -1;
    }

    out = calloc(BILLING_JWKS_MAX_KEYS, sizeof(billing_jwk_t));
    if (out == NULL) {
        cJSON_Delete(root);
        jwt_fail(-1, err, errlen, "out of memory");
        return -1;
    }

    cnt = 0;

    cJSON_ArrayForEach(k, arr) {

        if (cnt == BILLING_JWKS_MAX_KEYS) {
            break;
        }

        if (!cJSON_IsObject(k)) {
            continue;
        }

        if (member(k, "kty", &kty) != 0 || !cJSON_IsString(kty)
            || strcmp(kty->valuestring, "RSA") != 0
            || !opt_string_is(k, "use", "sig")
            || !opt_string_is(k, "alg", "RS256")
            || member(k, "kid", &kid) != 0
            || member(k, "n", &n) != 0 || member(k, "e", &e) != 0
            || !cJSON_IsString(n) || !cJSON_IsString(e))
        {
            continue;
        }

        if (kid && !(cJSON_IsString(kid)
                     && kid_valid(kid->valuestring,
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
        jwt_fail(-1, err, errlen, "JWKS holds no usable RS256 key");
        return -1;
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
