/*
 * ScholarLink Billing: pure core helpers.
 */

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "billing_util.h"


static const char  b64url_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";


static int
b64url_value(unsigned char c)
{
    const char  *p;

    p = memchr(b64url_alphabet, c, 64);

    return p ? (int) (p - b64url_alphabet) : -1;
}


int
billing_b64url_encode(const unsigned char *src, size_t len, char *dst,
    size_t dstcap, size_t *outlen)
{
    size_t    i, o, need;
    uint32_t  v;

    need = BILLING_B64URL_ENC_LEN(len);

    /* guard against size_t wrap for absurd len */
    if (len > (((size_t) -1) / 4) * 3 - 3 || dstcap < need + 1) {
        return -1;
    }

    o = 0;

    for (i = 0; i + 2 < len; i += 3) {
        v = ((uint32_t) src[i] << 16) | ((uint32_t) src[i + 1] << 8)
            | src[i + 2];
        dst[o++] = b64url_alphabet[(v >> 18) & 63];
        dst[o++] = b64url_alphabet[(v >> 12) & 63];
        dst[o++] = b64url_alphabet[(v >> 6) & 63];
        dst[o++] = b64url_alphabet[v & 63];
    }

    if (len - i == 1) {
        v = (uint32_t) src[i] << 16;
        dst[o++] = b64url_alphabet[(v >> 18) & 63];
        dst[o++] = b64url_alphabet[(v >> 12) & 63];

    } else if (len - i == 2) {
        v = ((uint32_t) src[i] << 16) | ((uint32_t) src[i + 1] << 8);
        dst[o++] = b64url_alphabet[(v >> 18) & 63];
        dst[o++] = b64url_alphabet[(v >> 12) & 63];
        dst[o++] = b64url_alphabet[(v >> 6) & 63];
    }

    dst[o] = '\0';

    if (outlen) {
        *outlen = o;
    }

    return 0;
}


int
billing_b64url_decode(const char *src, size_t len, unsigned char *dst,
    size_t dstcap, size_t *outlen)
{
    size_t    i, o, rem, need;
    int       c0, c1, c2, c3;
    uint32_t  v;

    rem = len % 4;
    if (rem == 1) {
        return -1;
    }

    need = (len / 4) * 3 + (rem ? rem - 1 : 0);
    if (need > dstcap) {
        return -1;
    }

    o = 0;

    for (i = 0; i + 3 < len; i += 4) {
        c0 = b64url_value((unsigned char) src[i]);
        c1 = b64url_value((unsigned char) src[i + 1]);
        c2 = b64url_value((unsigned char) src[i + 2]);
        c3 = b64url_value((unsigned char) src[i + 3]);

        if ((c0 | c1 | c2 | c3) < 0) {
            return -1;
        }

        v = ((uint32_t) c0 << 18) | ((uint32_t) c1 << 12)
            | ((uint32_t) c2 << 6) | (uint32_t) c3;
        dst[o++] = (unsigned char) (v >> 16);
        dst[o++] = (unsigned char) (v >> 8);
        dst[o++] = (unsigned char) v;
    }

    if (rem == 2) {
        c0 = b64url_value((unsigned char) src[i]);
        c1 = b64url_value((unsigned char) src[i + 1]);

        /* the 4 low bits of c1 are padding and must be zero */
        if ((c0 | c1) < 0 || (c1 & 0x0f)) {
            return -1;
        }

        dst[o++] = (unsigned char) ((c0 << 2) | (c1 >> 4));

    } else if (rem == 3) {
        c0 = b64url_value((unsigned char) src[i]);
        c1 = b64url_value((unsigned char) src[i + 1]);
        c2 = b64url_value((unsigned char) src[i + 2]);

        if ((c0 | c1 | c2) < 0 || (c2 & 0x03)) {
            return -1;
        }

        v = ((uint32_t) c0 << 18) | ((uint32_t) c1 << 12)
            | ((uint32_t) c2 << 6);
        dst[o++] = (unsigned char) (v >> 16);
        dst[o++] = (unsigned char) (v >> 8);
    }

    if (outlen) {
        *outlen = o;
    }

    return 0;
}


