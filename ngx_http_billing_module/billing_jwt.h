/*
 * ScholarLink Billing: RS256 JWT verification (pure core, OpenSSL 3 EVP).
 * The keys come from billing_jwk.h.
 */

#ifndef BILLING_JWT_H
#define BILLING_JWT_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "billing_jwk.h"

enum {
    BILLING_JWT_OK = 0,
    BILLING_JWT_MALFORMED,
    BILLING_JWT_BAD_ALG,
    BILLING_JWT_BAD_SIGNATURE,
    BILLING_JWT_EXPIRED,
    BILLING_JWT_NOT_YET_VALID,
    BILLING_JWT_BAD_ISSUER,
    BILLING_JWT_BAD_AUDIENCE,
    BILLING_JWT_BAD_CLAIMS
};

#define BILLING_JWT_MAX_LEN        8192

struct cJSON;

typedef struct {
    char            *signing_input;      /* copy of "header.payload" */
    size_t           signing_input_len;
    unsigned char   *sig;                /* decoded signature */
    size_t           sig_len;
    struct cJSON    *header;
    struct cJSON    *payload;
    char             kid[BILLING_JWT_KID_MAX + 1];
    int              has_kid;
} billing_jwt_t;

typedef struct {
    char             sub[256];
    char             scope[1024];        /* "" when absent */
    int64_t          exp;                /* seconds, truncated */
    int64_t          valid_until;        /* exp + leeway, at most INT64_MAX */
} billing_jwt_claims_t;

const char *billing_jwt_strerror(int rc);

/*
 * Split and decode a compact JWS: exactly two dots, three non-empty parts,
 * at most 8 KiB in all.  Base64url is strict: no padding ('=' is an
 * invalid character), no whitespace, canonical trailing bits.  Header:
 * "alg" must be exactly "RS256" (else BILLING_JWT_BAD_ALG), "typ" if
 * present is "JWT" or "at+jwt" (RFC 9068; case-insensitive, with or
 * without "application/"), "kid" if present a string of 1..128 printable
 * ASCII characters, "crit" is refused (we implement no extensions).
 * Header and payload must be JSON objects (UTF-8, no duplicate names among
 * those we read).  *jwt is always initialised: call billing_jwt_free()
 * after success; on failure nothing is held.  The token need not outlive
 * *jwt (everything is copied).
 */
int billing_jwt_parse(const char *token, size_t len, billing_jwt_t *jwt,
    char *err, size_t errlen);

void billing_jwt_free(billing_jwt_t *jwt);

/*
 * RSASSA-PKCS1-v1_5 SHA-256 over the signing input.  The key must be an
 * RSA key of 2048..8192 bits and the signature exactly the modulus size.
 * Returns BILLING_JWT_OK or BILLING_JWT_BAD_SIGNATURE.  Leaves the OpenSSL
 * error queue empty.
 */
int billing_jwt_verify_signature(const billing_jwt_t *jwt, EVP_PKEY *key);

/*
 * Validate the payload: iss == issuer; aud (string, or array of strings)
 * contains audience; exp required, valid while now < exp + leeway; nbf
 * and iat, when present, <= now + leeway; sub a non-empty printable string
 * of at most 255 bytes; scope, when present, a string of at most 1023
 * bytes.  NumericDates may be fractional.  issuer or audience NULL skips
 * that check (the glue must not allow that in a configuration).  leeway
 * is clamped to 0..86400.  out (may be NULL) receives sub, scope, exp and
 * valid_until: the last second the token is accepted (exp + leeway),
 * saturated rather than overflowing for an exp near the end of int64_t.
 */
int billing_jwt_check_claims(const billing_jwt_t *jwt, const char *issuer,
    const char *audience, int64_t now, int64_t leeway,
    billing_jwt_claims_t *out, char *err, size_t errlen);

/*
 * 1 if scope is one of the space-separated tokens of the len bytes at
 * scopes (a "scope" claim, RFC 8693 4.2), else 0; "" never matches.
 */
int billing_jwt_has_scope(const char *scopes, size_t len, const char *scope);

#endif /* BILLING_JWT_H */
