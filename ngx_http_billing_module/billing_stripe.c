/*
 * ScholarLink Billing: Stripe webhook signatures and outgoing HMACs.
 */

#include <stdio.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include "billing_stripe.h"
#include "billing_util.h"


#define BILLING_STRIPE_MAX_V1   16
#define BILLING_T_MAX_DIGITS    12


const char *
billing_stripe_strerror(int rc)
{
    switch (rc) {
    case BILLING_STRIPE_OK:
        return "ok";
    case BILLING_STRIPE_MALFORMED:
        return "the Stripe-Signature header is malformed";
    case BILLING_STRIPE_TIMESTAMP:
        return "the signature timestamp is outside the tolerance";
    case BILLING_STRIPE_NO_MATCH:
        return "no signature matches a configured webhook secret";
    default:
        return "internal error";
    }
}


/* HMAC-SHA256(secret, t "." body) into mac[32]; 0 or -1 */
static int
hmac_t_body(EVP_MAC *mac, const char *secret, size_t slen, const char *t,
    size_t tlen, const char *body, size_t blen, unsigned char out[32])
{
    EVP_MAC_CTX  *ctx;
    OSSL_PARAM    params[2];
    size_t        outl;
    int           ok;

    ctx = EVP_MAC_CTX_new(mac);
    if (ctx == NULL) {
        return -1;
    }

    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST,
                                                 (char *) "SHA256", 0);
    params[1] = OSSL_PARAM_construct_end();

    outl = 0;

    ok = EVP_MAC_init(ctx, (const unsigned char *) secret, slen, params) == 1
         && EVP_MAC_update(ctx, (const unsigned char *) t, tlen) == 1
         && EVP_MAC_update(ctx, (const unsigned char *) ".", 1) == 1
         && (blen == 0
             || EVP_MAC_update(ctx, (const unsigned char *) body, blen) == 1)
         && EVP_MAC_final(ctx, out, &outl, 32) == 1
         && outl == 32;

    EVP_MAC_CTX_free(ctx);

    return ok ? 0 : -1;
}


int
billing_stripe_verify(const char *header, size_t hlen, const char *body,
    size_t blen, const char *const *secrets, const size_t *secret_lens,
    size_t nsecrets, int64_t now, int64_t tolerance)
{
    unsigned char   v1[BILLING_STRIPE_MAX_V1][32], mac[32];
    const char     *p, *end, *item, *item_end, *eq, *t;
    size_t          i, j, nv1, tlen, klen, vlen;
    int64_t         tv, diff;
    int             have_t, matched;
    EVP_MAC        *m;

    if (header == NULL || hlen == 0 || hlen > BILLING_STRIPE_HEADER_MAX
        || (body == NULL && blen > 0))
    {
        return BILLING_STRIPE_MALFORMED;
    }

    t = NULL;
    tlen = 0;
    tv = 0;
    have_t = 0;
    nv1 = 0;

    p = header;
    end = header + hlen;

    while (p <= end) {
        item = p;
        item_end = memchr(p, ',', (size_t) (end - p));
        if (item_end == NULL) {
            item_end = end;
        }

        eq = memchr(item, '=', (size_t) (item_end - item));

        /* "scheme=value", both non-empty */
        if (eq == NULL || eq == item || eq + 1 == item_end) {
            return BILLING_STRIPE_MALFORMED;
        }

        klen = (size_t) (eq - item);
        vlen = (size_t) (item_end - (eq + 1));

        for (i = 0; i < (size_t) (item_end - item); i++) {
            unsigned char c = (unsigned char) item[i];
            if (c <= 0x20 || c >= 0x7f) {
                return BILLING_STRIPE_MALFORMED;
            }
        }

        if (klen == 1 && item[0] == 't') {
            if (have_t || vlen > BILLING_T_MAX_DIGITS) {
                return BILLING_STRIPE_MALFORMED;
            }

            for (i = 0; i < vlen; i++) {
                if (eq[1 + i] < '0' || eq[1 + i] > '9') {
                    return BILLING_STRIPE_MALFORMED;
                }
                tv = tv * 10 + (eq[1 + i] - '0');
            }

            have_t = 1;
            t = eq + 1;
            tlen = vlen;

        } else if (klen == 2 && item[0] == 'v' && item[1] == '1') {
            if (vlen != 64) {
                return BILLING_STRIPE_MALFORMED;
            }

            /* more signatures than we keep: ignore the rest */
            if (nv1 < BILLING_STRIPE_MAX_V1) {
                if (billing_hex_decode(eq + 1, 64, v1[nv1], 32) != 0) {
                    return BILLING_STRIPE_MALFORMED;
                }
                nv1++;
            }
        }

        if (item_end == end) {
            break;
        }

        p = item_end + 1;
    }

    if (!have_t || nv1 == 0) {
        return BILLING_STRIPE_MALFORMED;
    }

    m = EVP_MAC_fetch(NULL, "HMAC", NULL);
    if (m == NULL) {
        ERR_clear_error();
        return BILLING_STRIPE_ERROR;
    }

    matched = 0;

    for (i = 0; i < nsecrets && secrets && secret_lens; i++) {
        if (secrets[i] == NULL || secret_lens[i] == 0) {
            continue;
        }

        if (hmac_t_body(m, secrets[i], secret_lens[i], t, tlen, body, blen,
                        mac) != 0)
        {
            EVP_MAC_free(m);
            ERR_clear_error();
            return BILLING_STRIPE_ERROR;
        }

        /* no early exit: the time taken does not depend on which matched */
        for (j = 0; j < nv1; j++) {
            matched |= CRYPTO_memcmp(mac, v1[j], 32) == 0;
        }
    }

    EVP_MAC_free(m);
    OPENSSL_cleanse(mac, sizeof(mac));

    if (!matched) {
        return BILLING_STRIPE_NO_MATCH;
    }

    if (tolerance < 0) {
        tolerance = 0;
    }

    /* tv < 10^12; keep the subtraction defined for any now */
    if (now < -((int64_t) 1 << 62) || now > ((int64_t) 1 << 62)) {
        return BILLING_STRIPE_TIMESTAMP;
    }

    diff = now - tv;
    if (diff < 0) {
        diff = -diff;
    }

    if (diff > tolerance) {
        return BILLING_STRIPE_TIMESTAMP;
    }

    return BILLING_STRIPE_OK;
}


int
billing_hmac_sign(const char *secret, size_t slen, int64_t t,
    const char *body, size_t blen, char out_hex[65])
{
    char            tbuf[24];
    unsigned char   mac[32];
    int             n, rc;
    EVP_MAC        *m;

    out_hex[0] = '\0';

    if (secret == NULL || slen == 0 || (body == NULL && blen > 0)) {
        return -1;
    }

    n = snprintf(tbuf, sizeof(tbuf), "%lld", (long long) t);
    if (n <= 0 || (size_t) n >= sizeof(tbuf)) {
        return -1;
    }

    m = EVP_MAC_fetch(NULL, "HMAC", NULL);
    if (m == NULL) {
        ERR_clear_error();
        return -1;
    }

    rc = hmac_t_body(m, secret, slen, tbuf, (size_t) n, body, blen, mac);

    EVP_MAC_free(m);

    if (rc != 0) {
        ERR_clear_error();
        return -1;
    }

    billing_hex_encode(mac, 32, out_hex);
    OPENSSL_cleanse(mac, sizeof(mac));

    return 0;
}
