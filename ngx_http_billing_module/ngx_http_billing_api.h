
/*
 * ScholarLink Billing: the ledger API: packages and models, balance,
 * ledger and usage summary, reconcile, holds.
 */


#ifndef _NGX_HTTP_BILLING_API_H_INCLUDED_
#define _NGX_HTTP_BILLING_API_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>


ngx_int_t ngx_http_billing_packages_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_billing_models_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_billing_balance_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_billing_ledger_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_billing_usage_summary_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_billing_balance_of(ngx_http_request_t *r,
    const char *user);
ngx_int_t ngx_http_billing_ledger_of(ngx_http_request_t *r,
    const char *user);
ngx_int_t ngx_http_billing_reconcile_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_billing_hold_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_billing_hold_release_handler(ngx_http_request_t *r);
const char *const *ngx_http_billing_api_hot_statements(void);


#endif /* _NGX_HTTP_BILLING_API_H_INCLUDED_ */
