/*
 * ScholarLink Billing: RS256 JWT verification (the keys come from
 * billing_jwk.c).
 */

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>

#include "billing_json.h"
#include "billing_jwk.h"
#include "billing_jwt.h"
#include "billing_util.h"


#define BILLING_JWT_LEEWAY_MAX   86400


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
        return billing_fail(BILLING_JWT_MALFORMED, err, errlen,
                            "token is empty or longer than %d bytes",
                            BILLING_JWT_MAX_LEN);
    }

    d1 = memchr(token, '.', len);
    d2 = d1 ? memchr(d1 + 1, '.', (size_t) (token + len - (d1 + 1))) : NULL;

    if (d2 == NULL
        || memchr(d2 + 1, '.', (size_t) (token + len - (d2 + 1))) != NULL)
    {
        return billing_fail(BILLING_JWT_MALFORMED, err, errlen,
                            "token must have exactly three parts");
    }

    hlen = (size_t) (d1 - token);
    plen = (size_t) (d2 - (d1 + 1));
    slen = (size_t) (token + len - (d2 + 1));

    if (hlen == 0 || plen == 0 || slen == 0) {
        return billing_fail(BILLING_JWT_MALFORMED, err, errlen,
                            "token has an empty part");
    }

    if (decode_json_part(token, hlen, &jwt->header) != 0) {
        rc = billing_fail(BILLING_JWT_MALFORMED, err, errlen,
                          "token header is not base64url JSON object");
        goto failed;
    }

    /* the algorithm is pinned: anything but RS256 (none, HS256...) */
    if (billing_json_member(jwt->header, "alg", &it) != 0 || it == NULL
        || !cJSON_IsString(it) || strcmp(it->valuestring, "RS256") != 0)
    {
        rc = billing_fail(BILLING_JWT_BAD_ALG, err, errlen,
                          "token algorithm must be RS256");
        goto failed;
    }

    if (billing_json_member(jwt->header, "typ", &it) != 0
        || (it && (!cJSON_IsString(it)
                   || !(ascii_ieq(it->valuestring, "JWT")
                        || ascii_ieq(it->valuestring, "application/jwt")
                        || ascii_ieq(it->valuestring, "at+jwt")
                        || ascii_ieq(it->valuestring, "application/at+jwt")))))
    {
        rc = billing_fail(BILLING_JWT_MALFORMED, err, errlen,
                          "token type must be JWT");
        goto failed;
    }

    if (billing_json_member(jwt->header, "crit", &it) != 0 || it != NULL) {
        rc = billing_fail(BILLING_JWT_MALFORMED, err, errlen,
                          "critical header extensions are not supported");
        goto failed;
    }

    if (billing_json_member(jwt->header, "kid", &it) != 0) {
        rc = billing_fail(BILLING_JWT_MALFORMED, err, errlen,
                          "duplicate kid header");
        goto failed;
    }

    if (it) {
        if (!cJSON_IsString(it)
            || !billing_jwk_kid_valid(it->valuestring, strlen(it->valuestring)))
        {
            rc = billing_fail(BILLING_JWT_MALFORMED, err, errlen,
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
        rc = billing_fail(BILLING_JWT_MALFORMED, err, errlen,
                          "token payload is not base64url JSON object");
        goto failed;
    }

    /* an 8192-bit signature is 1024 bytes; more is never valid */
    if (slen > BILLING_B64URL_ENC_LEN(BILLING_RSA_MAX_BITS / 8)) {
        rc = billing_fail(BILLING_JWT_MALFORMED, err, errlen,
                          "token signature is too long");
        goto failed;
    }

    jwt->sig = malloc(BILLING_B64URL_DEC_MAX(slen));
    jwt->signing_input = malloc(hlen + 1 + plen + 1);

    if (jwt->sig == NULL || jwt->signing_input == NULL) {
        rc = billing_fail(BILLING_JWT_MALFORMED, err, errlen, "out of memory");
        goto failed;
    }

    if (billing_b64url_decode(d2 + 1, slen, jwt->sig,
                              BILLING_B64URL_DEC_MAX(slen), &jwt->sig_len)
        != 0 || jwt->sig_len == 0)
    {
        rc = billing_fail(BILLING_JWT_MALFORMED, err, errlen,
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


int
billing_jwt_verify_signature(const billing_jwt_t *jwt, EVP_PKEY *key)
{
    EVP_MD_CTX    *md;
    EVP_PKEY_CTX  *pctx;
    int            ok;

    if (jwt == NULL || key == NULL || jwt->sig == NULL
        || jwt->signing_input == NULL || !billing_rsa_key_ok(key)
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


/* an optional NumericDate (nbf, iat) that must not lie beyond limit */
static int
not_after(const cJSON *it, const char *name, double limit, const char *late,
    char *err, size_t errlen)
{
    double  v;

    if (it == NULL) {
        return BILLING_JWT_OK;
    }

    if (numeric_date(it, &v) != 0) {
        return billing_fail(BILLING_JWT_BAD_CLAIMS, err, errlen,
                            "%s must be a number", name);
    }

    if (v > limit) {
        return billing_fail(BILLING_JWT_NOT_YET_VALID, err, errlen, "%s",
                            late);
    }

    return BILLING_JWT_OK;
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
    double        vexp, dnow, dleeway;
    size_t        i, n;
    int           match, rc;

    if (err && errlen) {
        err[0] = '\0';
    }

    if (out) {
        memset(out, 0, sizeof(*out));
    }

    if (jwt == NULL || jwt->payload == NULL) {
        return billing_fail(BILLING_JWT_MALFORMED, err, errlen, "no payload");
    }

    for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (billing_json_member(jwt->payload, names[i], &dummy) != 0) {
            return billing_fail(BILLING_JWT_MALFORMED, err, errlen,
                                "claim \"%s\" is given more than once",
                                names[i]);
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
        return billing_fail(BILLING_JWT_BAD_ISSUER, err, errlen,
                            "issuer does not match");
    }

    if (audience) {
        match = 0;

        if (cJSON_IsString(aud)) {
            match = strcmp(aud->valuestring, audience) == 0;

        } else if (cJSON_IsArray(aud)) {
            cJSON_ArrayForEach(el, aud) {
                if (!cJSON_IsString(el)) {
                    return billing_fail(BILLING_JWT_BAD_CLAIMS, err, errlen,
                                        "aud must hold strings");
                }
                if (strcmp(el->valuestring, audience) == 0) {
                    match = 1;
                }
            }

        } else if (aud != NULL) {
            return billing_fail(BILLING_JWT_BAD_CLAIMS, err, errlen,
                                "aud must be a string or an array");
        }

        if (!match) {
            return billing_fail(BILLING_JWT_BAD_AUDIENCE, err, errlen,
                                "audience does not match");
        }
    }

    if (exp == NULL || numeric_date(exp, &vexp) != 0) {
        return billing_fail(BILLING_JWT_BAD_CLAIMS, err, errlen,
                            "exp is required and must be a number");
    }

    if (!(dnow < vexp + dleeway)) {
        return billing_fail(BILLING_JWT_EXPIRED, err, errlen, "token expired");
    }

    rc = not_after(nbf, "nbf", dnow + dleeway, "token not valid yet (nbf)",
                   err, errlen);

    if (rc == BILLING_JWT_OK) {
        rc = not_after(iat, "iat", dnow + dleeway,
                       "token issued in the future (iat)", err, errlen);
    }

    if (rc != BILLING_JWT_OK) {
        return rc;
    }

    if (!cJSON_IsString(sub)) {
        return billing_fail(BILLING_JWT_BAD_CLAIMS, err, errlen,
                            "sub is required and must be a string");
    }

    n = strlen(sub->valuestring);

    if (n == 0 || n > 255 || !billing_is_printable_utf8(sub->valuestring, n))
    {
        return billing_fail(BILLING_JWT_BAD_CLAIMS, err, errlen,
                            "sub must be 1 to 255 printable bytes");
    }

    if (out) {
        memcpy(out->sub, sub->valuestring, n + 1);
    }

    if (scope && !cJSON_IsNull(scope)) {
        if (!cJSON_IsString(scope)) {
            return billing_fail(BILLING_JWT_BAD_CLAIMS, err, errlen,
                                "scope must be a string");
        }

        n = strlen(scope->valuestring);

        if (n > 1023 || !billing_is_printable_utf8(scope->valuestring, n)) {
            return billing_fail(BILLING_JWT_BAD_CLAIMS, err, errlen,
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

        /* exp may be INT64_MAX: the sum must saturate, not overflow */
        out->valid_until = (out->exp > INT64_MAX - leeway)
                           ? INT64_MAX : out->exp + leeway;
    }

    return BILLING_JWT_OK;
}


int
billing_jwt_has_scope(const char *scopes, size_t len, const char *scope)
{
    const char  *p, *end, *tok;
    size_t       n, slen;

    if (scopes == NULL || scope == NULL) {
        return 0;
    }

    slen = strlen(scope);
    if (slen == 0) {
        return 0;
    }

    p = scopes;
    end = scopes + len;

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
