
/*
 * ScholarLink Billing: request plumbing shared by every endpoint: dispatch,
 * JSON and RFC 9457 problem responses, request bodies, database calls on
 * behalf of a request, and CORS.
 */


#include "ngx_http_billing_module.h"

#include "billing_util.h"


static ngx_int_t ngx_http_billing_error_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_billing_preflight(ngx_http_request_t *r);
static ngx_str_t *ngx_http_billing_allowed_origin(ngx_http_request_t *r);
static ngx_int_t ngx_http_billing_header_filter(ngx_http_request_t *r);
static void ngx_http_billing_query_done(ngx_http_billing_pg_op_t *op);
static void ngx_http_billing_cleanup(void *data);


static ngx_http_output_header_filter_pt  ngx_http_next_header_filter;

static ngx_str_t  ngx_http_billing_json_type = ngx_string("application/json");
static ngx_str_t  ngx_http_billing_problem_type =
    ngx_string("application/problem+json");


ngx_int_t
ngx_http_billing_handler(ngx_http_request_t *r)
{
    ngx_http_billing_loc_conf_t  *blcf;

    blcf = ngx_http_get_module_loc_conf(r, ngx_http_billing_module);

    if (r->method == NGX_HTTP_OPTIONS && blcf->cors_origins
        && blcf->endpoint != NGX_HTTP_BILLING_EP_ERROR)
    {
        return ngx_http_billing_preflight(r);
    }

    switch (blcf->endpoint) {

    case NGX_HTTP_BILLING_EP_HEALTH:
        return ngx_http_billing_health_handler(r);

    case NGX_HTTP_BILLING_EP_READYZ:
        return ngx_http_billing_readyz_handler(r);

    case NGX_HTTP_BILLING_EP_METRICS:
        return ngx_http_billing_metrics_handler(r);

    case NGX_HTTP_BILLING_EP_PACKAGES:
        return ngx_http_billing_packages_handler(r);

    case NGX_HTTP_BILLING_EP_BALANCE:
        return ngx_http_billing_balance_handler(r);

    case NGX_HTTP_BILLING_EP_LEDGER:
        return ngx_http_billing_ledger_handler(r);

    case NGX_HTTP_BILLING_EP_RECONCILE:
        return ngx_http_billing_reconcile_handler(r);

    case NGX_HTTP_BILLING_EP_HOLDS:
        return ngx_http_billing_holds_handler(r);

    case NGX_HTTP_BILLING_EP_ERROR:
        return ngx_http_billing_error_handler(r);

    default:
        return ngx_http_billing_extra_handler(r, blcf->endpoint);
    }
}


ngx_http_billing_ctx_t *
ngx_http_billing_get_ctx(ngx_http_request_t *r)
{
    ngx_http_billing_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_billing_module);

    if (ctx == NULL) {
        ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_billing_ctx_t));
        if (ctx == NULL) {
            return NULL;
        }

        ngx_http_set_ctx(r, ctx, ngx_http_billing_module);
    }

    return ctx;
}


/* NGX_DECLINED when the method is allowed; otherwise the 405 answer */
ngx_int_t
ngx_http_billing_method(ngx_http_request_t *r, ngx_uint_t allowed,
    const char *allow)
{
    ngx_table_elt_t  *h;

    if (r->method & allowed) {
        return NGX_DECLINED;
    }

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "Allow");
    h->value.data = (u_char *) allow;
    h->value.len = ngx_strlen(allow);

    return ngx_http_billing_problem_s(r, NGX_HTTP_NOT_ALLOWED,
                                      "method_not_allowed",
                                      "this method is not allowed here");
}


ngx_int_t
ngx_http_billing_send(ngx_http_request_t *r, ngx_uint_t status,
    ngx_str_t *content_type, ngx_str_t *body)
{
    ngx_int_t     rc;
    ngx_buf_t    *b;
    ngx_chain_t   out;

    if (ngx_http_discard_request_body(r) != NGX_OK) {
        r->keepalive = 0;
    }

    r->headers_out.status = status;
    r->headers_out.content_type = *content_type;
    r->headers_out.content_type_len = content_type->len;
    r->headers_out.content_type_lowcase = NULL;
    r->headers_out.content_length_n = body->len;

    if (r->method == NGX_HTTP_HEAD || body->len == 0) {
        r->header_only = 1;
    }

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_ERROR;
    }

    b->pos = body->data;
    b->last = body->data + body->len;
    b->memory = 1;
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


