/*
 * Unit tests: billing_value (resolve, dburl connection_limit).
 */

#define _POSIX_C_SOURCE 200809L

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "billing_value.h"
#include "tap.h"


static void
write_file(const char *path, const char *data, size_t len)
{
    FILE  *f = fopen(path, "wb");

    if (f) {
        fwrite(data, 1, len, f);
        fclose(f);
    }
}


static void
test_resolve(void)
{
    char    err[256], path[128], spec[160], *out, *big;
    size_t  out_len;
    int     rc;

    setenv("BILLING_T_SECRET", "s3cr3t-value", 1);
    setenv("BILLING_T_EMPTY", "", 1);
    unsetenv("BILLING_T_MISSING");

    rc = billing_value_resolve("env:BILLING_T_SECRET", 20, &out, &out_len,
                               err, sizeof(err));
    ok(rc == 0 && out && strcmp(out, "s3cr3t-value") == 0 && out_len == 12,
       "env: resolves");
    free(out);

    rc = billing_value_resolve("env:BILLING_T_MISSING", 21, &out, &out_len,
                               err, sizeof(err));
    ok(rc == -1 && out == NULL && strstr(err, "BILLING_T_MISSING"),
       "missing env is an error naming it: %s", err);

    rc = billing_value_resolve("env:BILLING_T_EMPTY", 19, &out, &out_len,
                               err, sizeof(err));
    ok(rc == -1 && strstr(err, "BILLING_T_EMPTY") && strstr(err, "empty"),
       "empty env is an error: %s", err);

    rc = billing_value_resolve("env:", 4, &out, &out_len, err, sizeof(err));
    ok(rc == -1, "env: without a name is an error");

    rc = billing_value_resolve("env:A-B", 7, &out, &out_len, err,
                               sizeof(err));
    ok(rc == -1, "env: with an invalid name is an error");

    /* only the spec's bytes count: no NUL termination needed */
    rc = billing_value_resolve("env:BILLING_T_SECRETXXX", 20, &out, &out_len,
                               err, sizeof(err));
    ok(rc == 0 && strcmp(out, "s3cr3t-value") == 0, "env: honours len");
    free(out);

    snprintf(path, sizeof(path), "/tmp/billing_value_test.%ld",
             (long) getpid());
    snprintf(spec, sizeof(spec), "file:%s", path);

    write_file(path, "file-secret\n", 12);
    rc = billing_value_resolve(spec, strlen(spec), &out, &out_len, err,
                               sizeof(err));
    ok(rc == 0 && strcmp(out, "file-secret") == 0 && out_len == 11,
       "file: strips one trailing LF");
    free(out);

    write_file(path, "file-secret\r\n", 13);
    rc = billing_value_resolve(spec, strlen(spec), &out, &out_len, err,
                               sizeof(err));
    ok(rc == 0 && strcmp(out, "file-secret") == 0, "file: strips CRLF");
    free(out);

    write_file(path, "two\n\n", 5);
    rc = billing_value_resolve(spec, strlen(spec), &out, &out_len, err,
                               sizeof(err));
    ok(rc == 0 && strcmp(out, "two\n") == 0, "file: strips only ONE LF");
    free(out);

    write_file(path, "-----BEGIN PUBLIC KEY-----\nabc\n", 31);
    rc = billing_value_resolve(spec, strlen(spec), &out, &out_len, err,
                               sizeof(err));
    ok(rc == 0 && out_len == 30, "file: multi-line content kept");
    free(out);

    write_file(path, "\n", 1);
    rc = billing_value_resolve(spec, strlen(spec), &out, &out_len, err,
                               sizeof(err));
    ok(rc == -1 && strstr(err, "empty"), "file: empty is an error");

    write_file(path, "a\0b", 3);
    rc = billing_value_resolve(spec, strlen(spec), &out, &out_len, err,
                               sizeof(err));
    ok(rc == -1 && strstr(err, "NUL"),
       "file: NUL byte is an error");

    big = malloc(64 * 1024 + 1);
    memset(big, 'x', 64 * 1024 + 1);
    write_file(path, big, 64 * 1024);
    rc = billing_value_resolve(spec, strlen(spec), &out, &out_len, err,
                               sizeof(err));
    ok(rc == 0 && out_len == 64 * 1024, "file: 64 KiB is accepted");
    free(out);

    write_file(path, big, 64 * 1024 + 1);
    rc = billing_value_resolve(spec, strlen(spec), &out, &out_len, err,
                               sizeof(err));
    ok(rc == -1 && strstr(err, "64 KiB"), "file: 64 KiB + 1 is refused");
    free(big);

    write_file(path, "top-secret-password\n", 20);
    unlink(path);
    rc = billing_value_resolve(spec, strlen(spec), &out, &out_len, err,
                               sizeof(err));
    ok(rc == -1 && strstr(err, path) && !strstr(err, "top-secret"),
       "file: missing file names the path: %s", err);

    rc = billing_value_resolve("file:/tmp", 9, &out, &out_len, err,
                               sizeof(err));
    ok(rc == -1 && strstr(err, "regular"), "file: a directory is refused");

    rc = billing_value_resolve("plain literal", 13, &out, &out_len, err,
                               sizeof(err));
    ok(rc == 0 && strcmp(out, "plain literal") == 0 && out_len == 13,
       "literal copy");
    free(out);

    rc = billing_value_resolve("", 0, &out, &out_len, err, sizeof(err));
    ok(rc == 0 && out && out[0] == '\0' && out_len == 0,
       "empty literal is an empty string");
    free(out);

    rc = billing_value_resolve("lit", 3, &out, &out_len, NULL, 0);
    ok(rc == 0, "NULL err buffer is fine");
    free(out);
}


