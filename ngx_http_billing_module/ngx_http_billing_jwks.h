
/*
 * ScholarLink Billing: JWKS keys fetched with libcurl and shared
 * by all workers through a shared-memory zone.
 */


#ifndef _NGX_HTTP_BILLING_JWKS_H_INCLUDED_
#define _NGX_HTTP_BILLING_JWKS_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <openssl/evp.h>

#include "ngx_http_billing.h"


void ngx_http_billing_jwks_zone_conf(ngx_shm_zone_t *shm_zone,
    ngx_http_billing_main_conf_t *bmcf);
ngx_int_t ngx_http_billing_jwks_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
ngx_int_t ngx_http_billing_jwks_init_process(ngx_cycle_t *cycle,
    ngx_http_billing_main_conf_t *bmcf);
void ngx_http_billing_jwks_exit_process(void);
EVP_PKEY *ngx_http_billing_jwks_key(ngx_http_billing_main_conf_t *bmcf,
    const char *kid, ngx_uint_t has_kid, ngx_log_t *log);


#endif /* _NGX_HTTP_BILLING_JWKS_H_INCLUDED_ */