ngx_int_t
ngx_http_billing_send_json(ngx_http_request_t *r, ngx_uint_t status,
    u_char *json, size_t len)
{
    ngx_str_t  body;

    body.data = json;
    body.len = len;

    return ngx_http_billing_send(r, status, &ngx_http_billing_json_type, &body);
}


static const char *
ngx_http_billing_title(ngx_uint_t status)
{
    switch (status) {
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 402: return "Payment Required";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 422: return "Unprocessable Content";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default:  return status < 500 ? "Client Error" : "Server Error";
    }
}


/* RFC 9457; "code" is the stable machine-readable part */
ngx_int_t
ngx_http_billing_problem(ngx_http_request_t *r, ngx_uint_t status,
    const char *code, const char *detail, size_t detail_len)
{
    size_t      esc, len;
    u_char     *p;
    ngx_str_t   body;

    esc = billing_json_escape(NULL, 0, detail, detail_len);

    len = sizeof("{\"type\":\"https://billing.scholarlink.app/problems/\","
                 "\"title\":\"\",\"status\":,\"detail\":\"\",\"code\":\"\"}")
          + 2 * ngx_strlen(code) + 32 + NGX_INT_T_LEN + esc;

    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    body.data = p;

    p = ngx_sprintf(p, "{\"type\":\"https://billing.scholarlink.app/"
                    "problems/%s\",\"title\":\"%s\",\"status\":%ui,"
                    "\"detail\":\"",
                    code, ngx_http_billing_title(status), status);
    p += billing_json_escape((char *) p, esc + 1, detail, detail_len);
    p = ngx_sprintf(p, "\",\"code\":\"%s\"}", code);

    body.len = p - body.data;

    return ngx_http_billing_send(r, status, &ngx_http_billing_problem_type,
                                 &body);
}

/* 400 invalid_request with a detail from the validator */
ngx_int_t
ngx_http_billing_invalid(ngx_http_request_t *r, const char *detail)
{
    return ngx_http_billing_problem(r, NGX_HTTP_BAD_REQUEST, "invalid_request",
                                    detail, ngx_strlen(detail));
}


/*
 * "billing error;" in a location named by error_page turns nginx's own
 * answers (413 from client_max_body_size, 429 from limit_req, ...) into
 * problem+json, so clients see one error format.
 */
