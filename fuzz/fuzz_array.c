/*
 * libFuzzer: PostgreSQL array literals (billing_array).  The input is cut
 * into values at each 0x00 byte (0x01 alone is a NULL); the literal made
 * of them must fit its size and read back as the same values.
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "billing_array.h"


#define MAX_VALUES  64


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char         *copy, *out, *buf, *p, *e;
    long          got;
    size_t        n, i, need, len;
    const char   *values[MAX_VALUES], *elems[MAX_VALUES];

    copy = malloc(size + 1);
    memcpy(copy, data, size);
    copy[size] = '\0';

    n = 0;
    p = copy;

    while (n < MAX_VALUES && p <= copy + size) {
        e = p + strlen(p);
        values[n++] = (e == p + 1 && *p == '\x01') ? NULL : p;
        p = e + 1;
    }

    need = billing_array_size(values, n);
    out = malloc(need);
    len = billing_array_write(out, values, n);

    if (len + 1 > need || strlen(out) != len) {
        __builtin_trap();
    }

    buf = malloc((len > size ? len : size) + 1);
    got = billing_array_parse(out, len, buf, elems, MAX_VALUES);

    if (got != (long) n) {
        __builtin_trap();
    }

    for (i = 0; i < n; i++) {
        if (values[i] == NULL ? elems[i] != NULL
            : elems[i] == NULL || strcmp(values[i], elems[i]) != 0)
        {
            __builtin_trap();
        }
    }

    /* and the parser alone, on the raw input, stays in bounds */
    (void) billing_array_parse((const char *) data, size, buf,
                               elems, MAX_VALUES);

    free(buf);
    free(out);
    free(copy);

    return 0;
}
