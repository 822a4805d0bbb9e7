
/*
 * ScholarLink Billing: bearer tokens (RS256 JWT) and the
 * $billing_user_id variable.
 */


#ifndef _NGX_HTTP_BILLING_AUTH_H_INCLUDED_
#define _NGX_HTTP_BILLING_AUTH_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_billing.h"


ngx_http_billing_auth_e ngx_http_billing_authenticate(ngx_http_request_t *r);
ngx_int_t ngx_http_billing_require_auth(ngx_http_request_t *r,
    const char *scope);
ngx_int_t ngx_http_billing_add_variables(ngx_conf_t *cf);
void ngx_http_billing_auth_exit_process(void);


#endif /* _NGX_HTTP_BILLING_AUTH_H_INCLUDED_ */
