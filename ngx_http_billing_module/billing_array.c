/*
 * ScholarLink Billing: PostgreSQL array literals of text values.
 */

#include <stdint.h>
#include <string.h>

#include "billing_array.h"


size_t
billing_array_size(const char *const *values, size_t n)
{
    size_t       i, size, add;
    const char  *p;

    size = sizeof("{}");     /* the braces and the NUL */

    for (i = 0; i < n; i++) {
        if (values[i] == NULL) {
            add = sizeof("NULL,") - 1;

        } else {
            /* the quotes, the comma, and each byte escaped at worst */
            add = 3;

            for (p = values[i]; *p; p++) {
                add += (*p == '"' || *p == '\\') ? 2 : 1;

                if (add > SIZE_MAX / 2) {
                    return 0;
                }
            }
        }

        if (size > SIZE_MAX - add) {
            return 0;
        }

        size += add;
    }

    return size;
}


size_t
billing_array_write(char *out, const char *const *values, size_t n)
{
    char        *d;
    size_t       i;
    const char  *p;

    d = out;
    *d++ = '{';

    for (i = 0; i < n; i++) {
        if (i) {
            *d++ = ',';
        }

        if (values[i] == NULL) {
            memcpy(d, "NULL", 4);
            d += 4;
            continue;
        }

        *d++ = '"';

        for (p = values[i]; *p; p++) {
            if (*p == '"' || *p == '\\') {
                *d++ = '\\';
            }

            *d++ = *p;
        }

        *d++ = '"';
    }

    *d++ = '}';
    *d = '\0';

    return (size_t) (d - out);
}


long
billing_array_parse(const char *s, size_t len, char *buf, const char **elems,
    size_t max)
{
    size_t       n;
    const char  *end;

    if (len < 2 || s[0] != '{' || s[len - 1] != '}') {
        return -1;
    }

    end = s + len - 1;
    s++;
    n = 0;

    if (s == end) {
        return 0;
    }

    for ( ;; ) {
        if (n == max) {
            return -1;
        }

        if ((size_t) (end - s) >= 4 && memcmp(s, "NULL", 4) == 0) {
            elems[n++] = NULL;
            s += 4;

        } else if (*s == '"') {
            elems[n++] = buf;

            for (s++; s < end && *s != '"'; s++) {
                if (*s == '\\') {
                    s++;
                    if (s == end) {
                        return -1;
                    }
                }

                if (*s == '\0') {
                    return -1;
                }

                *buf++ = *s;
            }

            if (s == end) {
                return -1;
            }

            *buf++ = '\0';
            s++;

        } else {
            return -1;
        }

        if (s == end) {
            return (long) n;
        }

        if (*s != ',') {
            return -1;
        }

        s++;

        if (s == end) {
            return -1;
        }
    }
}
