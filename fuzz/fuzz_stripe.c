/*
 * libFuzzer: Stripe-Signature verification.  Input = header "\n" body.
 */

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "billing_stripe.h"


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const  secrets[] = { "whsec_test", "whsec_old", "" };
    static const size_t       lens[] = { 10, 9, 0 };

    const char  *p = (const char *) data, *nl;
    char         hex[65];
    size_t       hlen;

    nl = memchr(p, '\n', size);
    hlen = nl ? (size_t) (nl - p) : size;

    (void) billing_stripe_verify(p, hlen, nl ? nl + 1 : NULL,
                                 nl ? size - hlen - 1 : 0, secrets, lens, 3,
                                 1700000000, 300);
    (void) billing_stripe_verify(p, hlen, nl ? nl + 1 : NULL,
                                 nl ? size - hlen - 1 : 0, secrets, lens, 3,
                                 INT64_MIN, INT64_MAX);

    if (billing_hmac_sign(p, hlen, 1700000000, p, size, hex) == 0
        && strlen(hex) != 64)
    {
        __builtin_trap();
    }

    return 0;
}
