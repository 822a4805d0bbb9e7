/*
 * ScholarLink Billing: configuration values.
 */

#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "billing_util.h"
#include "billing_value.h"


#define BILLING_ENV_NAME_MAX   255
#define BILLING_PATH_MAX       4096


static void
set_err(char *err, size_t errlen, const char *fmt, const char *arg)
{
    if (err == NULL || errlen == 0) {
        return;
    }

    snprintf(err, errlen, fmt, arg ? arg : "");
}


static char *
dup_bytes(const char *p, size_t len)
{
    char  *d;

    d = malloc(len + 1);
    if (d == NULL) {
        return NULL;
    }

    if (len) {
        memcpy(d, p, len);
    }
    d[len] = '\0';

    return d;
}


/* the resolved value: a malloc'd, NUL-terminated copy of len bytes */
static int
set_out(const char *p, size_t len, char **out, size_t *out_len, char *err,
    size_t errlen)
{
    *out = dup_bytes(p, len);
    if (*out == NULL) {
        set_err(err, errlen, "out of memory", NULL);
        return -1;
    }

    *out_len = len;

    return 0;
}


static int
resolve_env(const char *name, size_t nlen, char **out, size_t *out_len,
    char *err, size_t errlen)
{
    char         buf[BILLING_ENV_NAME_MAX + 1];
    const char  *v;
    size_t       i, vlen;

    if (nlen == 0 || nlen > BILLING_ENV_NAME_MAX) {
        set_err(err, errlen, "invalid environment variable name in \"env:\"",
                NULL);
        return -1;
    }

    for (i = 0; i < nlen; i++) {
        unsigned char c = (unsigned char) name[i];

        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')
              || (c >= '0' && c <= '9') || c == '_'))
        {
            set_err(err, errlen, "invalid environment variable name in "
                    "\"env:\"", NULL);
            return -1;
        }
    }

    memcpy(buf, name, nlen);
    buf[nlen] = '\0';

    v = getenv(buf);

    if (v == NULL) {
        set_err(err, errlen, "environment variable \"%s\" is not set", buf);
        return -1;
    }

    vlen = strlen(v);

    if (vlen == 0) {
        set_err(err, errlen, "environment variable \"%s\" is empty", buf);
        return -1;
    }

    return set_out(v, vlen, out, out_len, err, errlen);
}


static int
resolve_file(const char *path, size_t plen, char **out, size_t *out_len,
    char *err, size_t errlen)
{
    char         pbuf[BILLING_PATH_MAX + 1], msg[256];
    char        *data;
    int          fd;
    size_t       total;
    ssize_t      n;
    struct stat  st;

    if (plen == 0 || plen > BILLING_PATH_MAX || memchr(path, '\0', plen)) {
        set_err(err, errlen, "invalid path in \"file:\"", NULL);
        return -1;
    }

    memcpy(pbuf, path, plen);
    pbuf[plen] = '\0';

    /* O_NONBLOCK: a FIFO must not hang the master process */
    fd = open(pbuf, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd == -1) {
        snprintf(msg, sizeof(msg), "%%s: %s", strerror(errno));
        set_err(err, errlen, msg, pbuf);
        return -1;
    }

    if (fstat(fd, &st) == -1 || !S_ISREG(st.st_mode)) {
        close(fd);
        set_err(err, errlen, "%s: not a regular file", pbuf);
        return -1;
    }

    data = malloc(BILLING_VALUE_FILE_MAX + 2);
    if (data == NULL) {
        close(fd);
        set_err(err, errlen, "out of memory", NULL);
        return -1;
    }

    /* read one byte more than allowed to detect oversized files */
    total = 0;

    while (total < BILLING_VALUE_FILE_MAX + 1) {
        n = read(fd, data + total, BILLING_VALUE_FILE_MAX + 1 - total);

        if (n == -1) {
            if (errno == EINTR) {
                continue;
            }
            snprintf(msg, sizeof(msg), "%%s: read failed: %s",
                     strerror(errno));
            set_err(err, errlen, msg, pbuf);
            goto failed;
        }

        if (n == 0) {
            break;
        }

        total += (size_t) n;
    }

    close(fd);
    fd = -1;

    if (total > BILLING_VALUE_FILE_MAX) {
        set_err(err, errlen, "%s: file is larger than 64 KiB", pbuf);
        goto failed;
    }

    if (total && data[total - 1] == '\n') {
        total--;
        if (total && data[total - 1] == '\r') {
            total--;
        }
    }

    if (total == 0) {
        set_err(err, errlen, "%s: file is empty", pbuf);
        goto failed;
    }

    if (memchr(data, '\0', total)) {
        set_err(err, errlen, "%s: file contains a NUL byte", pbuf);
        goto failed;
    }

    data[total] = '\0';
    *out = data;
    *out_len = total;

    return 0;

failed:

    if (fd != -1) {
        close(fd);
    }

    /* the buffer may hold part of a secret */
    memset(data, 0, BILLING_VALUE_FILE_MAX + 2);
    free(data);

    return -1;
}


int
billing_value_resolve(const char *spec, size_t len, char **out,
    size_t *out_len, char *err, size_t errlen)
{
    *out = NULL;
    *out_len = 0;

    if (err && errlen) {
        err[0] = '\0';
    }

    if (spec == NULL && len) {
        set_err(err, errlen, "invalid value", NULL);
        return -1;
    }

    if (len >= 4 && memcmp(spec, "env:", 4) == 0) {
        return resolve_env(spec + 4, len - 4, out, out_len, err, errlen);
    }

    if (len >= 5 && memcmp(spec, "file:", 5) == 0) {
        return resolve_file(spec + 5, len - 5, out, out_len, err, errlen);
    }

    if (len && memchr(spec, '\0', len)) {
        set_err(err, errlen, "value contains a NUL byte", NULL);
        return -1;
    }

    return set_out(spec, len, out, out_len, err, errlen);
}


