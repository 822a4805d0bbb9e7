
/*
 * ScholarLink Billing: the periodic ledger audit.
 */


#ifndef _NGX_HTTP_BILLING_AUDIT_H_INCLUDED_
#define _NGX_HTTP_BILLING_AUDIT_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_billing.h"


ngx_int_t ngx_http_billing_audit_init(ngx_cycle_t *cycle,
    ngx_http_billing_main_conf_t *bmcf);
void ngx_http_billing_audit_exit(void);


#endif /* _NGX_HTTP_BILLING_AUDIT_H_INCLUDED_ */