static ngx_int_t
ngx_http_billing_error_handler(ngx_http_request_t *r)
{
    ngx_uint_t   status;
    const char  *code, *detail;

    status = r->err_status ? r->err_status : r->headers_out.status;

    switch (status) {
    case NGX_HTTP_REQUEST_ENTITY_TOO_LARGE:
        code = "payload_too_large";
        detail = "the request body is larger than allowed";
        break;
    case NGX_HTTP_TOO_MANY_REQUESTS:
        code = "rate_limited";
        detail = "too many requests; retry later";
        break;
    case NGX_HTTP_NOT_FOUND:
        code = "not_found";
        detail = "no such resource";
        break;
    case NGX_HTTP_FORBIDDEN:
        code = "forbidden";
        detail = "access denied";
        break;
    case NGX_HTTP_NOT_ALLOWED:
        code = "method_not_allowed";
        detail = "this method is not allowed here";
        break;
    default:
        if (status < 400 || status > 599) {
            status = NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
        code = status < 500 ? "bad_request" : "internal_error";
        detail = ngx_http_billing_title(status);
    }

    r->err_status = 0;

    return ngx_http_billing_problem(r, status, code, detail,
                                    ngx_strlen(detail));
}


/* bodies */


static ngx_int_t
ngx_http_billing_is_json(ngx_http_request_t *r)
{
    u_char     *p, *last;
    ngx_str_t  *ct;

    if (r->headers_in.content_type == NULL) {
        return 0;
    }

    ct = &r->headers_in.content_type->value;
    p = ct->data;
    last = p + ct->len;

    if (ct->len < sizeof("application/json") - 1
        || ngx_strncasecmp(p, (u_char *) "application/json",
                           sizeof("application/json") - 1) != 0)
    {
        return 0;
    }

    p += sizeof("application/json") - 1;

    /* parameters (charset) may follow, nothing else */
    while (p < last && *p == ' ') {
        p++;
    }

    return p == last || *p == ';';
}


ngx_int_t
ngx_http_billing_read_json_body(ngx_http_request_t *r,
    ngx_http_client_body_handler_pt post_handler)
{
    ngx_int_t  rc;

    if (!ngx_http_billing_is_json(r)) {
        return ngx_http_billing_problem_s(r, NGX_HTTP_UNSUPPORTED_MEDIA_TYPE,
                                          "unsupported_media_type",
                                          "send the body as application/json");
    }

    rc = ngx_http_read_client_request_body(r, post_handler);

    if (rc == NGX_HTTP_REQUEST_ENTITY_TOO_LARGE) {
        return ngx_http_billing_problem_s(r, rc, "payload_too_large",
                                        "the request body is larger than "
                                        "allowed");
    }

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    return NGX_DONE;
}


/* the whole body as one string; bodies may have been buffered to a file */
ngx_int_t
ngx_http_billing_body(ngx_http_request_t *r, ngx_str_t *body)
{
    size_t        len;
    u_char       *p;
    ssize_t       n;
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    body->len = 0;
    body->data = (u_char *) "";

    if (r->request_body == NULL || r->request_body->bufs == NULL) {
        return NGX_OK;
    }

    len = 0;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        b = cl->buf;
        len += b->in_file ? (size_t) (b->file_last - b->file_pos)
                          : (size_t) (b->last - b->pos);
    }

    p = ngx_pnalloc(r->pool, len + 1);
    if (p == NULL) {
        return NGX_ERROR;
    }

    body->data = p;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        b = cl->buf;

        if (b->in_file) {
            n = ngx_read_file(b->file, p, b->file_last - b->file_pos,
                              b->file_pos);
            if (n != b->file_last - b->file_pos) {
                return NGX_ERROR;
            }

            p += n;

        } else {
            p = ngx_cpymem(p, b->pos, b->last - b->pos);
        }
    }

    *p = '\0';
    body->len = len;

    return NGX_OK;
}


/* database calls on behalf of a request */


static ngx_int_t ngx_http_billing_run(ngx_http_request_t *r, const char *sql,
    int nparams, const char **values, ngx_http_billing_done_pt done,
    ngx_uint_t read_only);


/* a statement that may write */
ngx_int_t
ngx_http_billing_query(ngx_http_request_t *r, const char *sql, int nparams,
    const char **values, ngx_http_billing_done_pt done)
{
    return ngx_http_billing_run(r, sql, nparams, values, done, 0);
}


/* a statement that only reads: the pool may run it again on a lost link */
ngx_int_t
ngx_http_billing_read(ngx_http_request_t *r, const char *sql, int nparams,
    const char **values, ngx_http_billing_done_pt done)
{
    return ngx_http_billing_run(r, sql, nparams, values, done, 1);
}


