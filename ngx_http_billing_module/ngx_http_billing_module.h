
/*
 * ScholarLink Billing: shared declarations of the nginx glue.
 */


#ifndef _NGX_HTTP_BILLING_MODULE_H_INCLUDED_
#define _NGX_HTTP_BILLING_MODULE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <openssl/evp.h>

#include "ngx_http_billing_pg.h"
#include "ngx_http_billing_metrics.h"
#include "ngx_http_billing_curl.h"


/* the schema version this build needs (sql/NNN_*.sql) */
#define NGX_HTTP_BILLING_SCHEMA_VERSION  6


typedef enum {
    NGX_HTTP_BILLING_EP_NONE = 0,
    NGX_HTTP_BILLING_EP_HEALTH,
    NGX_HTTP_BILLING_EP_READYZ,
    NGX_HTTP_BILLING_EP_METRICS,
    NGX_HTTP_BILLING_EP_PACKAGES,
    NGX_HTTP_BILLING_EP_BALANCE,
    NGX_HTTP_BILLING_EP_LEDGER,
    NGX_HTTP_BILLING_EP_RECONCILE,
    NGX_HTTP_BILLING_EP_HOLDS,
    NGX_HTTP_BILLING_EP_PURCHASES,
    NGX_HTTP_BILLING_EP_WEBHOOK,
    NGX_HTTP_BILLING_EP_ERROR,          /* problem+json for error_page */
    NGX_HTTP_BILLING_EP_COUNT
} ngx_http_billing_endpoint_e;


typedef struct {
    /* PostgreSQL */
    ngx_str_t                     database_url;
    ngx_uint_t                    url_pool_max;      /* connection_limit=N */
    ngx_uint_t                    pool_min;
    ngx_uint_t                    pool_max;
    ngx_uint_t                    pool_queue;
    ngx_msec_t                    connect_timeout;
    ngx_msec_t                    query_timeout;

    ngx_shm_zone_t               *metrics_zone;

    /* JWT: a PEM key, or a JWKS URL with keys shared in a zone */
    EVP_PKEY                     *jwt_key;
    ngx_str_t                     jwks_url;
    ngx_shm_zone_t               *jwks_zone;
    time_t                        jwks_refresh;
    time_t                        jwks_cooldown;
    ngx_str_t                     jwt_issuer;
    ngx_str_t                     jwt_audience;
    time_t                        jwt_leeway;

    /* Stripe */
    ngx_str_t                     stripe_secret_key;
    ngx_array_t                  *stripe_webhook_secrets;  /* ngx_str_t */
    time_t                        stripe_tolerance;
    ngx_str_t                     stripe_api_url;
    ngx_msec_t                    stripe_connect_timeout;
    ngx_msec_t                    stripe_total_timeout;
    ngx_str_t                     checkout_success_url;
    ngx_str_t                     checkout_cancel_url;

    /* outgoing notifications (outbox) */
    ngx_str_t                     notify_url;
    ngx_str_t                     notify_secret;
    ngx_msec_t                    notify_interval;

    ngx_msec_t                    audit_interval;

    ngx_http_billing_pg_pool_t   *pool;                    /* per worker */
} ngx_http_billing_main_conf_t;


typedef struct {
    ngx_uint_t                    endpoint;
    ngx_array_t                  *cors_origins;            /* ngx_str_t */
} ngx_http_billing_loc_conf_t;


/* the outcome of verifying a request's bearer token, cached per request */
typedef enum {
    NGX_HTTP_BILLING_AUTH_UNKNOWN = 0,
    NGX_HTTP_BILLING_AUTH_OK,
    NGX_HTTP_BILLING_AUTH_MISSING,
    NGX_HTTP_BILLING_AUTH_INVALID,
    NGX_HTTP_BILLING_AUTH_EXPIRED
} ngx_http_billing_auth_e;


typedef void (*ngx_http_billing_done_pt)(ngx_http_request_t *r,
    ngx_http_billing_pg_op_t *op);


typedef struct {
    ngx_http_billing_auth_e       auth;
    ngx_str_t                     user_id;
    ngx_str_t                     scope;

    ngx_http_billing_pg_op_t      op;
    ngx_http_billing_done_pt      done;
    const char                   *params[8];

    unsigned                      pending:1;
    unsigned                      cleanup:1;
} ngx_http_billing_ctx_t;


/* one row of an API function: (status, code, body, meta) */
typedef struct {
    ngx_uint_t                    status;
    ngx_str_t                     code;
    ngx_str_t                     body;
    ngx_str_t                     meta;
} ngx_http_billing_row_t;


extern ngx_module_t  ngx_http_billing_module;


/* ngx_http_billing_request.c: shared request plumbing */
ngx_int_t ngx_http_billing_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_billing_extra_handler(ngx_http_request_t *r,
    ngx_uint_t endpoint);
ngx_http_billing_ctx_t *ngx_http_billing_get_ctx(ngx_http_request_t *r);
ngx_int_t ngx_http_billing_method(ngx_http_request_t *r, ngx_uint_t allowed,
    const char *allow);
ngx_int_t ngx_http_billing_send(ngx_http_request_t *r, ngx_uint_t status,
    ngx_str_t *content_type, ngx_str_t *body);
ngx_int_t ngx_http_billing_send_json(ngx_http_request_t *r, ngx_uint_t status,
    u_char *json, size_t len);
ngx_int_t ngx_http_billing_problem(ngx_http_request_t *r, ngx_uint_t status,
    const char *code, const char *detail, size_t detail_len);
/* a problem whose detail is a string literal */
#define ngx_http_billing_problem_s(r, status, code, detail)                   \
    ngx_http_billing_problem(r, status, code, detail, sizeof(detail) - 1)
ngx_int_t ngx_http_billing_invalid(ngx_http_request_t *r, const char *detail);
ngx_int_t ngx_http_billing_read_json_body(ngx_http_request_t *r,
    ngx_http_client_body_handler_pt post_handler);
ngx_int_t ngx_http_billing_body(ngx_http_request_t *r, ngx_str_t *body);
ngx_int_t ngx_http_billing_query(ngx_http_request_t *r, const char *sql,
    int nparams, const char **values, ngx_http_billing_done_pt done);
ngx_int_t ngx_http_billing_read(ngx_http_request_t *r, const char *sql,
    int nparams, const char **values, ngx_http_billing_done_pt done);
ngx_int_t ngx_http_billing_db_failure(ngx_http_request_t *r,
    ngx_http_billing_pg_op_t *op);
ngx_int_t ngx_http_billing_api_row(ngx_http_request_t *r,
    ngx_http_billing_pg_op_t *op, ngx_http_billing_row_t *row);
ngx_int_t ngx_http_billing_api_respond(ngx_http_request_t *r,
    ngx_http_billing_row_t *row);
ngx_table_elt_t *ngx_http_billing_find_header(ngx_http_request_t *r,
    const char *name, size_t len);
void ngx_http_billing_header_value(ngx_http_request_t *r, const char *name,
    ngx_str_t *value);
ngx_int_t ngx_http_billing_path_id(ngx_http_request_t *r, ngx_str_t *id);
ngx_int_t ngx_http_billing_add_response_header(ngx_http_request_t *r,
    const char *key, const char *value);
void ngx_http_billing_finalize(ngx_http_request_t *r, ngx_int_t rc);
ngx_int_t ngx_http_billing_init_filters(ngx_conf_t *cf);

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
