
/*
 * ScholarLink Billing: the ledger API: packages and models, balance,
 * ledger and usage summary, reconcile, holds.
 *
 * Each endpoint validates its input in the pure core, then makes exactly
 * one call of one stored function of schema billing (sql/), which enforces
 * the ledger rules in the database and answers (status, code, body, meta).
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_billing.h"
#include "ngx_http_billing_api.h"
#include "ngx_http_billing_db.h"
#include "ngx_http_billing_metrics.h"
#include "ngx_http_billing_request.h"
#include "ngx_http_billing_response.h"

#include "billing_cursor.h"
#include "billing_json.h"


/* room for a validator's message (never client data) */
#define NGX_HTTP_BILLING_DETAIL_LEN   256


/*
 * A usage write (reconcile, hold): how its body is validated, and the
 * call of an API function it becomes.
 */
typedef struct {
    size_t                        size;
    int                         (*parse)(ngx_str_t *body, ngx_str_t *key,
                                         void *req, char *detail,
                                         size_t len);
    ngx_int_t                   (*params)(ngx_http_request_t *r, void *req,
                                          const char **params);
    const char                   *sql;
    int                           nparams;
    ngx_http_billing_done_pt      done;
    ngx_http_billing_pg_batch_t  *batch;       /* group commit, or NULL */
} ngx_http_billing_usage_t;


static ngx_int_t ngx_http_billing_ledger_done(ngx_http_request_t *r,
    ngx_http_billing_pg_op_t *op);
static ngx_int_t ngx_http_billing_reconcile_done(ngx_http_request_t *r,
    ngx_http_billing_pg_op_t *op);
static ngx_int_t ngx_http_billing_usage_body(ngx_http_request_t *r,
    ngx_str_t *body, void *data);
static int ngx_http_billing_reconcile_parse(ngx_str_t *body, ngx_str_t *key,
    void *req, char *detail, size_t len);
static int ngx_http_billing_hold_parse(ngx_str_t *body, ngx_str_t *key,
    void *req, char *detail, size_t len);
static ngx_int_t ngx_http_billing_reconcile_params(ngx_http_request_t *r,
    void *data, const char **params);
static ngx_int_t ngx_http_billing_hold_params(ngx_http_request_t *r,
    void *data, const char **params);
static const char *ngx_http_billing_int_param(ngx_http_request_t *r,
    int64_t n);
static const char *ngx_http_billing_str_param(ngx_http_request_t *r,
    ngx_str_t *s);


/*
 * Reconciles waiting for a connection together (billing_batch): the same
 * arguments as arrays, one row per item (sql/functions/reconcile_batch.sql).
 */
static ngx_http_billing_pg_batch_t  ngx_http_billing_reconcile_batch = {
    "SELECT ordinal, status, code, body, meta "
    "FROM billing.api_reconcile_batch($1::text[], $2::text[], $3::bigint[], "
    "$4::bigint[], $5::text[], $6::uuid[])",
    0
};

/* holds likewise (sql/functions/holds_batch.sql) */
static ngx_http_billing_pg_batch_t  ngx_http_billing_hold_batch = {
    "SELECT ordinal, status, code, body, meta "
    "FROM billing.api_hold_create_batch($1::text[], $2::bigint[], $3::text[], "
    "$4::int[])",
    0
};

static ngx_http_billing_usage_t  ngx_http_billing_reconcile = {
    sizeof(billing_reconcile_req_t),
    ngx_http_billing_reconcile_parse,
    ngx_http_billing_reconcile_params,
    "SELECT status, code, body, meta "
    "FROM billing.api_reconcile($1, $2, $3, $4, $5, $6::uuid)",
    6,
    ngx_http_billing_reconcile_done,
    &ngx_http_billing_reconcile_batch
};

static ngx_http_billing_usage_t  ngx_http_billing_hold = {
    sizeof(billing_hold_req_t),
    ngx_http_billing_hold_parse,
    ngx_http_billing_hold_params,
    "SELECT status, code, body, meta "
    "FROM billing.api_hold_create($1, $2, $3, $4)",
    4,
    ngx_http_billing_respond,
    &ngx_http_billing_hold_batch
};


/* the statement of GET /api/balance (and support's view of a balance) */
static const char  ngx_http_billing_balance_sql[] =
    "SELECT status, code, body, meta FROM billing.api_balance($1)";

/*
 * Balance reads waiting for a connection together (billing_batch): one
 * statement instead of one per request is most of what a read costs the
 * server (sql/functions/balance.sql).
 */
static ngx_http_billing_pg_batch_t  ngx_http_billing_balance_batch = {
    "SELECT ordinal, status, code, body, meta "
    "FROM billing.api_balance_batch($1::text[])",
    1                   /* reads: run again on a lost link, like any read */
};


