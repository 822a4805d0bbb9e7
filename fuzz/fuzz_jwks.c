/*
 * libFuzzer: JWK Set parsing and key construction.
 */

#include <stdint.h>

#include "billing_jwk.h"


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    billing_jwk_t  *keys;
    size_t          nkeys, i;
    char            err[256];
    EVP_PKEY       *pk;

    if (billing_jwks_parse((const char *) data, size, &keys, &nkeys, err,
                           sizeof(err)) != 0)
    {
        return 0;
    }

    if (nkeys == 0 || nkeys > BILLING_JWKS_MAX_KEYS) {
        __builtin_trap();
    }

    for (i = 0; i < nkeys; i++) {
        pk = billing_jwk_to_pkey(&keys[i]);
        /* a key that passed parsing must build */
        if (pk == NULL) {
            __builtin_trap();
        }
        EVP_PKEY_free(pk);
    }

    billing_jwks_free(keys);

    return 0;
}
