
/*
 * ScholarLink Billing: Stripe webhooks (docs/spec.md §4.2).
 *
 * POST /webhooks/stripe: the raw body is verified against every configured
 * webhook secret before anything else, then handed to api_stripe_event()
 * in one call, which deduplicates and credits in one transaction.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <cjson/cJSON.h>

#include "ngx_http_billing.h"
#include "ngx_http_billing_db.h"
#include "ngx_http_billing_metrics.h"
#include "ngx_http_billing_request.h"
#include "ngx_http_billing_response.h"
#include "ngx_http_billing_webhook.h"

#include "billing_json.h"
#include "billing_stripe.h"


static ngx_int_t ngx_http_billing_webhook_body(ngx_http_request_t *r,
    ngx_str_t *body, void *data);
static ngx_int_t ngx_http_billing_webhook_verify(ngx_http_request_t *r,
    ngx_str_t *body, const char **detail);
static ngx_int_t ngx_http_billing_webhook_type(ngx_http_request_t *r,
    ngx_str_t *body, ngx_str_t *type);
static ngx_int_t ngx_http_billing_webhook_done(ngx_http_request_t *r,
    ngx_http_billing_pg_op_t *op);


ngx_int_t
ngx_http_billing_webhook_handler(ngx_http_request_t *r)
{
    ngx_http_billing_main_conf_t  *bmcf;

    bmcf = ngx_http_get_module_main_conf(r, ngx_http_billing_module);

    if (bmcf->stripe_webhook_secrets == NULL
        || bmcf->stripe_webhook_secrets->nelts == 0)
    {
        /* 503: Stripe keeps the event and retries once this is fixed */
        return ngx_http_billing_not_configured(r, "webhook_not_configured",
                                               "webhooks are not configured",
                                               "webhook received but no "
                                               "billing_stripe_webhook_secret "
                                               "is configured");
    }

    /*
     * No content-type check: Stripe sends "application/json;
     * charset=utf-8", and the signature, checked first, is what proves
     * the body.
     */
    return ngx_http_billing_read_body(r, ngx_http_billing_webhook_body, NULL);
}


static ngx_int_t
ngx_http_billing_webhook_body(ngx_http_request_t *r, ngx_str_t *body,
    void *data)
{
    ngx_int_t                rc;
    const char              *detail;
    ngx_http_billing_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_billing_module);

    rc = ngx_http_billing_webhook_verify(r, body, &detail);

    if (rc == NGX_DECLINED) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "billing: Stripe webhook rejected: %s", detail);
        ngx_http_billing_metrics_webhook((u_char *) "", 0,
                                      NGX_HTTP_BILLING_WH_INVALID_SIGNATURE);
        return ngx_http_billing_problem(r, NGX_HTTP_BAD_REQUEST,
                                        "invalid_signature", detail,
                                        ngx_strlen(detail));
    }

    if (rc == NGX_OK) {
        rc = ngx_http_billing_webhook_type(r, body, &ctx->webhook_type);
    }

    if (rc == NGX_DECLINED) {
        ngx_http_billing_metrics_webhook((u_char *) "", 0,
                                         NGX_HTTP_BILLING_WH_ERROR);
        return ngx_http_billing_problem_s(r, NGX_HTTP_BAD_REQUEST,
                                          "invalid_request",
                                          "the event must be a JSON object "
                                          "with string id and type");
    }

    if (rc != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->params[0] = (const char *) body->data;

    return ngx_http_billing_query(r,
                                  "SELECT status, code, body, meta "
                                  "FROM billing.api_stripe_event($1::jsonb)",
                                  1, ctx->params,
                                  ngx_http_billing_webhook_done);
}


/*
 * NGX_OK when one of the configured secrets signed the body; NGX_DECLINED
 * with *detail saying why not; NGX_ERROR.
 */
