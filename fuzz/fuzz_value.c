/*
 * libFuzzer: database URL connection_limit extraction, URL schemes.
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

    /* allowing http never refuses an https URL */
    if (billing_url_scheme_allowed((const char *) data, size, 0)
        && !billing_url_scheme_allowed((const char *) data, size, 1))
    {
        __builtin_trap();
    }

    return 0;
}
