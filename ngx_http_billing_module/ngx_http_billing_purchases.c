
/*
 * ScholarLink Billing: purchases (docs/spec.md §4.2, 4.5).
 *
 * POST /api/purchases: api_purchase_create() (one round trip), then a
 * Checkout Session created through libcurl's multi interface on nginx
 * events (ngx_http_billing_curl.c), then api_purchase_session() or
 * api_purchase_fail().  If the client goes away while Stripe is being
 * asked, the transfer is cancelled and the purchase stays "pending": a
 * session may exist at Stripe already, and if it is ever paid its webhook
 * credits the purchase (or checkout.session.expired marks it failed).
 *
 * GET /api/purchases: the caller's purchases, newest first, in pages.
 * GET /api/purchases/{id}: the caller's own purchase.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <cjson/cJSON.h>

#include "ngx_http_billing.h"
#include "ngx_http_billing_curl.h"
#include "ngx_http_billing_db.h"
#include "ngx_http_billing_metrics.h"
#include "ngx_http_billing_purchases.h"
#include "ngx_http_billing_request.h"
#include "ngx_http_billing_response.h"

#include "billing_cursor.h"
#include "billing_form.h"
#include "billing_json.h"


typedef struct {
    ngx_http_request_t         *r;
    ngx_http_billing_http_t    *http;
    char                        purchase_id[BILLING_UUID_LEN + 1];
} ngx_http_billing_purchase_t;


static ngx_int_t ngx_http_billing_purchase_create(ngx_http_request_t *r);
static ngx_int_t ngx_http_billing_purchase_list(ngx_http_request_t *r);
static ngx_int_t ngx_http_billing_purchase_list_done(ngx_http_request_t *r,
    ngx_http_billing_pg_op_t *op);
static ngx_int_t ngx_http_billing_purchase_body(ngx_http_request_t *r,
    ngx_str_t *body, void *data);
static ngx_int_t ngx_http_billing_purchase_created(ngx_http_request_t *r,
    ngx_http_billing_pg_op_t *op);
static ngx_int_t ngx_http_billing_checkout(ngx_http_request_t *r,
    ngx_http_billing_purchase_t *p, cJSON *purchase);
static void ngx_http_billing_purchase_cleanup(void *data);
static void ngx_http_billing_checkout_done(
    ngx_http_billing_http_result_t *res, void *data);
static ngx_int_t ngx_http_billing_checkout_session(ngx_http_request_t *r,
    ngx_http_billing_purchase_t *p, ngx_http_billing_http_result_t *res);
static u_char *ngx_http_billing_stripe_reason(ngx_http_request_t *r,
    ngx_http_billing_http_result_t *res);
static ngx_int_t ngx_http_billing_purchase_fail(ngx_http_request_t *r,
    ngx_http_billing_purchase_t *p, const char *reason);


/* /api/purchases: GET lists, POST buys (the route admits only these) */
ngx_int_t
ngx_http_billing_purchase_handler(ngx_http_request_t *r)
{
    if (r->method == NGX_HTTP_POST) {
        return ngx_http_billing_purchase_create(r);
    }

    return ngx_http_billing_purchase_list(r);
}


