/*
 * ScholarLink Billing: application/x-www-form-urlencoded bodies.
 */

#include <string.h>

#include "billing_form.h"


static int
unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')
           || (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_'
           || c == '~';
}


size_t
billing_form_encoded_len(const char *s, size_t len)
{
    size_t  i, n;

    for (i = 0, n = 0; i < len; i++) {
        n += unreserved((unsigned char) s[i]) ? 1 : 3;
    }

    return n;
}


static char *
encode(char *d, const char *s, size_t len)
{
    static const char  hex[] = "0123456789ABCDEF";
    size_t             i;

    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char) s[i];

        if (unreserved(c)) {
            *d++ = (char) c;

        } else {
            *d++ = '%';
            *d++ = hex[c >> 4];
            *d++ = hex[c & 0x0f];
        }
    }

    return d;
}


void
billing_form_init(billing_form_t *f, char *buf, size_t cap)
{
    f->buf = buf;
    f->cap = cap;
    f->len = 0;
    f->overflow = (buf == NULL || cap == 0);

    if (!f->overflow) {
        buf[0] = '\0';
    }
}


int
billing_form_append_n(billing_form_t *f, const char *name, size_t nlen,
    const char *value, size_t vlen)
{
    size_t  need, en, ev;
    char   *d;

    if (f->overflow || (name == NULL && nlen) || (value == NULL && vlen)
        || nlen == 0)
    {
        f->overflow = 1;
        return -1;
    }

    /* encoded lengths are at most 3 * len: keep the sums from wrapping */
    if (nlen > (size_t) -1 / 8 || vlen > (size_t) -1 / 8) {
        f->overflow = 1;
        return -1;
    }

    en = billing_form_encoded_len(name, nlen);
    ev = billing_form_encoded_len(value, vlen);
    need = (f->len ? 1 : 0) + en + 1 + ev;

    if (need >= f->cap - f->len) {
        f->overflow = 1;
        return -1;
    }

    d = f->buf + f->len;

    if (f->len) {
        *d++ = '&';
    }

    d = encode(d, name, nlen);
    *d++ = '=';
    d = encode(d, value, vlen);
    *d = '\0';

    f->len += need;

    return 0;
}


int
billing_form_append(billing_form_t *f, const char *name, const char *value)
{
    if (name == NULL || value == NULL) {
        f->overflow = 1;
        return -1;
    }

    return billing_form_append_n(f, name, strlen(name), value, strlen(value));
}
