
/*
 * ScholarLink Billing: administration (docs/spec.md §4.7), for tokens with
 * the scope billing:admin (the endpoint table requires it).
 *
 * POST /api/admin/adjustments                 api_admin_adjustment()
 * POST /api/admin/usage/{entryId}/reversal    api_admin_usage_reversal()
 * GET  /api/admin/users/{userId}/balance      api_balance(), as the user's
 * GET  /api/admin/users/{userId}/ledger       api_ledger(), as the user's
 * PUT  /api/admin/models/{model}/price        api_admin_model_price()
 *
 * Each is one call of one function; the writes are idempotent there and
 * record the token's subject as the actor.  The ids in the paths are taken
 * from the path as the client sent it, one segment each, percent-decoded
 * here: a model or a user id may contain '/' (sent as %2F), which nginx's
 * normalized URI would split, merge or resolve.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_billing.h"
#include "ngx_http_billing_admin.h"
#include "ngx_http_billing_api.h"
#include "ngx_http_billing_db.h"
#include "ngx_http_billing_request.h"
#include "ngx_http_billing_response.h"

#include "billing_json.h"
#include "billing_path.h"


/* room for a validator's message (never client data) */
#define NGX_HTTP_BILLING_DETAIL_LEN   256


/* an admin write: how its body is validated and the call it becomes */
typedef struct {
    size_t                        size;
    int                         (*parse)(ngx_str_t *body, ngx_str_t *key,
                                         void *req, char *detail,
                                         size_t detail_len);
    ngx_int_t                   (*params)(ngx_http_request_t *r, void *req,
                                          const char *id, const char **params);
    const char                   *sql;
    int                           nparams;
} ngx_http_billing_admin_write_t;


/* one request's write and the id its path names */
typedef struct {
    ngx_http_billing_admin_write_t  *write;
    const char                      *id;
} ngx_http_billing_admin_req_t;


static ngx_int_t ngx_http_billing_admin_path(ngx_http_request_t *r,
    ngx_str_t *action, const char **id);
static ngx_int_t ngx_http_billing_no_such(ngx_http_request_t *r);
static ngx_int_t ngx_http_billing_admin_write(ngx_http_request_t *r,
    ngx_http_billing_admin_write_t *write, const char *id);
static ngx_int_t ngx_http_billing_admin_body(ngx_http_request_t *r,
    ngx_str_t *body, void *data);
static int ngx_http_billing_adjustment_parse(ngx_str_t *body, ngx_str_t *key,
    void *req, char *detail, size_t len);
static int ngx_http_billing_reversal_parse(ngx_str_t *body, ngx_str_t *key,
    void *req, char *detail, size_t len);
static int ngx_http_billing_price_parse(ngx_str_t *body, ngx_str_t *key,
    void *req, char *detail, size_t len);
static ngx_int_t ngx_http_billing_adjustment_params(ngx_http_request_t *r,
    void *data, const char *id, const char **params);
static ngx_int_t ngx_http_billing_reversal_params(ngx_http_request_t *r,
    void *data, const char *id, const char **params);
static ngx_int_t ngx_http_billing_price_params(ngx_http_request_t *r,
    void *data, const char *id, const char **params);
static const char *ngx_http_billing_admin_int(ngx_http_request_t *r,
    int64_t n);


static ngx_http_billing_admin_write_t  ngx_http_billing_adjustment = {
    sizeof(billing_adjustment_req_t),
    ngx_http_billing_adjustment_parse,
    ngx_http_billing_adjustment_params,
    "SELECT status, code, body, meta "
    "FROM billing.api_admin_adjustment($1, $2, $3, $4, $5)",
    5
};

static ngx_http_billing_admin_write_t  ngx_http_billing_reversal = {
    sizeof(billing_reversal_req_t),
    ngx_http_billing_reversal_parse,
    ngx_http_billing_reversal_params,
    "SELECT status, code, body, meta "
    "FROM billing.api_admin_usage_reversal($1, $2, $3, $4)",
    4
};

static ngx_http_billing_admin_write_t  ngx_http_billing_price = {
    sizeof(billing_price_req_t),
    ngx_http_billing_price_parse,
    ngx_http_billing_price_params,
    "SELECT status, code, body, meta "
    "FROM billing.api_admin_model_price($1, $2, $3, $4, $5, $6, $7)",
    7
};


/* POST /api/admin/adjustments */
ngx_int_t
ngx_http_billing_adjustment_handler(ngx_http_request_t *r)
{
    return ngx_http_billing_admin_write(r, &ngx_http_billing_adjustment,
                                        NULL);
}