typedef struct {
    const char  *in;
    int          rc;
    const char  *out;
    long         limit;
} dburl_case_t;


static void
test_dburl(void)
{
    static const dburl_case_t  cases[] = {
        { "postgresql://billing_user:pw@prod-postgres.cluster.amazonaws.com"
          ":5432/billing?sslmode=require&connection_limit=10", 0,
          "postgresql://billing_user:pw@prod-postgres.cluster.amazonaws.com"
          ":5432/billing?sslmode=require", 10 },
        { "postgres://u@h/db?connection_limit=5", 0, "postgres://u@h/db", 5 },
        { "postgres://u@h/db?connection_limit=5&sslmode=disable", 0,
          "postgres://u@h/db?sslmode=disable", 5 },
        { "postgres://u@h/db?a=1&connection_limit=1000&b=2", 0,
          "postgres://u@h/db?a=1&b=2", 1000 },
        { "postgres://u@h/db?a=1&connection_limit=7", 0,
          "postgres://u@h/db?a=1", 7 },
        { "postgres://u@h/db?a=1&&connection_limit=7", 0,
          "postgres://u@h/db?a=1", 7 },
        { "POSTGRESQL://u@h/db?connection_limit=3", 0,
          "POSTGRESQL://u@h/db", 3 },
        { "postgres://u:p%40ss@h/db?sslmode=require", 0,
          "postgres://u:p%40ss@h/db?sslmode=require", 0 },
        { "postgres://u@h/db", 0, "postgres://u@h/db", 0 },
        { "postgres://u@h/db?", 0, "postgres://u@h/db?", 0 },
        { "postgres://u@h/db?xconnection_limit=5", 0,
          "postgres://u@h/db?xconnection_limit=5", 0 },
        { "postgres://u@h/db?connection_limit_x=5", 0,
          "postgres://u@h/db?connection_limit_x=5", 0 },
        { "postgres://u@h/db?connection_limit=0", -1, NULL, 0 },
        { "postgres://u@h/db?connection_limit=1001", -1, NULL, 0 },
        { "postgres://u@h/db?connection_limit=", -1, NULL, 0 },
        { "postgres://u@h/db?connection_limit", -1, NULL, 0 },
        { "postgres://u@h/db?connection_limit=-1", -1, NULL, 0 },
        { "postgres://u@h/db?connection_limit=1e3", -1, NULL, 0 },
        { "postgres://u@h/db?connection_limit=99999999999999999999", -1,
          NULL, 0 },
        { "postgres://u@h/db?connection_limit=5&connection_limit=6", -1,
          NULL, 0 },
        { "host=h dbname=db", 0, "host=h dbname=db", 0 },
        { "host=h connection_limit=5", -1, NULL, 0 },
    };

    char    err[256], *out;
    long    limit;
    size_t  i;
    int     rc;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        out = NULL;
        limit = -1;
        rc = billing_dburl_take_connection_limit(cases[i].in,
                                                 strlen(cases[i].in), &out,
                                                 &limit, err, sizeof(err));
        if (cases[i].rc == 0) {
            ok(rc == 0 && out && strcmp(out, cases[i].out) == 0
               && limit == cases[i].limit, "dburl %s -> %s (%ld)",
               cases[i].in, out ? out : "(null)", limit);
        } else {
            ok(rc == -1 && out == NULL && strstr(err, "pw") == NULL,
               "dburl %s rejected: %s", cases[i].in, err);
        }
        free(out);
    }

    /* the password never shows up in errors */
    rc = billing_dburl_take_connection_limit(
        "postgres://u:hunter2@h/db?connection_limit=x", 44, &out, &limit,
        err, sizeof(err));
    ok(rc == -1 && strstr(err, "hunter2") == NULL, "no password in error");
}


static void
test_url_scheme(void)
{
    ok(billing_url_scheme_allowed("https://idp.example/jwks", 24, 0),
       "https URL");
    ok(billing_url_scheme_allowed("HTTPS://idp.example/jwks", 24, 0),
       "the scheme in any case");
    ok(!billing_url_scheme_allowed("http://idp.example/jwks", 23, 0),
       "http refused by default");
    ok(billing_url_scheme_allowed("http://idp.example/jwks", 23, 1),
       "http when allowed");
    ok(billing_url_scheme_allowed("https://idp.example/jwks", 24, 1),
       "https still when http is allowed");
    ok(!billing_url_scheme_allowed("https://", 8, 0),
       "nothing after the scheme");
    ok(!billing_url_scheme_allowed("file:///etc/passwd", 18, 1),
       "another scheme, even with http allowed");
    ok(!billing_url_scheme_allowed("httpsx://idp.example", 20, 1),
       "a longer scheme");
    ok(!billing_url_scheme_allowed("https:/idp.example", 18, 0),
       "one slash");
    ok(!billing_url_scheme_allowed("idp.example/jwks", 16, 1),
       "no scheme");
    ok(!billing_url_scheme_allowed("https://x", 6, 0),
       "only len bytes are read");
    ok(billing_url_scheme_allowed("hTtPs://x", 9, 0),
       "mixed case is the same scheme");
    ok(!billing_url_scheme_allowed("https\x1a//x", 9, 0),
       "only letters are folded");
    ok(!billing_url_scheme_allowed(NULL, 0, 1), "NULL");
}


int
main(void)
{
    test_resolve();
    test_dburl();
    test_url_scheme();

    return tap_done();
}