static ngx_int_t
ngx_http_billing_run(ngx_http_request_t *r, const char *sql, int nparams,
    const char **values, ngx_http_billing_done_pt done, ngx_uint_t read_only)
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

    if (bmcf->pool == NULL) {
        return ngx_http_billing_problem_s(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                          "database_unavailable",
                                          "no database is configured");
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
    ngx_memzero(op, sizeof(ngx_http_billing_pg_op_t));

    op->sql = sql;
    op->nparams = nparams;
    op->values = values;
    op->handler = ngx_http_billing_query_done;
    op->data = r;
    op->log = r->connection->log;
    op->read_only = read_only;
    ctx->done = done;

    rc = ngx_http_billing_pg_query(bmcf->pool, op);

    if (rc == NGX_BUSY) {
        return ngx_http_billing_problem_s(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                          "database_busy",
                                          "too many requests are waiting for "
                                          "the database; retry later");
    }

    if (rc != NGX_OK) {
        return ngx_http_billing_problem_s(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                          "database_unavailable",
                                          "the database cannot be reached");
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


static void
ngx_http_billing_query_done(ngx_http_billing_pg_op_t *op)
{
    ngx_http_request_t      *r;
    ngx_http_billing_ctx_t  *ctx;

    r = op->data;
    ctx = ngx_http_get_module_ctx(r, ngx_http_billing_module);

    ctx->pending = 0;
    ctx->done(r, op);
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


void
ngx_http_billing_finalize(ngx_http_request_t *r, ngx_int_t rc)
{
    ngx_connection_t  *c;

    c = r->connection;

    ngx_http_finalize_request(r, rc);
    ngx_http_run_posted_requests(c);
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
ngx_http_billing_copy_value(ngx_http_request_t *r, PGresult *res, int col,
    ngx_str_t *out)
{
    out->len = 0;
    out->data = NULL;

    if (PQgetisnull(res, 0, col)) {
        return NGX_OK;
    }

    out->len = PQgetlength(res, 0, col);
    out->data = ngx_pnalloc(r->pool, out->len + 1);
    if (out->data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(out->data, PQgetvalue(res, 0, col), out->len + 1);

    return NGX_OK;
}


/*
 * Every API function answers one row (status, code, body, meta); the
 * values are copied into the request pool because the PGresult is freed
 * once the handler returns, and the response may be sent later.
 */
ngx_int_t
ngx_http_billing_api_row(ngx_http_request_t *r, ngx_http_billing_pg_op_t *op,
    ngx_http_billing_row_t *row)
{
    ngx_int_t  status;

    if (op->status != NGX_HTTP_BILLING_PG_OK) {
        return NGX_ERROR;
    }

    if (PQntuples(op->res) != 1 || PQnfields(op->res) != 4) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "billing: unexpected result shape: %d rows, %d columns",
                      PQntuples(op->res), PQnfields(op->res));
        op->status = NGX_HTTP_BILLING_PG_SQL_ERROR;
        return NGX_ERROR;
    }

    status = ngx_atoi((u_char *) PQgetvalue(op->res, 0, 0),
                      PQgetlength(op->res, 0, 0));

    if (status < 200 || status > 599) {
        op->status = NGX_HTTP_BILLING_PG_SQL_ERROR;
        return NGX_ERROR;
    }

    row->status = status;

    if (ngx_http_billing_copy_value(r, op->res, 1, &row->code) != NGX_OK
        || ngx_http_billing_copy_value(r, op->res, 2, &row->body) != NGX_OK
        || ngx_http_billing_copy_value(r, op->res, 3, &row->meta) != NGX_OK)
    {
        op->status = NGX_HTTP_BILLING_PG_SQL_ERROR;
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* answers with what an API function returned */
ngx_int_t
ngx_http_billing_api_respond(ngx_http_request_t *r,
    ngx_http_billing_row_t *row)
{
    if (row->code.len) {
        return ngx_http_billing_problem(r, row->status,
                                        (const char *) row->code.data,
                                        (const char *) row->body.data,
                                        row->body.len);
    }

    return ngx_http_billing_send_json(r, row->status, row->body.data,
                                      row->body.len);
}


/* request headers */


ngx_table_elt_t *
ngx_http_billing_find_header(ngx_http_request_t *r, const char *name,
    size_t len)
{
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len == len
            && ngx_strncasecmp(h[i].key.data, (u_char *) name, len) == 0)
        {
            return &h[i];
        }
    }

    return NULL;
}


/* the first such header's value, or an empty string with data NULL */
void
ngx_http_billing_header_value(ngx_http_request_t *r, const char *name,
    ngx_str_t *value)
{
    ngx_table_elt_t  *h;

    h = ngx_http_billing_find_header(r, name, ngx_strlen(name));

    if (h) {
        *value = h->value;

    } else {
        value->len = 0;
        value->data = NULL;
    }
}


/* the part of the URI after the location prefix: "" or "/{id}" */
ngx_int_t
ngx_http_billing_path_id(ngx_http_request_t *r, ngx_str_t *id)
{
    u_char                    *p;
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

    id->len = 0;
    id->data = NULL;

    if (clcf->regex == NULL && r->uri.len >= clcf->name.len
        && ngx_strncmp(r->uri.data, clcf->name.data, clcf->name.len) == 0)
    {
        p = r->uri.data + clcf->name.len;

    } else {
        p = r->uri.data + r->uri.len;

        while (p > r->uri.data && p[-1] != '/') {
            p--;
        }

        p--;
    }

    if (p >= r->uri.data + r->uri.len) {
        return NGX_OK;
    }

    if (*p != '/') {
        return NGX_DECLINED;
    }

    id->data = p + 1;
    id->len = r->uri.data + r->uri.len - id->data;

    return NGX_OK;
}


/* CORS */


static ngx_str_t *
ngx_http_billing_allowed_origin(ngx_http_request_t *r)
{
    ngx_str_t                    *origin, *allowed;
    ngx_uint_t                    i;
    ngx_table_elt_t              *h;
    ngx_http_billing_loc_conf_t  *blcf;

    blcf = ngx_http_get_module_loc_conf(r, ngx_http_billing_module);

    if (blcf->cors_origins == NULL) {
        return NULL;
    }

    h = ngx_http_billing_find_header(r, "Origin", sizeof("Origin") - 1);
    if (h == NULL) {
        return NULL;
    }

    origin = &h->value;
    allowed = blcf->cors_origins->elts;

    /* exact, case-sensitive match: no wildcards, no suffix tricks */
    for (i = 0; i < blcf->cors_origins->nelts; i++) {
        if (allowed[i].len == origin->len
            && ngx_strncmp(allowed[i].data, origin->data, origin->len) == 0)
        {
            return &allowed[i];
        }
    }

    return NULL;
}


static ngx_int_t
ngx_http_billing_add_header(ngx_http_request_t *r, const char *key,
    u_char *value, size_t len)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    h->key.data = (u_char *) key;
    h->key.len = ngx_strlen(key);
    h->value.data = value;
    h->value.len = len;

    return NGX_OK;
}


static ngx_int_t
ngx_http_billing_preflight(ngx_http_request_t *r)
{
    ngx_str_t   empty = ngx_null_string;
    ngx_str_t  *origin;

    origin = ngx_http_billing_allowed_origin(r);

    if (origin) {
        if (ngx_http_billing_add_response_header(r,
                                    "Access-Control-Allow-Methods",
                                    "GET, POST, DELETE, OPTIONS") != NGX_OK
            || ngx_http_billing_add_response_header(r,
                                    "Access-Control-Allow-Headers",
                                    "Authorization, Content-Type, "
                                    "Idempotency-Key") != NGX_OK
            || ngx_http_billing_add_response_header(r, "Access-Control-Max-Age",
                                                    "600") != NGX_OK)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    /* the allow-origin and Vary headers come from the header filter */
    return ngx_http_billing_send(r, NGX_HTTP_NO_CONTENT,
                                 &ngx_http_billing_json_type, &empty);
}


/*
 * A header filter rather than the content handler, so that the answers
 * nginx gives by itself (429, 413) carry CORS headers too and browsers can
 * read them.
 */
static ngx_int_t
ngx_http_billing_header_filter(ngx_http_request_t *r)
{
    ngx_str_t                    *origin;
    ngx_http_billing_loc_conf_t  *blcf;

    if (r != r->main) {
        return ngx_http_next_header_filter(r);
    }

    blcf = ngx_http_get_module_loc_conf(r, ngx_http_billing_module);

    if (blcf->cors_origins == NULL
        || blcf->endpoint == NGX_HTTP_BILLING_EP_NONE)
    {
        return ngx_http_next_header_filter(r);
    }

    if (ngx_http_billing_add_header(r, "Vary", (u_char *) "Origin", 6)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    origin = ngx_http_billing_allowed_origin(r);

    if (origin) {
        if (ngx_http_billing_add_header(r, "Access-Control-Allow-Origin",
                                        origin->data, origin->len) != NGX_OK
            || ngx_http_billing_add_response_header(r,
                                    "Access-Control-Expose-Headers",
                                    "Idempotent-Replayed") != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    return ngx_http_next_header_filter(r);
}


ngx_int_t
ngx_http_billing_init_filters(ngx_conf_t *cf)
{
    ngx_http_next_header_filter = ngx_http_top_header_filter;
    ngx_http_top_header_filter = ngx_http_billing_header_filter;

    return NGX_OK;
}


ngx_int_t
ngx_http_billing_add_response_header(ngx_http_request_t *r, const char *key,
    const char *value)
{
    return ngx_http_billing_add_header(r, key, (u_char *) value,
                                       ngx_strlen(value));
}
