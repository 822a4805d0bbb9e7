/*
 * ScholarLink Billing: Stripe webhook signatures and outgoing HMACs.
 */

#ifndef BILLING_STRIPE_H
#define BILLING_STRIPE_H

#include <stddef.h>
#include <stdint.h>

enum {
    BILLING_STRIPE_OK = 0,
    BILLING_STRIPE_MALFORMED,      /* no/duplicate t, no v1, bad syntax */
    BILLING_STRIPE_TIMESTAMP,      /* signature matched, |now - t| too big */
    BILLING_STRIPE_NO_MATCH,       /* no v1 matched any secret */
    BILLING_STRIPE_ERROR           /* internal (OpenSSL) failure */
};

#define BILLING_STRIPE_HEADER_MAX  8192
#define BILLING_STRIPE_DEFAULT_TOLERANCE  300

/*
 * Verify a Stripe-Signature header: comma-separated "scheme=value" items
 * without any whitespace; exactly one "t" (1..12 decimal digits), one or
 * more "v1" (64 hex digits each), other schemes (v0...) ignored.  Each
 * non-empty secret's HMAC-SHA256 over t "." body is compared in constant
 * time with every v1; any match is accepted.  The timestamp is checked
 * only after a match (like Stripe's libraries), so TIMESTAMP means "a
 * correctly signed but stale or future event".  Empty secrets are never
 * used.  Returns one of the BILLING_STRIPE_* codes.
 */
int billing_stripe_verify(const char *header, size_t hlen, const char *body,
    size_t blen, const char *const *secrets, const size_t *secret_lens,
    size_t nsecrets, int64_t now, int64_t tolerance);

/* What a BILLING_STRIPE_* code means, as a sentence for the sender. */
const char *billing_stripe_strerror(int rc);

/*
 * Lower-case hex HMAC-SHA256 of t "." body (t in decimal) for outgoing
 * notifications (X-Billing-Signature: t=<t>,v1=<out_hex>).
 * Returns 0, or -1 (empty secret, NULL body with blen > 0, OpenSSL error).
 */
int billing_hmac_sign(const char *secret, size_t slen, int64_t t,
    const char *body, size_t blen, char out_hex[65]);

#endif /* BILLING_STRIPE_H */