/*
 * The statements of the hot paths, prepared once on every pooled
 * connection (ngx_http_billing_pg_prepare); the pool recognizes them by
 * their address.
 */
const char *const *
ngx_http_billing_api_hot_statements(void)
{
    static const char  *hot[7];

    hot[0] = ngx_http_billing_reconcile.sql;
    hot[1] = ngx_http_billing_reconcile_batch.sql;
    hot[2] = ngx_http_billing_balance_sql;
    hot[3] = ngx_http_billing_balance_batch.sql;
    hot[4] = ngx_http_billing_hold.sql;
    hot[5] = ngx_http_billing_hold_batch.sql;
    hot[6] = NULL;

    return hot;
}


/* GET /api/packages: public */
ngx_int_t
ngx_http_billing_packages_handler(ngx_http_request_t *r)
{
    return ngx_http_billing_read(r,
                                 "SELECT status, code, body, meta "
                                 "FROM billing.api_packages()",
                                 0, NULL, ngx_http_billing_respond);
}


/* GET /api/models: public, the prices in force now */
ngx_int_t
ngx_http_billing_models_handler(ngx_http_request_t *r)
{
    return ngx_http_billing_read(r,
                                 "SELECT status, code, body, meta "
                                 "FROM billing.api_models()",
                                 0, NULL, ngx_http_billing_respond);
}


/* GET /api/balance: the caller's own balance */
ngx_int_t
ngx_http_billing_balance_handler(ngx_http_request_t *r)
{
    ngx_http_billing_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_billing_module);

    return ngx_http_billing_balance_of(r, (const char *) ctx->user_id.data);
}


/* a user's balance: the caller's, or the one support asks for */
ngx_int_t
ngx_http_billing_balance_of(ngx_http_request_t *r, const char *user)
{
    ngx_http_billing_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_billing_module);
    ctx->params[0] = user;

    return ngx_http_billing_query_batch(r, ngx_http_billing_balance_sql,
                                        &ngx_http_billing_balance_batch, 1,
                                        ctx->params, ngx_http_billing_respond);
}


/* GET /api/ledger?limit=&cursor=: the caller's entries, newest first */
ngx_int_t
ngx_http_billing_ledger_handler(ngx_http_request_t *r)
{
    ngx_http_billing_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_billing_module);

    return ngx_http_billing_ledger_of(r, (const char *) ctx->user_id.data);
}


