/*
 * ScholarLink Billing: pure core helpers (no nginx types).
 *
 * Base64url, hex, UTF-8 sequence checks, a JSON pre-scanner and the
 * escaper for problem+json details.
 */

#ifndef BILLING_UTIL_H
#define BILLING_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* Encoded length (no padding, no NUL) of n bytes in base64url. */
#define BILLING_B64URL_ENC_LEN(n) \
    (((n) / 3) * 4 + (((n) % 3) ? ((n) % 3) + 1 : 0))

/* Upper bound of the decoded size of n base64url characters. */
#define BILLING_B64URL_DEC_MAX(n)  ((((n) + 3) / 4) * 3)

/*
 * Encode src as base64url without padding into dst, NUL-terminated.
 * Returns 0, or -1 when dstcap < BILLING_B64URL_ENC_LEN(len) + 1.
 * *outlen (may be NULL) receives the length without the NUL.
 */
int billing_b64url_encode(const unsigned char *src, size_t len, char *dst,
    size_t dstcap, size_t *outlen);

/*
 * Strict base64url decoding: alphabet [A-Za-z0-9_-] only, no padding, no
 * whitespace, len % 4 != 1, unused trailing bits must be zero (so every
 * byte string has exactly one accepted encoding).
 * Returns 0, or -1 on invalid input or when dstcap is too small.
 */
int billing_b64url_decode(const char *src, size_t len, unsigned char *dst,
    size_t dstcap, size_t *outlen);

/* Lower-case hex of len bytes; dst must hold 2 * len + 1 bytes. */
void billing_hex_encode(const unsigned char *src, size_t len, char *dst);

/*
 * Hex decode exactly len characters (either case) into len / 2 bytes.
 * Returns 0, or -1 on odd length, invalid digit or dstcap too small.
 */
int billing_hex_decode(const char *src, size_t len, unsigned char *dst,
    size_t dstcap);

/*
 * Length (1..4) of the strictly valid UTF-8 sequence at p (no overlongs,
 * no surrogates, max U+10FFFF), or 0 if p does not start one.
 */
size_t billing_utf8_seq_len(const unsigned char *p, size_t len);

/*
 * Pre-scan of JSON text, before handing it to cJSON (which silently skips
 * every byte <= 0x20 as whitespace and truncates strings at \u0000):
 * rejects raw control characters inside strings, control characters other
 * than JSON whitespace outside strings, and the \u0000 escape.
 * Returns 0 when acceptable, -1 otherwise.
 */
int billing_json_prescan(const char *p, size_t len);

/*
 * Removes the whitespace between the tokens of JSON text, in place: what
 * PostgreSQL's json_build_object writes ("a" : 1, "b" : 2) becomes
 * {"a":1,"b":2}.  Strings are copied as they are, escapes included.
 * Returns the new length (never more than len).
 */
size_t billing_json_compact(char *p, size_t len);

/*
 * Escape src for use inside a JSON string literal (without the quotes):
 * '"' and '\' are backslash-escaped, control characters (< 0x20, 0x7F)
 * become \u00XX, invalid UTF-8 bytes become \ufffd.
 * Writes at most dstlen - 1 bytes, never splitting an escape, and
 * NUL-terminates when dstlen > 0.  Returns the length the full output
 * needs (without NUL): output is complete iff return < dstlen.
 */
size_t billing_json_escape(char *dst, size_t dstlen, const char *src,
    size_t len);

/* 1 if p is valid UTF-8 without C0, DEL or C1 control characters. */
int billing_is_printable_utf8(const char *p, size_t len);

/* 1 if every one of the len bytes at p is from lo to hi, else 0. */
int billing_bytes_in(const char *p, size_t len, unsigned char lo,
    unsigned char hi);

/* 1 if the NUL-terminated needle occurs in the len bytes at p, else 0. */
int billing_contains(const char *p, size_t len, const char *needle);

/*
 * printf-style message into err (when err && errlen), always returning rc:
 * "return billing_fail(CODE, err, errlen, ...)" reports and fails at once.
 */
int billing_fail(int rc, char *err, size_t errlen, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;

#endif /* BILLING_UTIL_H */
