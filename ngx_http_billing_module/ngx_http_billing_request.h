
/*
 * ScholarLink Billing: request plumbing: the module's request context,
 * request headers, the path after a location's prefix and request bodies.
 */


#ifndef _NGX_HTTP_BILLING_REQUEST_H_INCLUDED_
#define _NGX_HTTP_BILLING_REQUEST_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_billing.h"
#include "ngx_http_billing_pg.h"


/*
 * What a request does with its whole body, and with the result of its
 * database call (ngx_http_billing_db.c).  Both return what a content
 * handler returns; the caller finalizes the request with it.
 */
typedef ngx_int_t (*ngx_http_billing_body_pt)(ngx_http_request_t *r,
    ngx_str_t *body, void *data);
typedef ngx_int_t (*ngx_http_billing_done_pt)(ngx_http_request_t *r,
    ngx_http_billing_pg_op_t *op);


typedef struct {
    ngx_http_billing_auth_e       auth;
    ngx_str_t                     user_id;
    ngx_str_t                     scope;

    ngx_str_t                     item;           /* the "/{id}" */
    ngx_str_t                     webhook_type;   /* for its metrics */

    ngx_http_billing_body_pt      body_handler;
    void                         *body_data;

    ngx_http_billing_pg_op_t      op;
    ngx_http_billing_done_pt      done;
    const char                   *params[8];

    unsigned                      pending:1;
    unsigned                      cleanup:1;
} ngx_http_billing_ctx_t;


ngx_http_billing_ctx_t *ngx_http_billing_get_ctx(ngx_http_request_t *r);
ngx_table_elt_t *ngx_http_billing_find_header(ngx_http_request_t *r,
    const char *name, size_t len);
void ngx_http_billing_header_value(ngx_http_request_t *r, const char *name,
    ngx_str_t *value);
ngx_int_t ngx_http_billing_path_id(ngx_http_request_t *r, ngx_str_t *id);
ngx_int_t ngx_http_billing_path_uuid(ngx_http_request_t *r, ngx_str_t *path,
    const char *detail, const char **uuid);
ngx_int_t ngx_http_billing_read_body(ngx_http_request_t *r,
    ngx_http_billing_body_pt handler, void *data);
ngx_int_t ngx_http_billing_read_json_body(ngx_http_request_t *r,
    ngx_http_billing_body_pt handler, void *data);


#endif /* _NGX_HTTP_BILLING_REQUEST_H_INCLUDED_ */
