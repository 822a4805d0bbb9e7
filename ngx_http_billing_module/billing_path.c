/*
 * ScholarLink Billing: the segments of a request path as the client sent
 * it.
 */

#include <string.h>

#include "billing_path.h"


static int
hex_value(unsigned char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }

    c |= 0x20;

    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }

    return -1;
}


size_t
billing_path_count(const char *p, size_t len)
{
    size_t  i, n;

    if (p == NULL || len == 0 || p[0] != '/') {
        return 0;
    }

    n = 1;

    for (i = 1; i < len; i++) {
        if (p[i] == '/') {
            n++;
        }
    }

    return n;
}


long
billing_path_segment(const char *p, size_t len, size_t count, size_t index,
    char *out, size_t outlen)
{
    size_t      n, start, end, i, slen;
    int         hi, lo;
    const char  *seg;

    if (out == NULL || outlen == 0 || index >= count
        || billing_path_count(p, len) != count)
    {
        return -1;
    }

    /* the bounds of segment `index`; every segment must be non-empty */
    start = 1;
    seg = NULL;
    end = 0;

    for (n = 0; n < count; n++) {
        for (end = start; end < len && p[end] != '/'; end++) {
            /* void */
        }

        if (end == start) {
            return -1;
        }

        if (n == index) {
            seg = p + start;
            break;
        }

        start = end + 1;
    }

    /* the segments after it must be non-empty too */
    for (i = end; i < len; i++) {
        if (p[i] == '/' && (i + 1 == len || p[i + 1] == '/')) {
            return -1;
        }
    }

    if (seg == NULL) {
        return -1;
    }

    slen = end - start;
    n = 0;

    for (i = 0; i < slen; i++) {
        unsigned char  c = (unsigned char) seg[i];

        if (c == '%') {
            if (i + 2 >= slen) {
                return -1;
            }

            hi = hex_value((unsigned char) seg[i + 1]);
            lo = hex_value((unsigned char) seg[i + 2]);

            if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
                return -1;
            }

            c = (unsigned char) (hi << 4 | lo);
            i += 2;

        } else if (c == '\0') {
            return -1;
        }

        if (n + 1 >= outlen) {
            return -1;
        }

        out[n++] = (char) c;
    }

    out[n] = '\0';

    return (long) n;
}
