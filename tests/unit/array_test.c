/*
 * Unit tests: billing_array (PostgreSQL array literals of text values).
 */

#include <stdlib.h>
#include <string.h>

#include "billing_array.h"
#include "tap.h"


static void
round_trip(const char *name, const char *const *v, size_t n)
{
    char         *out, *buf;
    long          got;
    size_t        size, len, i;
    const char   *elems[16];
    int           same;

    size = billing_array_size(v, n);
    out = malloc(size);
    len = billing_array_write(out, v, n);

    ok(len + 1 <= size && strlen(out) == len, "%s: fits its size", name);

    buf = malloc(len + 1);
    got = billing_array_parse(out, len, buf, elems, 16);
    same = got == (long) n;

    for (i = 0; same && i < n; i++) {
        same = (v[i] == NULL) ? elems[i] == NULL
                              : elems[i] && strcmp(v[i], elems[i]) == 0;
    }

    ok(same, "%s: read back element for element", name);

    free(buf);
    free(out);
}


int
main(void)
{
    char         out[256];
    size_t       len;
    const char  *plain[] = { "user-1", "gpt-4o", "1000" };
    const char  *nulls[] = { NULL, "x", NULL };
    const char  *nasty[] = { "a\"b", "c\\d", "{,}", "NULL", "", " sp ",
                             "\\\"", "\xc3\xa9" };
    const char  *elems[4];
    char         buf[64];

    len = billing_array_write(out, plain, 3);
    ok(strcmp(out, "{\"user-1\",\"gpt-4o\",\"1000\"}") == 0
       && len == strlen(out), "three values, each quoted: %s", out);

    len = billing_array_write(out, nulls, 3);
    ok(strcmp(out, "{NULL,\"x\",NULL}") == 0, "NULL unquoted: %s", out);

    len = billing_array_write(out, nasty, 2);
    ok(strcmp(out, "{\"a\\\"b\",\"c\\\\d\"}") == 0,
       "quote and backslash escaped: %s", out);

    len = billing_array_write(out, nasty, 0);
    ok(strcmp(out, "{}") == 0 && len == 2, "no values: {}");
    is_int(billing_array_size(nasty, 0), 3, "size of {} with its NUL");

    is_int(billing_array_size(nulls, 3), strlen("{NULL,\"x\",NULL}") + 1 + 1,
           "size: at most one byte over (the last comma)");

    round_trip("plain", plain, 3);
    round_trip("nulls", nulls, 3);
    round_trip("quotes, backslashes, braces, NULL as text, empty", nasty, 8);

    /* what the parser refuses */
    ok(billing_array_parse("{\"a\"", 4, buf, elems, 4) == -1, "no brace");
    ok(billing_array_parse("{a}", 3, buf, elems, 4) == -1, "unquoted text");
    ok(billing_array_parse("{\"a\",}", 6, buf, elems, 4) == -1,
       "trailing comma");
    ok(billing_array_parse("{\"a\\\"}", 6, buf, elems, 4) == -1,
       "escaped last quote");
    ok(billing_array_parse("{NULL,NULL}", 11, buf, elems, 1) == -1,
       "more than max");
    ok(billing_array_parse("{}", 2, buf, elems, 4) == 0, "empty array");

    return tap_done();
}
