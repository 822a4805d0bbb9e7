
/*
 * ScholarLink Billing: /health, /readyz and /metrics.
 */


#ifndef _NGX_HTTP_BILLING_STATUS_H_INCLUDED_
#define _NGX_HTTP_BILLING_STATUS_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>


ngx_int_t ngx_http_billing_health_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_billing_readyz_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_billing_metrics_handler(ngx_http_request_t *r);


#endif /* _NGX_HTTP_BILLING_STATUS_H_INCLUDED_ */
