/*
 * ScholarLink Billing: application/x-www-form-urlencoded bodies.
 */

#ifndef BILLING_FORM_H
#define BILLING_FORM_H

#include <stddef.h>

typedef struct {
    char    *buf;        /* caller's buffer, kept NUL-terminated */
    size_t   cap;        /* its size, including room for the NUL */
    size_t   len;        /* bytes written, without the NUL */
    int      overflow;   /* sticky: an append did not fit */
} billing_form_t;

void billing_form_init(billing_form_t *f, char *buf, size_t cap);

/*
 * Append "name=value" (preceded by '&' unless first).  RFC 3986
 * unreserved characters (A-Z a-z 0-9 - . _ ~) are kept, every other byte
 * is %XX (upper-case hex; space is %20), so "metadata[purchase_id]"
 * becomes "metadata%5Bpurchase_id%5D".  An append that does not fit
 * leaves the buffer unchanged, sets f->overflow and returns -1; 0 on
 * success.  The _n variant takes explicit lengths (no NUL needed).
 */
int billing_form_append(billing_form_t *f, const char *name,
    const char *value);
int billing_form_append_n(billing_form_t *f, const char *name, size_t nlen,
    const char *value, size_t vlen);

/* Percent-encoded length of len bytes. */
size_t billing_form_encoded_len(const char *s, size_t len);

#endif /* BILLING_FORM_H */
