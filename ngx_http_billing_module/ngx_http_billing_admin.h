
/*
 * ScholarLink Billing: administration (scope billing:admin).
 */


#ifndef _NGX_HTTP_BILLING_ADMIN_H_INCLUDED_
#define _NGX_HTTP_BILLING_ADMIN_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>


ngx_int_t ngx_http_billing_adjustment_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_billing_reversal_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_billing_user_view_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_billing_price_handler(ngx_http_request_t *r);


#endif /* _NGX_HTTP_BILLING_ADMIN_H_INCLUDED_ */
