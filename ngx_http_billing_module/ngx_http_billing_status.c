
/*
 * ScholarLink Billing: /health, /readyz and /metrics.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_billing.h"
#include "ngx_http_billing_db.h"
#include "ngx_http_billing_metrics.h"
#include "ngx_http_billing_response.h"
#include "ngx_http_billing_status.h"

#include "billing_json.h"


static ngx_int_t ngx_http_billing_readyz_done(ngx_http_request_t *r,
    ngx_http_billing_pg_op_t *op);
static ngx_int_t ngx_http_billing_not_ready(ngx_http_request_t *r,
    const char *database, const char *migrations);


/* liveness: answers from memory, never touches the database */
ngx_int_t
ngx_http_billing_health_handler(ngx_http_request_t *r)
{
    static u_char  ok[] = "{\"status\":\"ok\"}";

    return ngx_http_billing_send_json(r, NGX_HTTP_OK, ok, sizeof(ok) - 1);
}


/* every outcome, a refusal of the pool's included, answers in _done() */
ngx_int_t
ngx_http_billing_readyz_handler(ngx_http_request_t *r)
{
    return ngx_http_billing_read(r,
                                 "SELECT status, code, body, meta "
                                 "FROM billing.api_readyz()",
                                 0, NULL, ngx_http_billing_readyz_done);
}


static ngx_int_t
ngx_http_billing_readyz_done(ngx_http_request_t *r,
    ngx_http_billing_pg_op_t *op)
{
    int64_t                  version;
    ngx_http_billing_row_t   row;

    static u_char  ready[] = "{\"status\":\"ready\",\"checks\":"
                             "{\"database\":\"ok\",\"migrations\":\"ok\"}}";

    if (op->status == NGX_HTTP_BILLING_PG_SQL_ERROR) {
        /* reachable, but the schema is missing or broken */
        return ngx_http_billing_not_ready(r, "ok", "missing");
    }

    if (ngx_http_billing_api_row(r, op, &row) != NGX_OK) {
        return ngx_http_billing_not_ready(r, "unavailable", "unknown");
    }

    /* body: {"schemaVersion": N}; absent reads as 0, i.e. outdated */
    if (billing_json_uint_member((const char *) row.body.data, row.body.len,
                                 "schemaVersion", &version)
        != 0)
    {
        version = 0;
    }

    if (version < NGX_HTTP_BILLING_SCHEMA_VERSION) {
        return ngx_http_billing_not_ready(r, "ok", "outdated");
    }

    return ngx_http_billing_send_json(r, NGX_HTTP_OK, ready, sizeof(ready) - 1);
}


static ngx_int_t
ngx_http_billing_not_ready(ngx_http_request_t *r, const char *database,
    const char *migrations)
{
    u_char  *p, *last;

    p = ngx_pnalloc(r->pool, 128);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    last = ngx_snprintf(p, 128, "{\"status\":\"not_ready\",\"checks\":"
                        "{\"database\":\"%s\",\"migrations\":\"%s\"}}",
                        database, migrations);

    return ngx_http_billing_send_json(r, NGX_HTTP_SERVICE_UNAVAILABLE, p,
                                      last - p);
}


ngx_int_t
ngx_http_billing_metrics_handler(ngx_http_request_t *r)
{
    size_t        len;
    ngx_int_t     rc;
    ngx_chain_t  *out;

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    out = ngx_http_billing_metrics_render(r->pool, &len);
    if (out == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = len;
    ngx_str_set(&r->headers_out.content_type,
                "text/plain; version=0.0.4; charset=utf-8");
    r->headers_out.content_type_len = r->headers_out.content_type.len;

    if (r->method == NGX_HTTP_HEAD) {
        r->header_only = 1;
    }

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    return ngx_http_output_filter(r, out);
}
