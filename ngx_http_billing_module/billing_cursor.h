/*
 * ScholarLink Billing: opaque cursors of the ledger and the purchase list.
 */

#ifndef BILLING_CURSOR_H
#define BILLING_CURSOR_H

#include <stddef.h>
#include <stdint.h>

/* "c1:" + 19 digits = 22 bytes -> 30 base64url characters + NUL */
#define BILLING_CURSOR_MAX  32

/*
 * Cursor = base64url (no padding) of "c1:<decimal id>", id 1..2^63-1
 * without leading zeros.  encode writes a NUL-terminated string into out
 * (outlen >= BILLING_CURSOR_MAX is always enough); returns 0 or -1.
 * decode accepts exactly that form; returns 0 or -1.
 */
int billing_cursor_encode(int64_t before_id, char *out, size_t outlen);
int billing_cursor_decode(const char *p, size_t len, int64_t *before_id);

/* "p1:" + a UUID = 39 bytes -> 52 base64url characters + NUL */
#define BILLING_PURCHASE_CURSOR_MAX  56

/*
 * The purchase list's cursor: base64url (no padding) of "p1:<uuid>", the
 * last purchase of the previous page, the UUID in lower case.  encode
 * takes a UUID of either case (outlen >= BILLING_PURCHASE_CURSOR_MAX is
 * always enough); decode accepts exactly what encode writes and gives the
 * UUID NUL-terminated in uuid (37 bytes).  Both return 0 or -1.
 */
int billing_purchase_cursor_encode(const char *uuid, size_t len, char *out,
    size_t outlen);
int billing_purchase_cursor_decode(const char *p, size_t len, char *uuid);

#endif /* BILLING_CURSOR_H */