void
billing_hex_encode(const unsigned char *src, size_t len, char *dst)
{
    static const char  hex[] = "0123456789abcdef";
    size_t             i;

    for (i = 0; i < len; i++) {
        dst[2 * i] = hex[src[i] >> 4];
        dst[2 * i + 1] = hex[src[i] & 0x0f];
    }

    dst[2 * len] = '\0';
}


static int
hex_value(unsigned char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}


int
billing_hex_decode(const char *src, size_t len, unsigned char *dst,
    size_t dstcap)
{
    size_t  i;
    int     hi, lo;

    if (len % 2 || len / 2 > dstcap) {
        return -1;
    }

    for (i = 0; i < len; i += 2) {
        hi = hex_value((unsigned char) src[i]);
        lo = hex_value((unsigned char) src[i + 1]);

        if ((hi | lo) < 0) {
            return -1;
        }

        dst[i / 2] = (unsigned char) ((hi << 4) | lo);
    }

    return 0;
}


size_t
billing_utf8_seq_len(const unsigned char *p, size_t len)
{
    unsigned char  c;

    if (len == 0) {
        return 0;
    }

    c = p[0];

    if (c < 0x80) {
        return 1;
    }

    /* C0, C1 (overlong 2-byte lead) and F5..FF never appear */
    if (c < 0xc2 || c > 0xf4) {
        return 0;
    }

    if (c < 0xe0) {
        if (len < 2 || (p[1] & 0xc0) != 0x80) {
            return 0;
        }
        return 2;
    }

    if (c < 0xf0) {
        if (len < 3 || (p[1] & 0xc0) != 0x80 || (p[2] & 0xc0) != 0x80) {
            return 0;
        }
        if (c == 0xe0 && p[1] < 0xa0) {
            return 0;                   /* overlong */
        }
        if (c == 0xed && p[1] > 0x9f) {
            return 0;                   /* UTF-16 surrogate */
        }
        return 3;
    }

    if (len < 4 || (p[1] & 0xc0) != 0x80 || (p[2] & 0xc0) != 0x80
        || (p[3] & 0xc0) != 0x80)
    {
        return 0;
    }
    if (c == 0xf0 && p[1] < 0x90) {
        return 0;                       /* overlong */
    }
    if (c == 0xf4 && p[1] > 0x8f) {
        return 0;                       /* above U+10FFFF */
    }

    return 4;
}


int
billing_is_printable_utf8(const char *p, size_t len)
{
    const unsigned char  *s = (const unsigned char *) p;
    size_t                i, n;

    for (i = 0; i < len; i += n) {
        n = billing_utf8_seq_len(s + i, len - i);
        if (n == 0) {
            return 0;
        }
        if (n == 1 && (s[i] < 0x20 || s[i] == 0x7f)) {
            return 0;
        }
        /* C1 controls U+0080..U+009F */
        if (n == 2 && s[i] == 0xc2 && s[i + 1] < 0xa0) {
            return 0;
        }
    }

    return 1;
}


int
billing_bytes_in(const char *p, size_t len, unsigned char lo,
    unsigned char hi)
{
    size_t  i;

    for (i = 0; i < len; i++) {
        if ((unsigned char) p[i] < lo || (unsigned char) p[i] > hi) {
            return 0;
        }
    }

    return 1;
}


int
billing_contains(const char *p, size_t len, const char *needle)
{
    size_t  i, n;

    n = strlen(needle);

    for (i = 0; n <= len && i <= len - n; i++) {
        if (memcmp(p + i, needle, n) == 0) {
            return 1;
        }
    }

    return 0;
}


