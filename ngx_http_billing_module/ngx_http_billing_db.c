
/*
 * ScholarLink Billing: database calls on behalf of a request.  A request
 * makes one call of one API function through the pool; while it is out,
 * the request is held (r->main->count) and a client that leaves detaches
 * it.  Every API function answers one row (status, code, body, meta).
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_billing.h"
#include "ngx_http_billing_db.h"
#include "ngx_http_billing_response.h"

#include "billing_util.h"


static ngx_int_t ngx_http_billing_run(ngx_http_request_t *r, const char *sql,
    int nparams, const char **values, ngx_http_billing_done_pt done,
    ngx_uint_t read_only, ngx_http_billing_pg_batch_t *batch);
static void ngx_http_billing_query_done(ngx_http_billing_pg_op_t *op);
static void ngx_http_billing_cleanup(void *data);


/* a statement that may write */
ngx_int_t
ngx_http_billing_query(ngx_http_request_t *r, const char *sql, int nparams,
    const char **values, ngx_http_billing_done_pt done)
{
    return ngx_http_billing_run(r, sql, nparams, values, done, 0, NULL);
}


/*
 * A call that may be sent with others of its kind waiting for a
 * connection (group commit, ngx_http_billing_batch.c); done reads the
 * same answer either way.  The kind says whether it only reads.
 */
ngx_int_t
ngx_http_billing_query_batch(ngx_http_request_t *r, const char *sql,
    ngx_http_billing_pg_batch_t *batch, int nparams, const char **values,
    ngx_http_billing_done_pt done)
{
    return ngx_http_billing_run(r, sql, nparams, values, done,
                                batch->read_only, batch);
}


/* a statement that only reads: the pool may run it again on a lost link */
ngx_int_t
ngx_http_billing_read(ngx_http_request_t *r, const char *sql, int nparams,
    const char **values, ngx_http_billing_done_pt done)
{
    return ngx_http_billing_run(r, sql, nparams, values, done, 1, NULL);
}