/* GET /api/purchases?limit=&cursor=: the caller's, newest first */
static ngx_int_t
ngx_http_billing_purchase_list(ngx_http_request_t *r)
{
    char                    *uuid;
    ngx_int_t                limit;
    ngx_str_t                arg;
    ngx_http_billing_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_billing_module);

    ctx->params[0] = (const char *) ctx->user_id.data;
    ctx->params[1] = "50";
    ctx->params[2] = NULL;

    /* the ledger's rules and words (api_purchases says the same) */
    if (ngx_http_arg(r, (u_char *) "limit", 5, &arg) == NGX_OK) {
        limit = ngx_atoi(arg.data, arg.len);
        if (limit < 1 || limit > 200) {
            return ngx_http_billing_invalid(r, "limit must be an integer "
                                               "from 1 to 200");
        }

        ctx->params[1] = (const char *) ngx_pnalloc(r->pool, NGX_INT_T_LEN + 1);
        if (ctx->params[1] == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        (void) ngx_sprintf((u_char *) ctx->params[1], "%i%Z", limit);
    }

    if (ngx_http_arg(r, (u_char *) "cursor", 6, &arg) == NGX_OK) {
        uuid = ngx_pnalloc(r->pool, BILLING_UUID_LEN + 1);
        if (uuid == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        if (billing_purchase_cursor_decode((const char *) arg.data, arg.len,
                                           uuid)
            != 0)
        {
            return ngx_http_billing_invalid(r, "cursor is not valid");
        }

        ctx->params[2] = uuid;
    }

    return ngx_http_billing_read(r,
                                 "SELECT status, code, body, meta "
                                 "FROM billing.api_purchases($1, $2, $3::uuid)",
                                 3, ctx->params,
                                 ngx_http_billing_purchase_list_done);
}


static ngx_int_t
ngx_http_billing_purchase_list_done(ngx_http_request_t *r,
    ngx_http_billing_pg_op_t *op)
{
    char                    cursor[BILLING_PURCHASE_CURSOR_MAX];
    ngx_http_billing_row_t  row;

    if (ngx_http_billing_api_row(r, op, &row) != NGX_OK) {
        return ngx_http_billing_db_failure(r, op);
    }

    if (row.code.len || row.meta.len == 0) {
        return ngx_http_billing_respond_page(r, &row, NULL);
    }

    /* meta: the last purchase shown, when more follow */
    if (billing_purchase_cursor_encode((const char *) row.meta.data,
                                       row.meta.len, cursor, sizeof(cursor))
        != 0)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_billing_respond_page(r, &row, cursor);
}


/* POST /api/purchases */
static ngx_int_t
ngx_http_billing_purchase_create(ngx_http_request_t *r)
{
    ngx_http_billing_main_conf_t  *bmcf;

    bmcf = ngx_http_get_module_main_conf(r, ngx_http_billing_module);

    if (bmcf->stripe_secret_key.len == 0
        || bmcf->checkout_success_url.len == 0)
    {
        return ngx_http_billing_not_configured(r, "stripe_not_configured",
                                               "payments are not configured",
                                               "purchases need "
                                               "billing_stripe_secret_key and "
                                               "billing_checkout_urls");
    }

    return ngx_http_billing_read_json_body(r, ngx_http_billing_purchase_body,
                                           NULL);
}


/* GET /api/purchases/{id}: the caller's own purchase */
ngx_int_t
ngx_http_billing_purchase_get_handler(ngx_http_request_t *r)
{
    ngx_int_t                rc;
    ngx_http_billing_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_billing_module);
    ctx->params[0] = (const char *) ctx->user_id.data;

    rc = ngx_http_billing_path_uuid(r, &ctx->item, "No such purchase",
                                    &ctx->params[1]);
    if (rc != NGX_DECLINED) {
        return rc;
    }

    return ngx_http_billing_read(r,
                                 "SELECT status, code, body, meta "
                                 "FROM billing.api_purchase_get($1, $2::uuid)",
                                 2, ctx->params, ngx_http_billing_respond);
}


static ngx_int_t
ngx_http_billing_purchase_body(ngx_http_request_t *r, ngx_str_t *body,
    void *data)
{
    char                     detail[256];
    billing_purchase_req_t  *req;
    ngx_http_billing_ctx_t  *ctx;

    req = ngx_palloc(r->pool, sizeof(billing_purchase_req_t));
    if (req == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (billing_parse_purchase((const char *) body->data, body->len, req,
                               detail, sizeof(detail))
        != BILLING_JSON_OK)
    {
        return ngx_http_billing_invalid(r, detail);
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_billing_module);
    ctx->params[0] = (const char *) ctx->user_id.data;
    ctx->params[1] = req->package_code;

    return ngx_http_billing_query(r,
                                  "SELECT status, code, body, meta "
                                  "FROM billing.api_purchase_create($1, $2)",
                                  2, ctx->params,
                                  ngx_http_billing_purchase_created);
}


static ngx_int_t
ngx_http_billing_purchase_created(ngx_http_request_t *r,
    ngx_http_billing_pg_op_t *op)
{
    cJSON                        *json, *id;
    ngx_int_t                     rc;
    ngx_http_billing_row_t        row;
    ngx_http_billing_purchase_t  *p;

    if (ngx_http_billing_api_row(r, op, &row) != NGX_OK) {
        return ngx_http_billing_db_failure(r, op);
    }

    if (row.code.len || row.status != NGX_HTTP_CREATED) {
        /* 422 unknown_package and friends pass through */
        return ngx_http_billing_api_respond(r, &row);
    }

    json = cJSON_ParseWithLength((const char *) row.body.data, row.body.len);
    id = cJSON_GetObjectItemCaseSensitive(json, "purchaseId");

    p = ngx_pcalloc(r->pool, sizeof(ngx_http_billing_purchase_t));

    if (p == NULL || !cJSON_IsString(id)
        || billing_uuid_normalize(id->valuestring, ngx_strlen(id->valuestring),
                                  p->purchase_id) != 0)
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "billing: api_purchase_create() answered an "
                      "unexpected body");
        cJSON_Delete(json);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p->r = r;

    rc = ngx_http_billing_checkout(r, p, json);
    cJSON_Delete(json);

    if (rc == NGX_OK) {
        /* the transfer holds the request now; the query's hold goes */
        r->main->count++;
        r->read_event_handler = ngx_http_test_reading;
        return NGX_DONE;
    }

    ngx_http_billing_metrics_inc(NGX_HTTP_BILLING_M_STRIPE_ERROR, 1);

    return ngx_http_billing_purchase_fail(r, p, "the request to Stripe could "
                                                "not be started");
}