int
billing_fail(int rc, char *err, size_t errlen, const char *fmt, ...)
{
    va_list  ap;

    if (err && errlen) {
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }

    return rc;
}


size_t
billing_json_compact(char *p, size_t len)
{
    int     in_string, escaped;
    char    c;
    size_t  i, n;

    n = 0;
    in_string = 0;
    escaped = 0;

    for (i = 0; i < len; i++) {
        c = p[i];

        if (in_string) {
            if (escaped) {
                escaped = 0;

            } else if (c == '\\') {
                escaped = 1;

            } else if (c == '"') {
                in_string = 0;
            }

        } else if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
            continue;

        } else if (c == '"') {
            in_string = 1;
        }

        p[n++] = c;
    }

    return n;
}


int
billing_json_prescan(const char *p, size_t len)
{
    const unsigned char  *s = (const unsigned char *) p;
    size_t                i;
    int                   in_string;

    in_string = 0;

    for (i = 0; i < len; i++) {

        if (!in_string) {
            if (s[i] == '"') {
                in_string = 1;

            } else if (s[i] < 0x20 && s[i] != ' ' && s[i] != '\t'
                       && s[i] != '\n' && s[i] != '\r')
            {
                return -1;
            }

            continue;
        }

        if (s[i] < 0x20) {
            return -1;
        }

        if (s[i] == '"') {
            in_string = 0;
            continue;
        }

        if (s[i] != '\\') {
            continue;
        }

        /* escape: look at the next byte, skip it */
        if (i + 1 >= len) {
            return -1;
        }

        i++;

        if (s[i] == 'u' && len - i > 4 && memcmp(s + i + 1, "0000", 4) == 0) {
            return -1;
        }

        if (s[i] < 0x20) {
            return -1;
        }
    }

    return 0;
}


/* shared writer: appends whole chunks only, tracks the needed length */
typedef struct {
    char    *dst;
    size_t   cap;
    size_t   need;
    int      full;
} esc_out_t;


static void
esc_put(esc_out_t *o, const char *s, size_t n)
{
    if (!o->full && o->cap > 0 && o->need + n <= o->cap - 1) {
        memcpy(o->dst + o->need, s, n);

    } else {
        o->full = 1;
    }

    if (!o->full) {
        o->need += n;
        return;
    }

    /* once truncated, only count (the written prefix stays consistent) */
    if (o->need <= (size_t) -1 - n) {
        o->need += n;
    }
}


static size_t
esc_finish(esc_out_t *o, size_t written)
{
    if (o->cap > 0) {
        o->dst[written] = '\0';
    }
    return o->need;
}


size_t
billing_json_escape(char *dst, size_t dstlen, const char *src, size_t len)
{
    static const char     hex[] = "0123456789abcdef";
    const unsigned char  *s = (const unsigned char *) src;
    esc_out_t             o;
    size_t                i, n, written;
    char                  u[6];

    o.dst = dst;
    o.cap = dstlen;
    o.need = 0;
    o.full = 0;
    written = 0;

    for (i = 0; i < len; i += n) {
        n = billing_utf8_seq_len(s + i, len - i);

        if (n == 0) {
            esc_put(&o, "\\ufffd", 6);
            n = 1;

        } else if (n == 1 && (s[i] == '"' || s[i] == '\\')) {
            u[0] = '\\';
            u[1] = (char) s[i];
            esc_put(&o, u, 2);

        } else if (n == 1 && (s[i] < 0x20 || s[i] == 0x7f)) {
            u[0] = '\\';
            u[1] = 'u';
            u[2] = '0';
            u[3] = '0';
            u[4] = hex[s[i] >> 4];
            u[5] = hex[s[i] & 0x0f];
            esc_put(&o, u, 6);

        } else {
            esc_put(&o, src + i, n);
        }

        if (!o.full) {
            written = o.need;
        }
    }

    return esc_finish(&o, written);
}
