
/*
 * ScholarLink Billing: database calls on behalf of a request, and the
 * answers made of the row an API function returns.
 */


#ifndef _NGX_HTTP_BILLING_DB_H_INCLUDED_
#define _NGX_HTTP_BILLING_DB_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_billing_pg.h"
#include "ngx_http_billing_request.h"


/* one row of an API function: (status, code, body, meta) */
typedef struct {
    ngx_uint_t                    status;
    ngx_str_t                     code;
    ngx_str_t                     body;
    ngx_str_t                     meta;
} ngx_http_billing_row_t;


ngx_int_t ngx_http_billing_query(ngx_http_request_t *r, const char *sql,
    int nparams, const char **values, ngx_http_billing_done_pt done);
ngx_int_t ngx_http_billing_query_batch(ngx_http_request_t *r, const char *sql,
    ngx_http_billing_pg_batch_t *batch, int nparams, const char **values,
    ngx_http_billing_done_pt done);
ngx_int_t ngx_http_billing_read(ngx_http_request_t *r, const char *sql,
    int nparams, const char **values, ngx_http_billing_done_pt done);
ngx_int_t ngx_http_billing_db_failure(ngx_http_request_t *r,
    ngx_http_billing_pg_op_t *op);
ngx_int_t ngx_http_billing_api_row(ngx_http_request_t *r,
    ngx_http_billing_pg_op_t *op, ngx_http_billing_row_t *row);
ngx_int_t ngx_http_billing_api_respond(ngx_http_request_t *r,
    ngx_http_billing_row_t *row);
ngx_int_t ngx_http_billing_respond(ngx_http_request_t *r,
    ngx_http_billing_pg_op_t *op);
ngx_int_t ngx_http_billing_respond_page(ngx_http_request_t *r,
    ngx_http_billing_row_t *row, const char *cursor);


#endif /* _NGX_HTTP_BILLING_DB_H_INCLUDED_ */