/* POST {api}/v1/checkout/sessions, docs/spec.md §4.5 */
static ngx_int_t
ngx_http_billing_checkout(ngx_http_request_t *r,
    ngx_http_billing_purchase_t *p, cJSON *purchase)
{
    char                          *buf, amount[NGX_INT64_LEN + 1], *hdr;
    size_t                         cap, n;
    cJSON                         *cents, *code, *currency, *name;
    ngx_str_t                      url;
    billing_form_t                 f;
    struct curl_slist             *headers, *l;
    ngx_pool_cleanup_t            *cln;
    ngx_http_billing_ctx_t        *ctx;
    ngx_http_billing_main_conf_t  *bmcf;

    bmcf = ngx_http_get_module_main_conf(r, ngx_http_billing_module);
    ctx = ngx_http_get_module_ctx(r, ngx_http_billing_module);

    cents = cJSON_GetObjectItemCaseSensitive(purchase, "amountCents");
    code = cJSON_GetObjectItemCaseSensitive(purchase, "packageCode");
    currency = cJSON_GetObjectItemCaseSensitive(purchase, "currency");
    name = cJSON_GetObjectItemCaseSensitive(purchase, "packageName");

    if (!cJSON_IsNumber(cents) || cents->valuedouble < 1
        || cents->valuedouble > 99999999 || !cJSON_IsString(code)
        || !cJSON_IsString(currency) || !cJSON_IsString(name))
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "billing: api_purchase_create() answered an "
                      "unexpected body");
        return NGX_ERROR;
    }

    (void) ngx_sprintf((u_char *) amount, "%L%Z", (int64_t) cents->valuedouble);

    cap = 2048 + 3 * (2 * ctx->user_id.len + bmcf->checkout_success_url.len
                      + bmcf->checkout_cancel_url.len
                      + 2 * ngx_strlen(code->valuestring)
                      + ngx_strlen(name->valuestring));

    buf = ngx_pnalloc(r->pool, cap);
    if (buf == NULL) {
        return NGX_ERROR;
    }

    billing_form_init(&f, buf, cap);

    (void) billing_form_append(&f, "mode", "payment");
    (void) billing_form_append(&f, "line_items[0][price_data][currency]",
                               currency->valuestring);
    (void) billing_form_append(&f, "line_items[0][price_data][unit_amount]",
                               amount);
    (void) billing_form_append(&f,
                               "line_items[0][price_data][product_data][name]",
                               name->valuestring);
    (void) billing_form_append(&f,
                     "line_items[0][price_data][product_data][metadata]"
                     "[package_code]", code->valuestring);
    (void) billing_form_append(&f, "line_items[0][quantity]", "1");
    (void) billing_form_append(&f, "client_reference_id", p->purchase_id);
    (void) billing_form_append(&f, "metadata[purchase_id]", p->purchase_id);
    (void) billing_form_append(&f, "metadata[user_id]",
                               (const char *) ctx->user_id.data);
    (void) billing_form_append(&f, "metadata[package_code]",
                               code->valuestring);
    (void) billing_form_append(&f, "payment_intent_data[metadata][purchase_id]",
                               p->purchase_id);
    (void) billing_form_append(&f, "payment_intent_data[metadata][user_id]",
                               (const char *) ctx->user_id.data);
    (void) billing_form_append_n(&f, "success_url", sizeof("success_url") - 1,
                       (const char *) bmcf->checkout_success_url.data,
                       bmcf->checkout_success_url.len);
    (void) billing_form_append_n(&f, "cancel_url", sizeof("cancel_url") - 1,
                       (const char *) bmcf->checkout_cancel_url.data,
                       bmcf->checkout_cancel_url.len);

    if (f.overflow) {
        return NGX_ERROR;
    }

    /* the secret key goes to curl only, never to a log line */
    n = sizeof("Authorization: Bearer ") + bmcf->stripe_secret_key.len;
    hdr = ngx_alloc(n, r->connection->log);
    if (hdr == NULL) {
        return NGX_ERROR;
    }

    (void) ngx_sprintf((u_char *) hdr, "Authorization: Bearer %V%Z",
                       &bmcf->stripe_secret_key);

    headers = curl_slist_append(NULL, hdr);

    ngx_explicit_memzero(hdr, n);
    ngx_free(hdr);

    if (headers == NULL) {
        return NGX_ERROR;
    }

    hdr = ngx_pnalloc(r->pool, sizeof("Idempotency-Key: purchase-")
                            + BILLING_UUID_LEN);
    if (hdr == NULL) {
        curl_slist_free_all(headers);
        return NGX_ERROR;
    }

    (void) ngx_sprintf((u_char *) hdr, "Idempotency-Key: purchase-%s%Z",
                       p->purchase_id);

    l = curl_slist_append(headers, hdr);
    if (l == NULL) {
        curl_slist_free_all(headers);
        return NGX_ERROR;
    }

    l = curl_slist_append(headers,
                        "Content-Type: application/x-www-form-urlencoded");
    if (l == NULL) {
        curl_slist_free_all(headers);
        return NGX_ERROR;
    }

    url.len = bmcf->stripe_api_url.len + sizeof("/v1/checkout/sessions") - 1;
    url.data = ngx_pnalloc(r->pool, url.len);
    if (url.data == NULL) {
        curl_slist_free_all(headers);
        return NGX_ERROR;
    }

    (void) ngx_sprintf(url.data, "%V/v1/checkout/sessions",
                       &bmcf->stripe_api_url);

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        curl_slist_free_all(headers);
        return NGX_ERROR;
    }

    p->http = ngx_http_billing_http_post(&url, headers, (u_char *) f.buf,
                                         f.len, bmcf->stripe_connect_timeout,
                                         bmcf->stripe_total_timeout,
                                         ngx_http_billing_checkout_done, p,
                                         r->connection->log);

    /* the cleanup is harmless when nothing is in flight */
    cln->handler = ngx_http_billing_purchase_cleanup;
    cln->data = p;

    if (p->http == NULL) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "billing: cannot start the request to Stripe");
        return NGX_ERROR;
    }

    return NGX_OK;
}