static ngx_int_t
ngx_http_billing_run(ngx_http_request_t *r, const char *sql, int nparams,
    const char **values, ngx_http_billing_done_pt done, ngx_uint_t read_only,
    ngx_http_billing_pg_batch_t *batch)
{
    ngx_int_t                      rc;
    ngx_pool_cleanup_t            *cln;
    ngx_http_billing_ctx_t        *ctx;
    ngx_http_billing_pg_op_t      *op;
    ngx_http_billing_main_conf_t  *bmcf;

    bmcf = ngx_http_get_module_main_conf(r, ngx_http_billing_module);
    ctx = ngx_http_billing_get_ctx(r);

    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (!ctx->cleanup) {
        cln = ngx_pool_cleanup_add(r->pool, 0);
        if (cln == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        cln->handler = ngx_http_billing_cleanup;
        cln->data = ctx;
        ctx->cleanup = 1;
    }

    op = &ctx->op;

    ngx_http_billing_pg_op_init(op, sql, nparams, values,
                                ngx_http_billing_query_done, r,
                                r->connection->log);
    op->read_only = read_only;
    op->batch = batch;
    ctx->done = done;

    if (bmcf->pool == NULL) {
        op->status = NGX_HTTP_BILLING_PG_UNAVAILABLE;
        rc = NGX_DECLINED;

    } else {
        rc = ngx_http_billing_pg_query(bmcf->pool, op);
    }

    /*
     * Refused at once (no database configured, the wait queue full, no
     * connection can be opened): the completion answers, as it does when
     * the pool refuses later, so that every caller has one failure path
     * and answers exactly once.
     */
    if (rc == NGX_DECLINED) {
        return done(r, op);
    }

    r->main->count++;
    ctx->pending = 1;

    /*
     * Notice a client that goes away meanwhile: the request is then
     * terminated and its cleanup detaches the query (and any Stripe call),
     * so nothing waits for or leaks on its behalf.
     */
    r->read_event_handler = ngx_http_test_reading;

    return NGX_DONE;
}


/*
 * The pool's completion, entered from the database connection's event and
 * not from the request's: the request is finalized with what its handler
 * returns, and posted subrequests run, as ngx_http_upstream_handler()
 * does.
 */
static void
ngx_http_billing_query_done(ngx_http_billing_pg_op_t *op)
{
    ngx_int_t                rc;
    ngx_connection_t        *c;
    ngx_http_request_t      *r;
    ngx_http_billing_ctx_t  *ctx;

    r = op->data;
    c = r->connection;
    ctx = ngx_http_get_module_ctx(r, ngx_http_billing_module);

    ctx->pending = 0;

    rc = ctx->done(r, op);

    ngx_http_finalize_request(r, rc);
    ngx_http_run_posted_requests(c);
}


static void
ngx_http_billing_cleanup(void *data)
{
    ngx_http_billing_ctx_t  *ctx = data;

    /* the request is going away with its query still out */
    if (ctx->pending) {
        ngx_http_billing_pg_cancel(&ctx->op);
        ctx->pending = 0;
    }
}


/*
 * The database did not answer.  If the query never reached the server,
 * nothing was written.  If the connection was lost or timed out after it
 * was sent, the transaction may or may not have committed: no one can know
 * here, so say so; a retry with the same idempotency key tells (a replay
 * if it had committed, the write now if not).
 */
ngx_int_t
ngx_http_billing_db_failure(ngx_http_request_t *r, ngx_http_billing_pg_op_t *op)
{
    if (op->status == NGX_HTTP_BILLING_PG_SQL_ERROR) {
        return ngx_http_billing_problem_s(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                          "database_error",
                                          "the database refused the request; "
                                          "nothing was written");
    }

    if (op->status == NGX_HTTP_BILLING_PG_BUSY) {
        return ngx_http_billing_problem_s(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                          "database_busy",
                                          "too many requests are waiting for "
                                          "the database; retry later");
    }

    if (op->sent && !op->read_only) {
        return ngx_http_billing_problem_s(r,
                          op->status == NGX_HTTP_BILLING_PG_TIMEOUT
                          ? NGX_HTTP_GATEWAY_TIME_OUT
                          : NGX_HTTP_SERVICE_UNAVAILABLE,
                          "database_outcome_unknown",
                          "the database connection was lost after the "
                          "request was sent; retry with the same "
                          "idempotency key to learn the outcome");
    }

    if (op->status == NGX_HTTP_BILLING_PG_TIMEOUT) {
        return ngx_http_billing_problem_s(r, NGX_HTTP_GATEWAY_TIME_OUT,
                                          "database_timeout",
                                          "no database connection became "
                                          "free in time; nothing was written");
    }

    return ngx_http_billing_problem_s(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                      "database_unavailable",
                                      "the database cannot be reached; "
                                      "nothing was written");
}


static ngx_int_t
ngx_http_billing_copy_value(ngx_http_request_t *r, PGresult *res, int row,
    int col, ngx_str_t *out)
{
    out->len = 0;
    out->data = NULL;

    if (PQgetisnull(res, row, col)) {
        return NGX_OK;
    }

    out->len = PQgetlength(res, row, col);
    out->data = ngx_pnalloc(r->pool, out->len + 1);
    if (out->data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(out->data, PQgetvalue(res, row, col), out->len + 1);

    return NGX_OK;
}


/*
 * Every API function answers one row (status, code, body, meta); the
 * values are copied into the request pool because the PGresult is freed
 * once the handler returns, and the response may be sent later.  A call
 * answered within a batch finds its row at op->row, from column op->col
 * (the batch checked the result's shape).
 */
ngx_int_t
ngx_http_billing_api_row(ngx_http_request_t *r, ngx_http_billing_pg_op_t *op,
    ngx_http_billing_row_t *row)
{
    int        i, c;
    ngx_int_t  status;

    if (op->status != NGX_HTTP_BILLING_PG_OK) {
        return NGX_ERROR;
    }

    i = op->row;
    c = op->col;

    /* alone: exactly one row; in a batch (c > 0): one row of several */
    if ((c == 0 ? PQntuples(op->res) != 1 : PQntuples(op->res) <= i)
        || PQnfields(op->res) - c != 4)
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "billing: unexpected result shape: %d rows, %d columns",
                      PQntuples(op->res), PQnfields(op->res));
        op->status = NGX_HTTP_BILLING_PG_SQL_ERROR;
        return NGX_ERROR;
    }

    status = ngx_atoi((u_char *) PQgetvalue(op->res, i, c),
                      PQgetlength(op->res, i, c));

    if (status < 200 || status > 599) {
        op->status = NGX_HTTP_BILLING_PG_SQL_ERROR;
        return NGX_ERROR;
    }

    row->status = status;

    if (ngx_http_billing_copy_value(r, op->res, i, c + 1, &row->code)
            != NGX_OK
        || ngx_http_billing_copy_value(r, op->res, i, c + 2, &row->body)
           != NGX_OK
        || ngx_http_billing_copy_value(r, op->res, i, c + 3, &row->meta)
           != NGX_OK)
    {
        op->status = NGX_HTTP_BILLING_PG_SQL_ERROR;
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * Answers with what an API function returned: a problem when it names a
 * code, the body otherwise; a replay of an earlier write says so.  The
 * functions build bodies with json_build_object, which keeps the key order
 * docs/api.md documents but spaces the tokens out: answers are compact.
 */
ngx_int_t
ngx_http_billing_api_respond(ngx_http_request_t *r,
    ngx_http_billing_row_t *row)
{
    if (row->meta.len == sizeof("replayed") - 1
        && ngx_strncmp(row->meta.data, "replayed", row->meta.len) == 0
        && ngx_http_billing_add_header_s(r, "Idempotent-Replayed", "true")
           != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (row->code.len) {
        return ngx_http_billing_problem(r, row->status,
                                        (const char *) row->code.data,
                                        (const char *) row->body.data,
                                        row->body.len);
    }

    row->body.len = billing_json_compact((char *) row->body.data,
                                         row->body.len);

    return ngx_http_billing_send_json(r, row->status, row->body.data,
                                      row->body.len);
}


/*
 * A page of a list (ledger, purchases): the function answers an object,
 * and the opaque cursor of the next page, or null on the last one, is the
 * module's to add as its last key, "nextCursor".
 */
ngx_int_t
ngx_http_billing_respond_page(ngx_http_request_t *r,
    ngx_http_billing_row_t *row, const char *cursor)
{
    u_char  *p, *last;
    size_t   len;

    if (row->code.len || row->body.len < 2
        || row->body.data[row->body.len - 1] != '}')
    {
        return ngx_http_billing_api_respond(r, row);
    }

    len = cursor ? ngx_strlen(cursor) : 0;

    p = ngx_pnalloc(r->pool, row->body.len + sizeof(",\"nextCursor\":\"\"}")
                             + len);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    last = ngx_cpymem(p, row->body.data, row->body.len - 1);

    if (cursor) {
        last = ngx_sprintf(last, ",\"nextCursor\":\"%s\"}", cursor);

    } else {
        last = ngx_cpymem(last, ",\"nextCursor\":null}",
                          sizeof(",\"nextCursor\":null}") - 1);
    }

    row->body.data = p;
    row->body.len = last - p;

    return ngx_http_billing_api_respond(r, row);
}


/* the usual completion: answer with what the function returned */
ngx_int_t
ngx_http_billing_respond(ngx_http_request_t *r, ngx_http_billing_pg_op_t *op)
{
    ngx_http_billing_row_t  row;

    if (ngx_http_billing_api_row(r, op, &row) != NGX_OK) {
        return ngx_http_billing_db_failure(r, op);
    }

    return ngx_http_billing_api_respond(r, &row);
}
