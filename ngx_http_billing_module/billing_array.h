/*
 * ScholarLink Billing: PostgreSQL array literals of text values, the
 * parameters of a statement that takes one array per field (group commit,
 * ngx_http_billing_batch.c).  Pure core, no nginx types.
 */

#ifndef BILLING_ARRAY_H
#define BILLING_ARRAY_H

#include <stddef.h>

/*
 * The size billing_array_write() needs for n values (each a C string, or
 * NULL for SQL NULL), its terminating NUL included; 0 if that size does not
 * fit in a size_t.
 */
size_t billing_array_size(const char *const *values, size_t n);

/*
 * Writes the literal {"v1","v2",NULL,...} into out (at least
 * billing_array_size() bytes) and returns its length without the NUL.
 * Every value is double-quoted, with '"' and '\' preceded by '\', so that
 * no value can end its element or the array, whatever it holds ("NULL",
 * "", braces, commas, spaces, any byte but NUL); PostgreSQL reads the
 * element back byte for byte, as text, bigint or uuid alike.
 */
size_t billing_array_write(char *out, const char *const *values, size_t n);

/*
 * The inverse, for the literals billing_array_write() makes (tests and
 * fuzzing check the round trip): elements decoded into buf (at least len + 1
 * bytes), each NUL-terminated, elems[i] pointing into buf (NULL for an
 * unquoted NULL).  Returns the number of elements, or -1 when s is not
 * such a literal or has more than max elements.
 */
long billing_array_parse(const char *s, size_t len, char *buf,
    const char **elems, size_t max);

#endif /* BILLING_ARRAY_H */