static ngx_int_t
ngx_http_billing_webhook_verify(ngx_http_request_t *r, ngx_str_t *body,
    const char **detail)
{
    int                            rc;
    size_t                        *lens;
    ngx_str_t                     *secret;
    ngx_uint_t                     i, n;
    const char                   **secrets;
    ngx_table_elt_t               *sig;
    ngx_http_billing_main_conf_t  *bmcf;

    sig = ngx_http_billing_find_header(r, "Stripe-Signature",
                                       sizeof("Stripe-Signature") - 1);
    if (sig == NULL) {
        *detail = "the Stripe-Signature header is missing";
        return NGX_DECLINED;
    }

    bmcf = ngx_http_get_module_main_conf(r, ngx_http_billing_module);

    n = bmcf->stripe_webhook_secrets->nelts;
    secret = bmcf->stripe_webhook_secrets->elts;

    secrets = ngx_palloc(r->pool, n * sizeof(char *));
    lens = ngx_palloc(r->pool, n * sizeof(size_t));
    if (secrets == NULL || lens == NULL) {
        return NGX_ERROR;
    }

    for (i = 0; i < n; i++) {
        secrets[i] = (const char *) secret[i].data;
        lens[i] = secret[i].len;
    }

    rc = billing_stripe_verify((const char *) sig->value.data, sig->value.len,
                               (const char *) body->data, body->len,
                               secrets, lens, n, (int64_t) ngx_time(),
                               (int64_t) bmcf->stripe_tolerance);

    switch (rc) {

    case BILLING_STRIPE_OK:
        return NGX_OK;

    case BILLING_STRIPE_ERROR:
        return NGX_ERROR;

    default:
        *detail = billing_stripe_strerror(rc);
        return NGX_DECLINED;
    }
}


/*
 * The event's type, copied for the metrics of the completion handler;
 * NGX_DECLINED when the body is not an object with string id and type.
 */
static ngx_int_t
ngx_http_billing_webhook_type(ngx_http_request_t *r, ngx_str_t *body,
    ngx_str_t *type)
{
    cJSON      *json, *id, *t;
    ngx_int_t   rc;
    ngx_str_t   s;

    if (billing_json_parse_object((const char *) body->data, body->len,
                                  &json)
        != BILLING_JSON_OK)
    {
        return NGX_DECLINED;
    }

    id = cJSON_GetObjectItemCaseSensitive(json, "id");
    t = cJSON_GetObjectItemCaseSensitive(json, "type");

    rc = NGX_DECLINED;

    if (cJSON_IsString(id) && cJSON_IsString(t)) {
        s.data = (u_char *) t->valuestring;
        s.len = ngx_strlen(t->valuestring);

        type->data = ngx_pstrdup(r->pool, &s);
        type->len = s.len;

        rc = (type->data || s.len == 0) ? NGX_OK : NGX_ERROR;
    }

    cJSON_Delete(json);

    return rc;
}


static ngx_int_t
ngx_http_billing_webhook_done(ngx_http_request_t *r,
    ngx_http_billing_pg_op_t *op)
{
    int64_t                  credited;
    ngx_str_t               *meta, *type;
    ngx_uint_t               outcome;
    ngx_http_billing_row_t   row;
    ngx_http_billing_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_billing_module);
    type = &ctx->webhook_type;

    if (ngx_http_billing_api_row(r, op, &row) != NGX_OK) {
        ngx_http_billing_metrics_webhook(type->data, type->len,
                                         NGX_HTTP_BILLING_WH_ERROR);

        /* 5xx: Stripe retries the event later */
        if (op->status == NGX_HTTP_BILLING_PG_SQL_ERROR
            || op->status == NGX_HTTP_BILLING_PG_BUSY)
        {
            return ngx_http_billing_db_failure(r, op);
        }

        return ngx_http_billing_problem_s(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                          "database_unavailable",
                                          "the database cannot be reached; "
                                          "retry later");
    }

    meta = &row.meta;

    if (row.code.len || row.status >= 300) {
        outcome = NGX_HTTP_BILLING_WH_ERROR;

    } else if (meta->len == 9
               && ngx_strncmp(meta->data, "duplicate", 9) == 0)
    {
        outcome = NGX_HTTP_BILLING_WH_DUPLICATE;

    } else if (meta->len == 9
               && ngx_strncmp(meta->data, "processed", 9) == 0)
    {
        outcome = NGX_HTTP_BILLING_WH_PROCESSED;

        /* counted only when the function says how much it credited */
        if (billing_json_uint_member((const char *) row.body.data,
                                     row.body.len, "creditedMicros",
                                     &credited)
            == 0 && credited > 0)
        {
            ngx_http_billing_metrics_inc(NGX_HTTP_BILLING_M_CREDITS_PURCHASED,
                                         (uint64_t) credited);
        }

    } else {
        /* ignored, unmatched (no such purchase): nothing was changed */
        outcome = NGX_HTTP_BILLING_WH_IGNORED;
    }

    ngx_http_billing_metrics_webhook(type->data, type->len, outcome);

    return ngx_http_billing_api_respond(r, &row);
}
