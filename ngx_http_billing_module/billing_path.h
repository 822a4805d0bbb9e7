/*
 * ScholarLink Billing: the segments of a request path as the client sent
 * it (pure core).
 */

#ifndef BILLING_PATH_H
#define BILLING_PATH_H

#include <stddef.h>

/*
 * The number of segments of the raw path p/len (no query string): "/a/b"
 * has 2.  A path that does not start with '/' has none (0).
 */
size_t billing_path_count(const char *p, size_t len);

/*
 * Copies segment `index` (0-based, counted after the leading '/') of the
 * raw path p/len, percent-decoded and NUL-terminated, into out/outlen
 * (outlen >= len + 1 is always enough), when the path has exactly `count`
 * segments.  Ids in a path are one segment each, so an id that contains
 * '/' arrives as %2F: decoding the raw segment keeps it, where nginx's
 * normalized URI would have split it (and merged slashes, resolved dots).
 *
 * Returns the decoded length, or -1: another number of segments, an empty
 * segment, a malformed escape, a NUL (raw or escaped), or out too small.
 */
long billing_path_segment(const char *p, size_t len, size_t count,
    size_t index, char *out, size_t outlen);

#endif /* BILLING_PATH_H */
