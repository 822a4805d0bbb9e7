
/*
 * ScholarLink Billing: group commit: waiting calls of one kind sent as
 * one statement, one transaction, one round trip.
 */


#ifndef _NGX_HTTP_BILLING_BATCH_H_INCLUDED_
#define _NGX_HTTP_BILLING_BATCH_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>

#include "ngx_http_billing_pg.h"


/* max: "billing_batch max=N"; 0 or 1 leaves the pool sending one by one */
void ngx_http_billing_batch_init(ngx_http_billing_pg_pool_t *pool,
    ngx_uint_t max);


#endif /* _NGX_HTTP_BILLING_BATCH_H_INCLUDED_ */
