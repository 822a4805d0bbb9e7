
/*
 * ScholarLink Billing: what all of the glue shares: the configuration,
 * the endpoints, the module object.  Types only: no function of any file
 * is declared here, so including it makes no file depend on another.
 */


#ifndef _NGX_HTTP_BILLING_H_INCLUDED_
#define _NGX_HTTP_BILLING_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <openssl/evp.h>


/* the schema version this build needs (sql/NNN_*.sql) */
#define NGX_HTTP_BILLING_SCHEMA_VERSION  14


/* what a location serves; also the "endpoint" label of the metrics */
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
    NGX_HTTP_BILLING_EP_MODELS,
    NGX_HTTP_BILLING_EP_USAGE_SUMMARY,
    NGX_HTTP_BILLING_EP_ADMIN_ADJUSTMENTS,
    NGX_HTTP_BILLING_EP_ADMIN_USAGE,
    NGX_HTTP_BILLING_EP_ADMIN_USERS,
    NGX_HTTP_BILLING_EP_ADMIN_MODELS,
    NGX_HTTP_BILLING_EP_ERROR,          /* problem+json for error_page */
    NGX_HTTP_BILLING_EP_COUNT
} ngx_http_billing_endpoint_e;


/* the outcome of verifying a request's bearer token, cached per request */
typedef enum {
    NGX_HTTP_BILLING_AUTH_UNKNOWN = 0,
    NGX_HTTP_BILLING_AUTH_OK,
    NGX_HTTP_BILLING_AUTH_MISSING,
    NGX_HTTP_BILLING_AUTH_INVALID,
    NGX_HTTP_BILLING_AUTH_EXPIRED
} ngx_http_billing_auth_e;


typedef struct {
    /* PostgreSQL */
    ngx_str_t                     database_url;
    ngx_addr_t                   *database_resolver; /* a DNS server */
    ngx_uint_t                    url_pool_max;      /* connection_limit=N */
    ngx_uint_t                    pool_min;
    ngx_uint_t                    pool_max;
    ngx_uint_t                    pool_queue;
    ngx_msec_t                    connect_timeout;
    ngx_msec_t                    query_timeout;
    ngx_uint_t                    batch_max;         /* group commit */

    ngx_shm_zone_t               *metrics_zone;

    /* JWT: a PEM key, or a JWKS URL with keys shared in a zone */
    EVP_PKEY                     *jwt_key;
    ngx_str_t                     jwks_url;
    ngx_flag_t                    jwks_allow_http;   /* tests only */
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
    ngx_msec_t                    audit_budget;

    /* how the URL's host names are looked up (ngx_http_billing_lookup.h) */
    struct ngx_http_billing_lookup_conf_s  *lookup;

    /* per worker (ngx_http_billing_pg.h) */
    struct ngx_http_billing_pg_pool_s  *pool;
} ngx_http_billing_main_conf_t;


/*
 * Who may call what: a request is answered by the route's handler only
 * once its method is one of "methods" (405 with "allow" otherwise) and,
 * when "bearer" is set, it carries a valid token with "scope" (if any).
 */
typedef struct {
    ngx_uint_t                    methods;
    const char                   *allow;
    ngx_uint_t                    bearer;
    const char                   *scope;
    ngx_http_handler_pt           handler;
} ngx_http_billing_route_t;


/* "billing <name>;": the collection route, and the "/{id}" one if any */
typedef struct {
    ngx_str_t                     name;
    ngx_uint_t                    id;          /* the metrics' label */
    ngx_http_billing_route_t      collection;
    ngx_http_billing_route_t      item;        /* handler NULL: no items */
} ngx_http_billing_endpoint_t;


typedef struct {
    ngx_http_billing_endpoint_t  *endpoint;    /* chosen by "billing" */
    ngx_array_t                  *cors_origins;            /* ngx_str_t */
} ngx_http_billing_loc_conf_t;


extern ngx_module_t  ngx_http_billing_module;


#endif /* _NGX_HTTP_BILLING_H_INCLUDED_ */
