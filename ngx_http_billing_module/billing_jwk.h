/*
 * ScholarLink Billing: RSA public keys for JWT verification, from a PEM
 * key or a JWK Set (pure core, OpenSSL 3 EVP).
 */

#ifndef BILLING_JWK_H
#define BILLING_JWK_H

#include <stddef.h>

#include <openssl/evp.h>

#define BILLING_JWT_KID_MAX        128
#define BILLING_RSA_MIN_BITS       2048
#define BILLING_RSA_MAX_BITS       8192
/* base64url of an 8192-bit modulus is 1366 characters */
#define BILLING_JWK_N_MAX          1366
#define BILLING_JWK_E_MAX          11          /* 8 bytes */
#define BILLING_JWKS_MAX_KEYS      64
#define BILLING_JWKS_MAX_LEN       (256 * 1024)

typedef struct {
    char             kid[BILLING_JWT_KID_MAX + 1];   /* "" when absent */
    int              has_kid;
    char             n[BILLING_JWK_N_MAX + 1];       /* base64url, NUL-term */
    char             e[BILLING_JWK_E_MAX + 1];
} billing_jwk_t;

/* 1 if s is a key id of 1..128 printable ASCII characters, else 0. */
int billing_jwk_kid_valid(const char *s, size_t len);

/* 1 if key is an RSA key of 2048..8192 bits, else 0. */
int billing_rsa_key_ok(EVP_PKEY *key);

/*
 * Public key from PEM: "PUBLIC KEY" (SPKI) or "RSA PUBLIC KEY" (PKCS#1).
 * Rejects private keys, non-RSA keys, moduli outside 2048..8192 bits and
 * exponents that are even or < 3.  Returns a key (EVP_PKEY_free()) or NULL
 * with err set.
 */
EVP_PKEY *billing_pem_public_key(const char *pem, size_t len, char *err,
    size_t errlen);

/*
 * Parse a JWK Set ({"keys":[...]}).  Keeps keys with kty "RSA", "use"
 * absent or "sig", "alg" absent or "RS256", a kid (if any) of 1..128
 * printable ASCII, and n/e that decode strictly with a 2048..8192-bit
 * modulus and an odd exponent >= 3; other keys are skipped.  At most 64
 * keys are kept.  On success *keys is a malloc'd array (free with
 * billing_jwks_free()) of *nkeys >= 1 entries.  A document that is not a
 * JWK Set, or holds no usable key, is an error.  Returns 0 or -1.
 */
int billing_jwks_parse(const char *json, size_t len, billing_jwk_t **keys,
    size_t *nkeys, char *err, size_t errlen);

void billing_jwks_free(billing_jwk_t *keys);

/* Build the RSA public key of a JWK (EVP_PKEY_fromdata); NULL on error. */
EVP_PKEY *billing_jwk_to_pkey(const billing_jwk_t *k);

#endif /* BILLING_JWK_H */
