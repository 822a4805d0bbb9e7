/*
 * Unit tests: Stripe-Signature verification and outgoing HMACs.
 */

#include <stdlib.h>
#include <string.h>

#include "billing_stripe.h"
#include "tap.h"


#define NOW   1700000000LL
#define KNOWN_HMAC "b8569b78799ff9e3cbff0fc2d63a33a2b57f3282abd07c37ae5e8e7d79a5f163"
#define BODY  "{\"id\":\"evt_1\",\"type\":\"checkout.session.completed\"}"


static const char *const  secrets1[] = { "whsec_current" };
static const size_t       lens1[] = { 13 };
static const char *const  secrets2[] = { "whsec_old", "whsec_current" };
static const size_t       lens2[] = { 9, 13 };


static int
verify(const char *hdr, const char *body, const char *const *sec,
    const size_t *lens, size_t n, int64_t now)
{
    return billing_stripe_verify(hdr, strlen(hdr), body, strlen(body), sec,
                                 lens, n, now, 300);
}


static void
test_verify(void)
{
    char  sig[65], sig_old[65], hdr[512];

    ok(billing_hmac_sign("whsec_current", 13, NOW, BODY, strlen(BODY), sig)
       == 0 && strlen(sig) == 64, "sign");
    billing_hmac_sign("whsec_old", 9, NOW, BODY, strlen(BODY), sig_old);

    snprintf(hdr, sizeof(hdr), "t=%lld,v1=%s", NOW, sig);
    is_int(verify(hdr, BODY, secrets1, lens1, 1, NOW), BILLING_STRIPE_OK,
           "good signature");

    snprintf(hdr, sizeof(hdr), "t=%lld,v1=%s,v0=abc", NOW, sig);
    is_int(verify(hdr, BODY, secrets1, lens1, 1, NOW), BILLING_STRIPE_OK,
           "unknown scheme v0 ignored");

    snprintf(hdr, sizeof(hdr), "t=%lld,v1=%s,v1=%s", NOW, sig_old, sig);
    is_int(verify(hdr, BODY, secrets1, lens1, 1, NOW), BILLING_STRIPE_OK,
           "two v1, second matches");

    snprintf(hdr, sizeof(hdr), "v1=%s,t=%lld", sig, NOW);
    is_int(verify(hdr, BODY, secrets1, lens1, 1, NOW), BILLING_STRIPE_OK,
           "order of items does not matter");

    snprintf(hdr, sizeof(hdr), "t=%lld,v1=%s", NOW, sig);
    is_int(verify(hdr, BODY, secrets2, lens2, 2, NOW), BILLING_STRIPE_OK,
           "rotation: second secret matches");

    snprintf(hdr, sizeof(hdr), "t=%lld,v1=%s", NOW, sig_old);
    is_int(verify(hdr, BODY, secrets2, lens2, 2, NOW), BILLING_STRIPE_OK,
           "rotation: old secret still matches");
    is_int(verify(hdr, BODY, secrets1, lens1, 1, NOW),
           BILLING_STRIPE_NO_MATCH, "old signature, secret removed");

    /* upper-case hex is the same MAC */
    {
        char  up[65];
        size_t i;
        for (i = 0; i < 65; i++) {
            up[i] = (sig[i] >= 'a' && sig[i] <= 'f') ? sig[i] - 32 : sig[i];
        }
        snprintf(hdr, sizeof(hdr), "t=%lld,v1=%s", NOW, up);
        is_int(verify(hdr, BODY, secrets1, lens1, 1, NOW), BILLING_STRIPE_OK,
               "upper-case hex accepted");
    }

    snprintf(hdr, sizeof(hdr), "t=%lld,v1=%s", NOW, sig);
    is_int(verify(hdr, BODY, secrets1, lens1, 1, NOW + 301),
           BILLING_STRIPE_TIMESTAMP, "stale t (301 s)");
    is_int(verify(hdr, BODY, secrets1, lens1, 1, NOW + 300),
           BILLING_STRIPE_OK, "t exactly at tolerance");
    is_int(verify(hdr, BODY, secrets1, lens1, 1, NOW - 301),
           BILLING_STRIPE_TIMESTAMP, "t in the future");
    is_int(verify(hdr, BODY, secrets1, lens1, 1, INT64_MIN),
           BILLING_STRIPE_TIMESTAMP, "absurd now does not overflow");

    is_int(verify(hdr, BODY " ", secrets1, lens1, 1, NOW),
           BILLING_STRIPE_NO_MATCH, "altered body");

    snprintf(hdr, sizeof(hdr), "t=%lld,v1=%s", NOW + 1, sig);
    is_int(verify(hdr, BODY, secrets1, lens1, 1, NOW),
           BILLING_STRIPE_NO_MATCH, "altered t");

    snprintf(hdr, sizeof(hdr), "v1=%s", sig);
    is_int(verify(hdr, BODY, secrets1, lens1, 1, NOW),
           BILLING_STRIPE_MALFORMED, "missing t");

    snprintf(hdr, sizeof(hdr), "t=%lld", NOW);
    is_int(verify(hdr, BODY, secrets1, lens1, 1, NOW),
           BILLING_STRIPE_MALFORMED, "no v1");

    snprintf(hdr, sizeof(hdr), "t=%lld,v0=%s", NOW, sig);
    is_int(verify(hdr, BODY, secrets1, lens1, 1, NOW),
           BILLING_STRIPE_MALFORMED, "only v0");

    snprintf(hdr, sizeof(hdr), "t=%lld,t=%lld,v1=%s", NOW, NOW, sig);
    is_int(verify(hdr, BODY, secrets1, lens1, 1, NOW),
           BILLING_STRIPE_MALFORMED, "two t");

    snprintf(hdr, sizeof(hdr), "t=%lld, v1=%s", NOW, sig);
    is_int(verify(hdr, BODY, secrets1, lens1, 1, NOW),
           BILLING_STRIPE_MALFORMED, "whitespace refused");

    snprintf(hdr, sizeof(hdr), "t=-%lld,v1=%s", NOW, sig);
    is_int(verify(hdr, BODY, secrets1, lens1, 1, NOW),
           BILLING_STRIPE_MALFORMED, "negative t");

    snprintf(hdr, sizeof(hdr), "t=99999999999999999999,v1=%s", sig);
    is_int(verify(hdr, BODY, secrets1, lens1, 1, NOW),
           BILLING_STRIPE_MALFORMED, "huge t");

    snprintf(hdr, sizeof(hdr), "t=%lld,v1=%.63s", NOW, sig);
    is_int(verify(hdr, BODY, secrets1, lens1, 1, NOW),
           BILLING_STRIPE_MALFORMED, "63-digit v1");

    snprintf(hdr, sizeof(hdr), "t=%lld,v1=%.63sg", NOW, sig);
    is_int(verify(hdr, BODY, secrets1, lens1, 1, NOW),
           BILLING_STRIPE_MALFORMED, "non-hex v1");

    snprintf(hdr, sizeof(hdr), "t=%lld,,v1=%s", NOW, sig);
    is_int(verify(hdr, BODY, secrets1, lens1, 1, NOW),
           BILLING_STRIPE_MALFORMED, "empty item");

    snprintf(hdr, sizeof(hdr), "t=%lld,v1=%s,", NOW, sig);
    is_int(verify(hdr, BODY, secrets1, lens1, 1, NOW),
           BILLING_STRIPE_MALFORMED, "trailing comma");

    is_int(verify("garbage", BODY, secrets1, lens1, 1, NOW),
           BILLING_STRIPE_MALFORMED, "garbage");
    is_int(verify("", BODY, secrets1, lens1, 1, NOW),
           BILLING_STRIPE_MALFORMED, "empty header");
    is_int(verify("=,=", BODY, secrets1, lens1, 1, NOW),
           BILLING_STRIPE_MALFORMED, "empty scheme");

    /* an empty secret is never used (anyone could compute that MAC) */
    {
        static const char *const  empty[] = { "" };
        static const size_t       zero[] = { 0 };
        char                      esig[65];

        billing_hmac_sign("x", 1, NOW, BODY, strlen(BODY), esig);
        snprintf(hdr, sizeof(hdr), "t=%lld,v1=%s", NOW, sig);
        is_int(verify(hdr, BODY, empty, zero, 1, NOW),
               BILLING_STRIPE_NO_MATCH, "empty secret never matches");
        ok(billing_hmac_sign("", 0, NOW, BODY, 3, esig) == -1,
           "sign refuses an empty secret");
    }

    is_int(verify(hdr, BODY, NULL, NULL, 0, NOW), BILLING_STRIPE_NO_MATCH,
           "no secrets");

    /* empty body */
    billing_hmac_sign("whsec_current", 13, NOW, "", 0, sig);
    snprintf(hdr, sizeof(hdr), "t=%lld,v1=%s", NOW, sig);
    is_int(billing_stripe_verify(hdr, strlen(hdr), NULL, 0, secrets1, lens1,
                                 1, NOW, 300), BILLING_STRIPE_OK,
           "empty body");

    is_str(billing_stripe_strerror(BILLING_STRIPE_MALFORMED),
           "the Stripe-Signature header is malformed", "strerror: malformed");
    is_str(billing_stripe_strerror(BILLING_STRIPE_TIMESTAMP),
           "the signature timestamp is outside the tolerance",
           "strerror: timestamp");
    is_str(billing_stripe_strerror(BILLING_STRIPE_NO_MATCH),
           "no signature matches a configured webhook secret",
           "strerror: no match");
    is_str(billing_stripe_strerror(BILLING_STRIPE_ERROR), "internal error",
           "strerror: internal");
    is_str(billing_stripe_strerror(999), "internal error",
           "strerror: unknown code");
}


static void
test_known_vector(void)
{
    char  sig[65];

    /*
     * HMAC-SHA256("secret", "1700000000.{}") computed independently with
     * `printf '1700000000.{}' | openssl dgst -sha256 -hmac secret`.
     */
    billing_hmac_sign("secret", 6, 1700000000, "{}", 2, sig);
    is_str(sig, KNOWN_HMAC, "known HMAC vector");
}


int
main(void)
{
    test_verify();
    test_known_vector();

    return tap_done();
}
