/*
 * ScholarLink Billing: configuration values (pure core, no nginx types).
 */

#ifndef BILLING_VALUE_H
#define BILLING_VALUE_H

#include <stddef.h>

#define BILLING_VALUE_FILE_MAX      (64 * 1024)
#define BILLING_DBURL_LIMIT_MAX     1000

/*
 * Resolve a configuration value:
 *   "env:NAME"  -> getenv(NAME); unset or empty is an error,
 *   "file:PATH" -> contents of the regular file PATH (at most 64 KiB), with
 *                  ONE trailing "\n" or "\r\n" removed; empty is an error,
 *   otherwise   -> the literal bytes.
 * A value containing a NUL byte is an error (it is used as a C string).
 * On success returns 0 and *out is a malloc'd NUL-terminated copy (caller
 * free()s it), *out_len its length.  On failure returns -1, *out is NULL
 * and err (if errlen > 0) names the variable or path, never the value.
 * Not thread-safe with concurrent setenv() (getenv); call at config time.
 */
int billing_value_resolve(const char *spec, size_t len, char **out,
    size_t *out_len, char *err, size_t errlen);

/*
 * Remove a "connection_limit=N" query parameter (N 1..1000) from a
 * postgres:// or postgresql:// URL.  Everything else is kept byte for byte;
 * the separator belonging to the removed parameter is dropped, and so is a
 * "?" left with nothing after it.  *limit = N, or 0 when absent.
 * Strings that are not postgres URLs (libpq keyword/value strings) are
 * copied unchanged with *limit = 0, unless they mention connection_limit,
 * which is an error.  A repeated or malformed connection_limit is an error.
 * On success returns 0 and *out_url is malloc'd and NUL-terminated (free()).
 * Errors never quote the URL (it may hold a password).
 */
int billing_dburl_take_connection_limit(const char *url, size_t len,
    char **out_url, long *limit, char *err, size_t errlen);

/*
 * 1 when url is an https:// URL with something after the scheme (the
 * scheme's case does not matter), or, with allow_http, an http:// one;
 * 0 otherwise (another scheme, no scheme, nothing after it).  Keys fetched
 * over plain HTTP could be replaced by anyone on the path.
 */
int billing_url_scheme_allowed(const char *url, size_t len, int allow_http);

#endif /* BILLING_VALUE_H */
