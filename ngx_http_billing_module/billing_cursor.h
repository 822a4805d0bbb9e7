/*
 * ScholarLink Billing: opaque ledger cursors.
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

#endif /* BILLING_CURSOR_H */