/* a user's entries: the caller's, or the ones support asks for */
ngx_int_t
ngx_http_billing_ledger_of(ngx_http_request_t *r, const char *user)
{
    int64_t                  before;
    ngx_int_t                limit;
    ngx_str_t                arg;
    ngx_http_billing_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_billing_module);

    limit = 50;

    if (ngx_http_arg(r, (u_char *) "limit", 5, &arg) == NGX_OK) {
        limit = ngx_atoi(arg.data, arg.len);
        if (limit < 1 || limit > 200) {
            return ngx_http_billing_invalid(r, "limit must be an integer "
                                               "from 1 to 200");
        }
    }

    ctx->params[2] = NULL;

    if (ngx_http_arg(r, (u_char *) "cursor", 6, &arg) == NGX_OK) {
        if (billing_cursor_decode((const char *) arg.data, arg.len, &before)
            != 0)
        {
            return ngx_http_billing_invalid(r, "cursor is not valid");
        }

        ctx->params[2] = ngx_http_billing_int_param(r, before);
        if (ctx->params[2] == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    ctx->params[0] = user;
    ctx->params[1] = ngx_http_billing_int_param(r, limit);

    if (ctx->params[1] == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_billing_read(r,
                                 "SELECT status, code, body, meta "
                                 "FROM billing.api_ledger($1, $2, $3)",
                                 3, ctx->params,
                                 ngx_http_billing_ledger_done);
}


static ngx_int_t
ngx_http_billing_ledger_done(ngx_http_request_t *r,
    ngx_http_billing_pg_op_t *op)
{
    char                    cursor[BILLING_CURSOR_MAX];
    int64_t                 next;
    ngx_http_billing_row_t  row;

    if (ngx_http_billing_api_row(r, op, &row) != NGX_OK) {
        return ngx_http_billing_db_failure(r, op);
    }

    if (row.code.len || row.meta.len == 0) {
        return ngx_http_billing_respond_page(r, &row, NULL);
    }

    /* meta: the last entry shown, when more follow */
    next = ngx_atoof(row.meta.data, row.meta.len);
    if (next <= 0 || billing_cursor_encode(next, cursor, sizeof(cursor)) != 0)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_billing_respond_page(r, &row, cursor);
}


/*
 * GET /api/usage/summary?from=&to=&groupBy= (docs/spec.md §4.6).  The
 * database has the rules; a value it would refuse anyway is refused here
 * with its words, and text that is no date never reaches it.
 */
ngx_int_t
ngx_http_billing_usage_summary_handler(ngx_http_request_t *r)
{
    ngx_str_t                arg;
    ngx_uint_t               i;
    ngx_http_billing_ctx_t  *ctx;

    /* the query parameters that are dates, and the database's words */
    static const char       *dates[][2] = {
        { "from", "from: must be a date YYYY-MM-DD" },
        { "to", "to: must be a date YYYY-MM-DD" }
    };

    ctx = ngx_http_get_module_ctx(r, ngx_http_billing_module);
    ctx->params[0] = (const char *) ctx->user_id.data;

    for (i = 0; i < 2; i++) {
        ctx->params[1 + i] = NULL;

        if (ngx_http_arg(r, (u_char *) dates[i][0], ngx_strlen(dates[i][0]),
                         &arg)
            != NGX_OK)
        {
            continue;       /* the database: "field is required" */
        }

        if (!billing_date_valid((const char *) arg.data, arg.len)) {
            return ngx_http_billing_invalid(r, dates[i][1]);
        }

        ctx->params[1 + i] = ngx_http_billing_str_param(r, &arg);
        if (ctx->params[1 + i] == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    ctx->params[3] = NULL;

    if (ngx_http_arg(r, (u_char *) "groupBy", 7, &arg) == NGX_OK) {
        if ((arg.len != 3 || ngx_strncmp(arg.data, "day", 3) != 0)
            && (arg.len != 5 || ngx_strncmp(arg.data, "model", 5) != 0))
        {
            return ngx_http_billing_invalid(r, "groupBy: must be day or "
                                               "model");
        }

        ctx->params[3] = ngx_http_billing_str_param(r, &arg);
        if (ctx->params[3] == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    return ngx_http_billing_read(r,
                                 "SELECT status, code, body, meta "
                                 "FROM billing.api_usage_summary($1, $2, $3, "
                                 "$4)",
                                 4, ctx->params, ngx_http_billing_respond);
}


/* POST /api/usage/reconcile: docs/spec.md §4.1 */
ngx_int_t
ngx_http_billing_reconcile_handler(ngx_http_request_t *r)
{
    return ngx_http_billing_read_json_body(r, ngx_http_billing_usage_body,
                                           &ngx_http_billing_reconcile);
}


static int
ngx_http_billing_reconcile_parse(ngx_str_t *body, ngx_str_t *key, void *req,
    char *detail, size_t len)
{
    int  rc;

    rc = billing_parse_reconcile((const char *) body->data, body->len,
                                 (const char *) key->data, key->len, req,
                                 detail, len);

    if (rc != BILLING_JSON_OK) {
        ngx_http_billing_metrics_inc(NGX_HTTP_BILLING_M_RECONCILE_INVALID, 1);
    }

    return rc;
}


/* api_reconcile($1 user, $2 model, $3 in, $4 out, $5 key, $6 hold) */
static ngx_int_t
ngx_http_billing_reconcile_params(ngx_http_request_t *r, void *data,
    const char **params)
{
    billing_reconcile_req_t *req = data;

    params[0] = req->user_id;
    params[1] = req->model;
    params[2] = ngx_http_billing_int_param(r, req->input_tokens);
    params[3] = ngx_http_billing_int_param(r, req->output_tokens);
    params[4] = req->idempotency_key;
    params[5] = req->has_hold ? req->hold_id : NULL;

    return (params[2] && params[3]) ? NGX_OK : NGX_ERROR;
}


static ngx_int_t
ngx_http_billing_reconcile_done(ngx_http_request_t *r,
    ngx_http_billing_pg_op_t *op)
{
    int64_t                 charged;
    ngx_uint_t              counter;
    ngx_http_billing_row_t  row;

    if (ngx_http_billing_api_row(r, op, &row) != NGX_OK) {
        ngx_http_billing_metrics_inc(NGX_HTTP_BILLING_M_RECONCILE_ERROR, 1);
        return ngx_http_billing_db_failure(r, op);
    }

    switch (row.status) {
    case NGX_HTTP_CREATED:
        if (row.meta.len) {
            counter = NGX_HTTP_BILLING_M_RECONCILE_REPLAYED;

        } else {
            counter = NGX_HTTP_BILLING_M_RECONCILE_CHARGED;

            if (billing_json_uint_member((const char *) row.body.data,
                                         row.body.len, "chargedMicros",
                                         &charged)
                == 0)
            {
                ngx_http_billing_metrics_inc(
                    NGX_HTTP_BILLING_M_CREDITS_CONSUMED, (uint64_t) charged);
            }
        }
        break;
    case NGX_HTTP_CONFLICT:
        counter = NGX_HTTP_BILLING_M_RECONCILE_CONFLICT;
        break;
    case 402:
        counter = NGX_HTTP_BILLING_M_RECONCILE_INSUFFICIENT;
        break;
    case 422:
        counter = NGX_HTTP_BILLING_M_RECONCILE_UNKNOWN_MODEL;
        break;
    case NGX_HTTP_BAD_REQUEST:
    case NGX_HTTP_NOT_FOUND:
        counter = NGX_HTTP_BILLING_M_RECONCILE_INVALID;
        break;
    default:
        counter = NGX_HTTP_BILLING_M_RECONCILE_ERROR;
    }

    ngx_http_billing_metrics_inc(counter, 1);

    return ngx_http_billing_api_respond(r, &row);
}


/* POST /api/usage/holds: docs/spec.md §4.3 */
ngx_int_t
ngx_http_billing_hold_handler(ngx_http_request_t *r)
{
    return ngx_http_billing_read_json_body(r, ngx_http_billing_usage_body,
                                           &ngx_http_billing_hold);
}


/* DELETE /api/usage/holds/{id}: docs/spec.md §4.3 */
ngx_int_t
ngx_http_billing_hold_release_handler(ngx_http_request_t *r)
{
    ngx_int_t                rc;
    ngx_http_billing_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_billing_module);

    rc = ngx_http_billing_path_uuid(r, &ctx->item, "no such hold",
                                    &ctx->params[0]);
    if (rc != NGX_DECLINED) {
        return rc;
    }

    return ngx_http_billing_query(r,
                                  "SELECT status, code, body, meta "
                                  "FROM billing.api_hold_release($1::uuid)",
                                  1, ctx->params, ngx_http_billing_respond);
}


static int
ngx_http_billing_hold_parse(ngx_str_t *body, ngx_str_t *key, void *req,
    char *detail, size_t len)
{
    return billing_parse_hold((const char *) body->data, body->len,
                              (const char *) key->data, key->len, req,
                              detail, len);
}


/* api_hold_create($1 user, $2 amount, $3 key, $4 ttl) */
static ngx_int_t
ngx_http_billing_hold_params(ngx_http_request_t *r, void *data,
    const char **params)
{
    billing_hold_req_t *req = data;

    params[0] = req->user_id;
    params[1] = ngx_http_billing_int_param(r, req->amount_micros);
    params[2] = req->idempotency_key;
    params[3] = ngx_http_billing_int_param(r, req->ttl_seconds);

    return (params[1] && params[3]) ? NGX_OK : NGX_ERROR;
}


/*
 * The body of a usage write: validated in the core together with the
 * Idempotency-Key header (400 with the validator's detail), then the
 * parameters of one call of the write's API function.
 */
static ngx_int_t
ngx_http_billing_usage_body(ngx_http_request_t *r, ngx_str_t *body,
    void *data)
{
    ngx_http_billing_usage_t *usage = data;

    char                     detail[NGX_HTTP_BILLING_DETAIL_LEN];
    void                    *req;
    ngx_str_t                key;
    ngx_http_billing_ctx_t  *ctx;

    req = ngx_palloc(r->pool, usage->size);
    if (req == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_http_billing_header_value(r, "Idempotency-Key", &key);

    if (usage->parse(body, &key, req, detail, sizeof(detail))
        != BILLING_JSON_OK)
    {
        return ngx_http_billing_invalid(r, detail);
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_billing_module);

    if (usage->params(r, req, ctx->params) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_billing_query_batch(r, usage->sql, usage->batch,
                                        usage->nparams, ctx->params,
                                        usage->done);
}


/* a number as a text parameter of a query */
static const char *
ngx_http_billing_int_param(ngx_http_request_t *r, int64_t n)
{
    u_char  *p;

    p = ngx_pnalloc(r->pool, NGX_INT64_LEN + 1);
    if (p == NULL) {
        return NULL;
    }

    (void) ngx_sprintf(p, "%L%Z", n);

    return (const char *) p;
}


/* a string as a text parameter: a NUL-terminated copy */
static const char *
ngx_http_billing_str_param(ngx_http_request_t *r, ngx_str_t *s)
{
    u_char  *p;

    p = ngx_pnalloc(r->pool, s->len + 1);
    if (p == NULL) {
        return NULL;
    }

    (void) ngx_cpystrn(p, s->data, s->len + 1);

    return (const char *) p;
}
