
/*
 * ScholarLink Billing: delivery of outgoing notifications.
 */


#ifndef _NGX_HTTP_BILLING_OUTBOX_H_INCLUDED_
#define _NGX_HTTP_BILLING_OUTBOX_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_billing.h"


ngx_int_t ngx_http_billing_outbox_init(ngx_cycle_t *cycle,
    ngx_http_billing_main_conf_t *bmcf);
void ngx_http_billing_outbox_exit(ngx_cycle_t *cycle);


#endif /* _NGX_HTTP_BILLING_OUTBOX_H_INCLUDED_ */