static int
has_prefix_ci(const char *p, size_t len, const char *prefix)
{
    size_t  i, n;

    n = strlen(prefix);
    if (len < n) {
        return 0;
    }

    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char) p[i];

        if (c >= 'A' && c <= 'Z') {
            c = (unsigned char) (c - 'A' + 'a');
        }
        if (c != (unsigned char) prefix[i]) {
            return 0;
        }
    }

    return 1;
}


int
billing_dburl_take_connection_limit(const char *url, size_t len,
    char **out_url, long *limit, char *err, size_t errlen)
{
    static const char  key[] = "connection_limit";
    const char        *q, *qend, *seg, *segend, *eq, *d;
    char              *o;
    size_t             qpos, qlen, o_len, i, klen;
    long               n;
    int                found, first;

    *out_url = NULL;
    *limit = 0;

    if (err && errlen) {
        err[0] = '\0';
    }

    if (url == NULL || memchr(url, '\0', len)) {
        set_err(err, errlen, "invalid database URL", NULL);
        return -1;
    }

    if (!has_prefix_ci(url, len, "postgres://")
        && !has_prefix_ci(url, len, "postgresql://"))
    {
        if (billing_contains(url, len, key)) {
            set_err(err, errlen, "connection_limit is only supported in "
                    "postgres:// or postgresql:// URLs", NULL);
            return -1;
        }

        *out_url = dup_bytes(url, len);
        if (*out_url == NULL) {
            set_err(err, errlen, "out of memory", NULL);
            return -1;
        }
        return 0;
    }

    q = memchr(url, '?', len);
    if (q == NULL) {
        goto unchanged;
    }

    qpos = (size_t) (q - url);

    /* a fragment (not used by libpq, but be exact) ends the query */
    qend = memchr(q, '#', len - qpos);
    if (qend == NULL) {
        qend = url + len;
    }

    qlen = (size_t) (qend - (q + 1));
    klen = sizeof(key) - 1;

    /* the output is never longer than the input */
    o = malloc(len + 1);
    if (o == NULL) {
        set_err(err, errlen, "out of memory", NULL);
        return -1;
    }

    memcpy(o, url, qpos);
    o_len = qpos;

    found = 0;
    first = 1;
    n = 0;

    for (seg = q + 1; seg <= q + 1 + qlen; seg = segend + 1) {
        segend = memchr(seg, '&', (size_t) (qend - seg));
        if (segend == NULL) {
            segend = qend;
        }

        eq = memchr(seg, '=', (size_t) (segend - seg));

        if (eq && (size_t) (eq - seg) == klen
            && memcmp(seg, key, klen) == 0)
        {
            if (found) {
                set_err(err, errlen, "connection_limit is given more than "
                        "once", NULL);
                goto failed;
            }

            found = 1;
            n = 0;

            if (eq + 1 == segend || segend - (eq + 1) > 4) {
                set_err(err, errlen, "connection_limit must be an integer "
                        "between 1 and 1000", NULL);
                goto failed;
            }

            for (d = eq + 1; d < segend; d++) {
                if (*d < '0' || *d > '9') {
                    set_err(err, errlen, "connection_limit must be an "
                            "integer between 1 and 1000", NULL);
                    goto failed;
                }
                n = n * 10 + (*d - '0');
            }

            if (n < 1 || n > BILLING_DBURL_LIMIT_MAX) {
                set_err(err, errlen, "connection_limit must be an integer "
                        "between 1 and 1000", NULL);
                goto failed;
            }

        } else if ((size_t) (segend - seg) >= klen
                   && memcmp(seg, key, klen) == 0
                   && (size_t) (segend - seg) == klen)
        {
            /* "connection_limit" without a value */
            set_err(err, errlen, "connection_limit must be an integer "
                    "between 1 and 1000", NULL);
            goto failed;

        } else if (segend != seg) {
            /* empty segments ("&&", "?&") carry nothing: dropped */
            o[o_len++] = first ? '?' : '&';
            first = 0;
            memcpy(o + o_len, seg, (size_t) (segend - seg));
            o_len += (size_t) (segend - seg);
        }

        if (segend == qend) {
            break;
        }
    }

    if (!found) {
        free(o);
        goto unchanged;
    }

    /* the fragment, if any, is kept as it was */
    i = (size_t) ((url + len) - qend);
    memcpy(o + o_len, qend, i);
    o_len += i;
    o[o_len] = '\0';

    *out_url = o;
    *limit = n;

    return 0;

failed:

    free(o);
    return -1;

unchanged:

    *out_url = dup_bytes(url, len);
    if (*out_url == NULL) {
        set_err(err, errlen, "out of memory", NULL);
        return -1;
    }

    return 0;
}


/* "scheme://" at the start of url, in any case, with more after it */
static int
has_scheme(const char *url, size_t len, const char *scheme)
{
    size_t          i, n;
    unsigned char   c;

    n = strlen(scheme);

    if (len <= n) {
        return 0;
    }

    for (i = 0; i < n; i++) {
        c = (unsigned char) url[i];

        if (c >= 'A' && c <= 'Z') {
            c |= 0x20;
        }

        if (c != (unsigned char) scheme[i]) {
            return 0;
        }
    }

    return 1;
}


int
billing_url_scheme_allowed(const char *url, size_t len, int allow_http)
{
    if (url == NULL) {
        return 0;
    }

    return has_scheme(url, len, "https://")
           || (allow_http && has_scheme(url, len, "http://"));
}