static void
ngx_http_billing_purchase_cleanup(void *data)
{
    ngx_http_billing_purchase_t  *p = data;

    /* the client went away: stop asking Stripe; the purchase stays
     * pending (see the comment at the top) */
    if (p->http) {
        ngx_log_error(NGX_LOG_INFO, p->r->connection->log, 0,
                      "billing: request closed while Stripe was asked; "
                      "purchase %s stays pending", p->purchase_id);
        ngx_http_billing_http_cancel(p->http);
        p->http = NULL;
    }
}


/*
 * Stripe answered, or the transfer failed.  Entered from curl's event, not
 * the request's: the request is finalized here and posted subrequests run,
 * as ngx_http_upstream_handler() does.
 */
static void
ngx_http_billing_checkout_done(ngx_http_billing_http_result_t *res,
    void *data)
{
    ngx_http_billing_purchase_t *p = data;

    ngx_int_t            rc;
    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    r = p->r;
    c = r->connection;
    p->http = NULL;

    ngx_http_billing_metrics_observe(NGX_HTTP_BILLING_H_STRIPE, res->elapsed);

    rc = ngx_http_billing_checkout_session(r, p, res);

    ngx_http_finalize_request(r, rc);
    ngx_http_run_posted_requests(c);
}


/* records the session Stripe created, or why there is none */
static ngx_int_t
ngx_http_billing_checkout_session(ngx_http_request_t *r,
    ngx_http_billing_purchase_t *p, ngx_http_billing_http_result_t *res)
{
    cJSON                   *json, *id, *url;
    u_char                  *reason;
    ngx_str_t                s;
    ngx_http_billing_ctx_t  *ctx;

    if (res->code != CURLE_OK || res->status < 200 || res->status >= 300) {
        reason = ngx_http_billing_stripe_reason(r, res);
        ngx_http_billing_metrics_inc(res->timedout
                                     ? NGX_HTTP_BILLING_M_STRIPE_TIMEOUT
                                     : NGX_HTTP_BILLING_M_STRIPE_ERROR, 1);

        return ngx_http_billing_purchase_fail(r, p, reason
                                                    ? (const char *) reason
                                                    : "Stripe error");
    }

    json = cJSON_ParseWithLength((const char *) res->body, res->len);
    id = cJSON_GetObjectItemCaseSensitive(json, "id");
    url = cJSON_GetObjectItemCaseSensitive(json, "url");

    if (!cJSON_IsString(id) || id->valuestring[0] == '\0'
        || !cJSON_IsString(url) || url->valuestring[0] == '\0')
    {
        cJSON_Delete(json);
        ngx_http_billing_metrics_inc(NGX_HTTP_BILLING_M_STRIPE_ERROR, 1);

        return ngx_http_billing_purchase_fail(r, p,
                                              "invalid response from Stripe");
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_billing_module);
    ctx->params[0] = p->purchase_id;

    /* NUL-terminated copies: the body goes when this handler returns */
    s.data = (u_char *) id->valuestring;
    s.len = ngx_strlen(id->valuestring) + 1;
    ctx->params[1] = (const char *) ngx_pstrdup(r->pool, &s);

    s.data = (u_char *) url->valuestring;
    s.len = ngx_strlen(url->valuestring) + 1;
    ctx->params[2] = (const char *) ngx_pstrdup(r->pool, &s);

    cJSON_Delete(json);

    if (ctx->params[1] == NULL || ctx->params[2] == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_http_billing_metrics_inc(NGX_HTTP_BILLING_M_STRIPE_OK, 1);

    return ngx_http_billing_query(r,
                                  "SELECT status, code, body, meta FROM "
                                  "billing.api_purchase_session($1::uuid, "
                                  "$2, $3)",
                                  3, ctx->params, ngx_http_billing_respond);
}


/* a short, log-safe reason from a Stripe error body */
static u_char *
ngx_http_billing_stripe_reason(ngx_http_request_t *r,
    ngx_http_billing_http_result_t *res)
{
    cJSON   *json, *err, *type, *code;
    u_char  *p, *last;
    size_t   len;

    len = 256;
    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        return NULL;
    }

    last = p + len - 1;

    if (res->timedout) {
        *ngx_slprintf(p, last, "no answer within %M ms", res->elapsed) = '\0';
        return p;
    }

    if (res->code != CURLE_OK) {
        *ngx_slprintf(p, last, "unreachable: %s",
                      curl_easy_strerror(res->code)) = '\0';
        return p;
    }

    json = cJSON_ParseWithLength((const char *) res->body, res->len);
    err = cJSON_GetObjectItemCaseSensitive(json, "error");
    type = cJSON_GetObjectItemCaseSensitive(err, "type");
    code = cJSON_GetObjectItemCaseSensitive(err, "code");

    /* the message is not copied: it may quote parts of our request */
    *ngx_slprintf(p, last, "HTTP %l%s%s%s%s", res->status,
                  cJSON_IsString(type) ? " " : "",
                  cJSON_IsString(type) ? type->valuestring : "",
                  cJSON_IsString(code) ? " " : "",
                  cJSON_IsString(code) ? code->valuestring : "") = '\0';

    cJSON_Delete(json);

    for (last = p; *last; last++) {
        if (*last < 0x20 || *last >= 0x7f) {
            *last = '?';
        }
    }

    return p;
}


/* the purchase failed at Stripe: say so in the ledger and to the client */
static ngx_int_t
ngx_http_billing_purchase_fail(ngx_http_request_t *r,
    ngx_http_billing_purchase_t *p, const char *reason)
{
    ngx_http_billing_ctx_t  *ctx;

    ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                  "billing: Stripe checkout session for purchase %s "
                  "failed: %s", p->purchase_id, reason);

    ctx = ngx_http_get_module_ctx(r, ngx_http_billing_module);
    ctx->params[0] = p->purchase_id;
    ctx->params[1] = reason;

    return ngx_http_billing_query(r,
                                  "SELECT status, code, body, meta "
                                  "FROM billing.api_purchase_fail($1::uuid, "
                                  "$2)",
                                  2, ctx->params, ngx_http_billing_respond);
}
