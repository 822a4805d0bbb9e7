/*
 * libFuzzer: JWT parse + signature verification with a fixed RSA-2048 key
 * + claims checks.  Seeds include a token signed by the matching private
 * key (not checked in), so the fuzzer starts from a fully valid token.
 */

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "billing_jwt.h"


static const char  fixed_pem[] =
    "-----BEGIN PUBLIC KEY-----\n"
    "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAtOaZOFuYwxDdr8Ozgx6x\n"
    "tQUnHhuIdhlKxdsvI8L85+VWHA0FfOe/WXiSo0g0Pip+ARxLQckuglrpl9hm3agW\n"
    "8vJlrkOD9wuJ1VwmpGtqQaCwIxzyjmIuMMlW/pD8gtPc2zLRbE8YIi4kULZuKs34\n"
    "cttoetxDp7+kxrGIDdyLxE57Y87cOhqorL9yO/umQp8DheLRJJ5bDcWFRaGr4pCd\n"
    "ZQRl0Q0r5LyzTj0vEKvY2xja41ix6WhHJx5rkBsegAY+015PKsEKAPl3GzWaeCft\n"
    "RAZsc+6WanYkVCROlIwQGKF6Lw7vXjFxfsgGtlZbtLikctHujmrcXIoWMARKs4gu\n"
    "6wIDAQAB\n"
    "-----END PUBLIC KEY-----\n"
    ;

static EVP_PKEY  *fixed_key;


int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char  err[128];

    (void) argc;
    (void) argv;

    fixed_key = billing_pem_public_key(fixed_pem, sizeof(fixed_pem) - 1, err,
                                       sizeof(err));
    if (fixed_key == NULL) {
        __builtin_trap();
    }

    return 0;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    billing_jwt_t         jwt;
    billing_jwt_claims_t  c;
    char                  err[256];
    int                   rc;

    rc = billing_jwt_parse((const char *) data, size, &jwt, err,
                           sizeof(err));
    if (rc != BILLING_JWT_OK) {
        return 0;
    }

    (void) billing_jwt_verify_signature(&jwt, fixed_key);

    rc = billing_jwt_check_claims(&jwt, "https://auth.scholarlink.test/",
                                  "billing-api", 1700000000, 60, &c, err,
                                  sizeof(err));
    if (rc == BILLING_JWT_OK) {
        if (c.sub[0] == '\0') {
            __builtin_trap();
        }
        (void) billing_jwt_has_scope(c.scope, strlen(c.scope),
                                     "billing:usage");
    }

    /* and once more without issuer/audience, with extreme clocks */
    rc = billing_jwt_check_claims(&jwt, NULL, NULL, INT64_MAX, INT64_MAX,
                                  &c, err, sizeof(err));

    /* exp + leeway saturates: never below exp, never wrapped */
    if (rc == BILLING_JWT_OK && c.valid_until < c.exp) {
        __builtin_trap();
    }

    rc = billing_jwt_check_claims(&jwt, NULL, NULL, 0, 60, &c, err,
                                  sizeof(err));
    if (rc == BILLING_JWT_OK && c.valid_until < c.exp) {
        __builtin_trap();
    }
    (void) billing_jwt_check_claims(&jwt, NULL, NULL, INT64_MIN, -1, NULL,
                                    NULL, 0);

    billing_jwt_free(&jwt);

    return 0;
}
