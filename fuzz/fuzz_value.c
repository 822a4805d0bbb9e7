/*
 * libFuzzer: database URL connection_limit extraction.
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "billing_value.h"


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char   err[256], *out;
    long   limit;
    size_t olen;

    if (billing_dburl_take_connection_limit((const char *) data, size, &out,
                                            &limit, err, sizeof(err)) == 0)
    {
        olen = strlen(out);

        /* never longer than the input; the limit is in range */
        if (olen > size || limit < 0 || limit > BILLING_DBURL_LIMIT_MAX
            || (limit == 0 && (olen != size || memcmp(out, data, size))))
        {
            __builtin_trap();
        }

        free(out);
    }

    return 0;
}