/* POST /api/admin/usage/{entryId}/reversal */
ngx_int_t
ngx_http_billing_reversal_handler(ngx_http_request_t *r)
{
    int64_t      entry;
    ngx_int_t    rc;
    ngx_str_t    action;
    const char  *id;

    rc = ngx_http_billing_admin_path(r, &action, &id);
    if (rc != NGX_DECLINED) {
        return rc;
    }

    if (action.len != sizeof("reversal") - 1
        || ngx_strncmp(action.data, "reversal", action.len) != 0)
    {
        return ngx_http_billing_no_such(r);
    }

    /* an entry id is a number: anything else names no entry */
    if (billing_entry_id_parse(id, ngx_strlen(id), &entry) != 0) {
        return ngx_http_billing_problem_s(r, NGX_HTTP_NOT_FOUND, "not_found",
                                          "no such usage entry");
    }

    return ngx_http_billing_admin_write(r, &ngx_http_billing_reversal, id);
}


/* GET /api/admin/users/{userId}/balance and .../ledger: the user's views */
ngx_int_t
ngx_http_billing_user_view_handler(ngx_http_request_t *r)
{
    ngx_int_t    rc;
    ngx_str_t    action;
    const char  *user;

    rc = ngx_http_billing_admin_path(r, &action, &user);
    if (rc != NGX_DECLINED) {
        return rc;
    }

    if (action.len == sizeof("balance") - 1
        && ngx_strncmp(action.data, "balance", action.len) == 0)
    {
        return ngx_http_billing_balance_of(r, user);
    }

    if (action.len == sizeof("ledger") - 1
        && ngx_strncmp(action.data, "ledger", action.len) == 0)
    {
        return ngx_http_billing_ledger_of(r, user);
    }

    return ngx_http_billing_no_such(r);
}


/* PUT /api/admin/models/{model}/price */
ngx_int_t
ngx_http_billing_price_handler(ngx_http_request_t *r)
{
    ngx_int_t    rc;
    ngx_str_t    action;
    const char  *model;

    rc = ngx_http_billing_admin_path(r, &action, &model);
    if (rc != NGX_DECLINED) {
        return rc;
    }

    if (action.len != sizeof("price") - 1
        || ngx_strncmp(action.data, "price", action.len) != 0)
    {
        return ngx_http_billing_no_such(r);
    }

    return ngx_http_billing_admin_write(r, &ngx_http_billing_price, model);
}


/*
 * The path after the location's prefix, as sent, must be "/{id}/{action}":
 * both percent-decoded into the request's pool.  NGX_DECLINED when it is;
 * otherwise the 404 answer, since such a path names nothing.
 */
