
/*
 * ScholarLink Billing: shared declarations of the nginx glue.
 */


#ifndef _NGX_HTTP_BILLING_MODULE_H_INCLUDED_
#define _NGX_HTTP_BILLING_MODULE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <openssl/evp.h>

#include "ngx_http_billing.h"
#include "ngx_http_billing_pg.h"
#include "ngx_http_billing_metrics.h"
#include "ngx_http_billing_curl.h"
#include "ngx_http_billing_response.h"
#include "ngx_http_billing_request.h"
#include "ngx_http_billing_db.h"
#include "ngx_http_billing_cors.h"

#include "billing_util.h"


/* ngx_http_billing_stripe.c: purchases and webhooks */
ngx_int_t ngx_http_billing_purchases_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_billing_webhook_handler(ngx_http_request_t *r);

/* ngx_http_billing_status.c: /health, /readyz, /metrics */
ngx_int_t ngx_http_billing_health_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_billing_readyz_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_billing_metrics_handler(ngx_http_request_t *r);

/* ngx_http_billing_auth.c: bearer tokens and $billing_user_id */
ngx_http_billing_auth_e ngx_http_billing_authenticate(ngx_http_request_t *r);
ngx_int_t ngx_http_billing_require_auth(ngx_http_request_t *r,
    const char *scope);
ngx_int_t ngx_http_billing_add_variables(ngx_conf_t *cf);

/* ngx_http_billing_jwks.c: JWKS keys shared by all workers */
ngx_int_t ngx_http_billing_jwks_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
ngx_int_t ngx_http_billing_jwks_init_process(ngx_cycle_t *cycle,
    ngx_http_billing_main_conf_t *bmcf);
void ngx_http_billing_jwks_exit_process(void);
EVP_PKEY *ngx_http_billing_jwks_key(ngx_http_billing_main_conf_t *bmcf,
    const char *kid, ngx_uint_t has_kid, ngx_log_t *log);

/* ngx_http_billing_audit.c: the periodic invariant check */
ngx_int_t ngx_http_billing_audit_init(ngx_cycle_t *cycle,
    ngx_http_billing_main_conf_t *bmcf);
void ngx_http_billing_audit_exit(void);

/* ngx_http_billing_api.c: the ledger API */
ngx_int_t ngx_http_billing_packages_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_billing_balance_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_billing_ledger_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_billing_reconcile_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_billing_holds_handler(ngx_http_request_t *r);

/* ngx_http_billing_outbox.c: outgoing notifications */
ngx_int_t ngx_http_billing_outbox_init(ngx_cycle_t *cycle,
    ngx_http_billing_main_conf_t *bmcf);
void ngx_http_billing_outbox_exit(ngx_cycle_t *cycle);


#endif /* _NGX_HTTP_BILLING_MODULE_H_INCLUDED_ */
