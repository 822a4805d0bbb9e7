
/*
 * ScholarLink Billing: the one structure each shared zone of this module
 * holds.
 */


#ifndef _NGX_HTTP_BILLING_SHM_H_INCLUDED_
#define _NGX_HTTP_BILLING_SHM_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


void *ngx_http_billing_shm_init(ngx_shm_zone_t *shm_zone, void *data,
    size_t size, const char *what);


#endif /* _NGX_HTTP_BILLING_SHM_H_INCLUDED_ */