static ngx_int_t
ngx_http_billing_admin_path(ngx_http_request_t *r, ngx_str_t *action,
    const char **id)
{
    u_char                    *path, *q;
    long                       n, m;
    char                      *out, *tail;
    size_t                     len, prefix, i;
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

    path = r->unparsed_uri.data;
    len = r->unparsed_uri.len;

    q = ngx_strlchr(path, path + len, '?');
    if (q) {
        len = q - path;
    }

    /* the segments of the location's prefix: "/api/admin/users" has 3 */
    prefix = 0;

    for (i = 0; i < clcf->name.len; i++) {
        if (clcf->name.data[i] == '/' && i + 1 < clcf->name.len) {
            prefix++;
        }
    }

    out = ngx_pnalloc(r->pool, 2 * (len + 1));
    if (out == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    tail = out + len + 1;

    n = billing_path_segment((const char *) path, len, prefix + 2, prefix,
                             out, len + 1);
    m = billing_path_segment((const char *) path, len, prefix + 2,
                             prefix + 1, tail, len + 1);

    /* text the database can be given: UTF-8 (no NUL: the decoder refuses) */
    if (n < 0 || m < 0
        || !billing_utf8_valid((const u_char *) out, (size_t) n))
    {
        return ngx_http_billing_no_such(r);
    }

    *id = out;
    action->data = (u_char *) tail;
    action->len = (size_t) m;

    return NGX_DECLINED;
}


static ngx_int_t
ngx_http_billing_no_such(ngx_http_request_t *r)
{
    return ngx_http_billing_problem_s(r, NGX_HTTP_NOT_FOUND, "not_found",
                                      "no such resource");
}


static ngx_int_t
ngx_http_billing_admin_write(ngx_http_request_t *r,
    ngx_http_billing_admin_write_t *write, const char *id)
{
    ngx_http_billing_admin_req_t  *req;

    req = ngx_palloc(r->pool, sizeof(ngx_http_billing_admin_req_t));
    if (req == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    req->write = write;
    req->id = id;

    return ngx_http_billing_read_json_body(r, ngx_http_billing_admin_body,
                                           req);
}


/*
 * The body of an admin write: validated in the core together with the
 * Idempotency-Key header (400 with the validator's detail), then one call
 * whose first parameter is the actor, the token's subject.
 */
static ngx_int_t
ngx_http_billing_admin_body(ngx_http_request_t *r, ngx_str_t *body,
    void *data)
{
    ngx_http_billing_admin_req_t *areq = data;

    char                     detail[NGX_HTTP_BILLING_DETAIL_LEN];
    void                    *req;
    ngx_str_t                key;
    ngx_http_billing_ctx_t  *ctx;

    req = ngx_palloc(r->pool, areq->write->size);
    if (req == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_http_billing_header_value(r, "Idempotency-Key", &key);

    if (areq->write->parse(body, &key, req, detail, sizeof(detail))
        != BILLING_JSON_OK)
    {
        return ngx_http_billing_invalid(r, detail);
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_billing_module);
    ctx->params[0] = (const char *) ctx->user_id.data;

    if (areq->write->params(r, req, areq->id, ctx->params + 1) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_billing_query(r, areq->write->sql, areq->write->nparams,
                                  ctx->params, ngx_http_billing_respond);
}


static int
ngx_http_billing_adjustment_parse(ngx_str_t *body, ngx_str_t *key, void *req,
    char *detail, size_t len)
{
    return billing_parse_adjustment((const char *) body->data, body->len,
                                    (const char *) key->data, key->len, req,
                                    detail, len);
}


static int
ngx_http_billing_reversal_parse(ngx_str_t *body, ngx_str_t *key, void *req,
    char *detail, size_t len)
{
    return billing_parse_reversal((const char *) body->data, body->len,
                                  (const char *) key->data, key->len, req,
                                  detail, len);
}


static int
ngx_http_billing_price_parse(ngx_str_t *body, ngx_str_t *key, void *req,
    char *detail, size_t len)
{
    return billing_parse_price((const char *) body->data, body->len,
                               (const char *) key->data, key->len, req,
                               detail, len);
}


/* api_admin_adjustment(actor, $2 user, $3 amount, $4 reason, $5 key) */
static ngx_int_t
ngx_http_billing_adjustment_params(ngx_http_request_t *r, void *data,
    const char *id, const char **params)
{
    billing_adjustment_req_t *req = data;

    params[0] = req->user_id;
    params[1] = ngx_http_billing_admin_int(r, req->amount_micros);
    params[2] = req->reason;
    params[3] = req->idempotency_key;

    return params[1] ? NGX_OK : NGX_ERROR;
}


/* api_admin_usage_reversal(actor, $2 entry, $3 reason, $4 key) */
static ngx_int_t
ngx_http_billing_reversal_params(ngx_http_request_t *r, void *data,
    const char *id, const char **params)
{
    billing_reversal_req_t *req = data;

    params[0] = id;
    params[1] = req->reason;
    params[2] = req->idempotency_key;

    return NGX_OK;
}


/* api_admin_model_price(actor, $2 model, $3 in, $4 out, $5 from, $6 reason,
 * $7 key) */
static ngx_int_t
ngx_http_billing_price_params(ngx_http_request_t *r, void *data,
    const char *id, const char **params)
{
    billing_price_req_t *req = data;

    params[0] = id;
    params[1] = ngx_http_billing_admin_int(r, req->input_micros_per_mtok);
    params[2] = ngx_http_billing_admin_int(r, req->output_micros_per_mtok);
    params[3] = req->has_effective_from ? req->effective_from : NULL;
    params[4] = req->has_reason ? req->reason : NULL;
    params[5] = req->idempotency_key;

    return (params[1] && params[2]) ? NGX_OK : NGX_ERROR;
}


/* a number as a text parameter of a query */
static const char *
ngx_http_billing_admin_int(ngx_http_request_t *r, int64_t n)
{
    u_char  *p;

    p = ngx_pnalloc(r->pool, NGX_INT64_LEN + 1);
    if (p == NULL) {
        return NULL;
    }

    (void) ngx_sprintf(p, "%L%Z", n);

    return (const char *) p;
}
