
/*
 * ScholarLink Billing: CORS for browser clients: preflight answers, and a
 * header filter that marks every answer of a billing location.
 */


#ifndef _NGX_HTTP_BILLING_CORS_H_INCLUDED_
#define _NGX_HTTP_BILLING_CORS_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>


ngx_int_t ngx_http_billing_cors_preflight(ngx_http_request_t *r);
ngx_int_t ngx_http_billing_cors_init(ngx_conf_t *cf);


#endif /* _NGX_HTTP_BILLING_CORS_H_INCLUDED_ */
