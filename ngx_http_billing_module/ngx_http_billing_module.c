
/*
 * ScholarLink Billing: directives, configuration and process hooks.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_billing.h"
#include "ngx_http_billing_admin.h"
#include "ngx_http_billing_api.h"
#include "ngx_http_billing_audit.h"
#include "ngx_http_billing_auth.h"
#include "ngx_http_billing_batch.h"
#include "ngx_http_billing_cors.h"
#include "ngx_http_billing_curl.h"
#include "ngx_http_billing_jwks.h"
#include "ngx_http_billing_lookup.h"
#include "ngx_http_billing_metrics.h"
#include "ngx_http_billing_outbox.h"
#include "ngx_http_billing_pg.h"
#include "ngx_http_billing_purchases.h"
#include "ngx_http_billing_request.h"
#include "ngx_http_billing_response.h"
#include "ngx_http_billing_status.h"
#include "ngx_http_billing_webhook.h"

#include "billing_jwk.h"
#include "billing_value.h"


/*
 * A shared zone of this module: the name it gets when no directive names
 * it, its least (and default) size, where the main configuration keeps it
 * and how it is initialized.
 */
typedef struct {
    ngx_str_t                     name;
    size_t                        size;
    size_t                        offset;
    ngx_shm_zone_init_pt          init;
} ngx_http_billing_zone_t;


static void *ngx_http_billing_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_billing_init_main_conf(ngx_conf_t *cf, void *conf);
static void *ngx_http_billing_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_billing_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static ngx_int_t ngx_http_billing_preconfiguration(ngx_conf_t *cf);
static ngx_int_t ngx_http_billing_postconfiguration(ngx_conf_t *cf);
static ngx_int_t ngx_http_billing_init_process(ngx_cycle_t *cycle);
static void ngx_http_billing_exit_process(ngx_cycle_t *cycle);
static ngx_int_t ngx_http_billing_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_billing_log_handler(ngx_http_request_t *r);

static char *ngx_http_billing(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
static char *ngx_http_billing_database_url(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_billing_database_resolver(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_billing_batch(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_billing_pool(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_billing_timeouts(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_billing_zone(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_billing_zone_add(ngx_conf_t *cf, void *conf,
    ngx_http_billing_zone_t *z, ngx_str_t *name, size_t size);
static char *ngx_http_billing_jwt_key(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_billing_secret(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_billing_secret_list(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_billing_secret_value(ngx_conf_t *cf, ngx_str_t *field);
static char *ngx_http_billing_checkout_urls(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);


static ngx_http_billing_zone_t  ngx_http_billing_metrics_zone = {
    ngx_string("billing_metrics"), 128 * 1024,
    offsetof(ngx_http_billing_main_conf_t, metrics_zone),
    ngx_http_billing_metrics_init_zone
};

static ngx_http_billing_zone_t  ngx_http_billing_jwks_zone = {
    ngx_string("billing_jwks"), 256 * 1024,
    offsetof(ngx_http_billing_main_conf_t, jwks_zone),
    ngx_http_billing_jwks_init_zone
};


#define NGX_HTTP_BILLING_GET     NGX_HTTP_GET|NGX_HTTP_HEAD, "GET, HEAD"
#define NGX_HTTP_BILLING_POST    NGX_HTTP_POST, "POST"
#define NGX_HTTP_BILLING_PUT     NGX_HTTP_PUT, "PUT"
#define NGX_HTTP_BILLING_DELETE  NGX_HTTP_DELETE, "DELETE"
#define NGX_HTTP_BILLING_GET_POST                                             \
    NGX_HTTP_GET|NGX_HTTP_HEAD|NGX_HTTP_POST, "GET, HEAD, POST"
#define NGX_HTTP_BILLING_ANY     (ngx_uint_t) -1, NULL

#define NGX_HTTP_BILLING_PUBLIC  0, NULL
#define NGX_HTTP_BILLING_TOKEN   1, NULL
#define NGX_HTTP_BILLING_USAGE   1, "billing:usage"
#define NGX_HTTP_BILLING_ADMIN   1, "billing:admin"

#define NGX_HTTP_BILLING_NO_ITEMS  { 0, NULL, 0, NULL, NULL }

/* the collection of an endpoint that has only items: nothing there */
#define NGX_HTTP_BILLING_NOTHING                                              \
    { NGX_HTTP_BILLING_ANY, NGX_HTTP_BILLING_PUBLIC,                          \
      ngx_http_billing_not_found_handler }


/*
 * Every endpoint: its methods, who may call it, and the handler that
 * answers; "billing <name>;" stores its entry in the location's
 * configuration, so nothing is looked up per request.
 */
static ngx_http_billing_endpoint_t  ngx_http_billing_endpoints[] = {

    { ngx_string("health"), NGX_HTTP_BILLING_EP_HEALTH,
      { NGX_HTTP_BILLING_GET, NGX_HTTP_BILLING_PUBLIC,
        ngx_http_billing_health_handler },
      NGX_HTTP_BILLING_NO_ITEMS },

    { ngx_string("readyz"), NGX_HTTP_BILLING_EP_READYZ,
      { NGX_HTTP_BILLING_GET, NGX_HTTP_BILLING_PUBLIC,
        ngx_http_billing_readyz_handler },
      NGX_HTTP_BILLING_NO_ITEMS },

    { ngx_string("metrics"), NGX_HTTP_BILLING_EP_METRICS,
      { NGX_HTTP_BILLING_GET, NGX_HTTP_BILLING_PUBLIC,
        ngx_http_billing_metrics_handler },
      NGX_HTTP_BILLING_NO_ITEMS },

    { ngx_string("packages"), NGX_HTTP_BILLING_EP_PACKAGES,
      { NGX_HTTP_BILLING_GET, NGX_HTTP_BILLING_PUBLIC,
        ngx_http_billing_packages_handler },
      NGX_HTTP_BILLING_NO_ITEMS },

    { ngx_string("models"), NGX_HTTP_BILLING_EP_MODELS,
      { NGX_HTTP_BILLING_GET, NGX_HTTP_BILLING_PUBLIC,
        ngx_http_billing_models_handler },
      NGX_HTTP_BILLING_NO_ITEMS },

    { ngx_string("balance"), NGX_HTTP_BILLING_EP_BALANCE,
      { NGX_HTTP_BILLING_GET, NGX_HTTP_BILLING_TOKEN,
        ngx_http_billing_balance_handler },
      NGX_HTTP_BILLING_NO_ITEMS },

    { ngx_string("ledger"), NGX_HTTP_BILLING_EP_LEDGER,
      { NGX_HTTP_BILLING_GET, NGX_HTTP_BILLING_TOKEN,
        ngx_http_billing_ledger_handler },
      NGX_HTTP_BILLING_NO_ITEMS },

    { ngx_string("usage_summary"), NGX_HTTP_BILLING_EP_USAGE_SUMMARY,
      { NGX_HTTP_BILLING_GET, NGX_HTTP_BILLING_TOKEN,
        ngx_http_billing_usage_summary_handler },
      NGX_HTTP_BILLING_NO_ITEMS },

    { ngx_string("reconcile"), NGX_HTTP_BILLING_EP_RECONCILE,
      { NGX_HTTP_BILLING_POST, NGX_HTTP_BILLING_USAGE,
        ngx_http_billing_reconcile_handler },
      NGX_HTTP_BILLING_NO_ITEMS },

    { ngx_string("holds"), NGX_HTTP_BILLING_EP_HOLDS,
      { NGX_HTTP_BILLING_POST, NGX_HTTP_BILLING_USAGE,
        ngx_http_billing_hold_handler },
      { NGX_HTTP_BILLING_DELETE, NGX_HTTP_BILLING_USAGE,
        ngx_http_billing_hold_release_handler } },

    { ngx_string("purchases"), NGX_HTTP_BILLING_EP_PURCHASES,
      { NGX_HTTP_BILLING_GET_POST, NGX_HTTP_BILLING_TOKEN,
        ngx_http_billing_purchase_handler },
      { NGX_HTTP_BILLING_GET, NGX_HTTP_BILLING_TOKEN,
        ngx_http_billing_purchase_get_handler } },

    { ngx_string("webhook"), NGX_HTTP_BILLING_EP_WEBHOOK,
      { NGX_HTTP_BILLING_POST, NGX_HTTP_BILLING_PUBLIC,
        ngx_http_billing_webhook_handler },
      NGX_HTTP_BILLING_NO_ITEMS },

    /* administration, docs/spec.md §4.7 */
    { ngx_string("admin_adjustments"), NGX_HTTP_BILLING_EP_ADMIN_ADJUSTMENTS,
      { NGX_HTTP_BILLING_POST, NGX_HTTP_BILLING_ADMIN,
        ngx_http_billing_adjustment_handler },
      NGX_HTTP_BILLING_NO_ITEMS },

    { ngx_string("admin_usage"), NGX_HTTP_BILLING_EP_ADMIN_USAGE,
      NGX_HTTP_BILLING_NOTHING,
      { NGX_HTTP_BILLING_POST, NGX_HTTP_BILLING_ADMIN,
        ngx_http_billing_reversal_handler } },

    { ngx_string("admin_users"), NGX_HTTP_BILLING_EP_ADMIN_USERS,
      NGX_HTTP_BILLING_NOTHING,
      { NGX_HTTP_BILLING_GET, NGX_HTTP_BILLING_ADMIN,
        ngx_http_billing_user_view_handler } },

    { ngx_string("admin_models"), NGX_HTTP_BILLING_EP_ADMIN_MODELS,
      NGX_HTTP_BILLING_NOTHING,
      { NGX_HTTP_BILLING_PUT, NGX_HTTP_BILLING_ADMIN,
        ngx_http_billing_price_handler } },

    /* problem+json for the answers nginx gives itself (error_page) */
    { ngx_string("error"), NGX_HTTP_BILLING_EP_ERROR,
      { NGX_HTTP_BILLING_ANY, NGX_HTTP_BILLING_PUBLIC,
        ngx_http_billing_error_handler },
      NGX_HTTP_BILLING_NO_ITEMS },

    { ngx_null_string, 0, NGX_HTTP_BILLING_NO_ITEMS,
      NGX_HTTP_BILLING_NO_ITEMS }
};


/* "name=time" parameters of a timeouts directive and where they go */
typedef struct {
    ngx_str_t                     name;
    size_t                        offset;
} ngx_http_billing_timeout_t;


static ngx_http_billing_timeout_t  ngx_http_billing_db_timeouts[] = {
    { ngx_string("connect="),
      offsetof(ngx_http_billing_main_conf_t, connect_timeout) },
    { ngx_string("query="),
      offsetof(ngx_http_billing_main_conf_t, query_timeout) },
    { ngx_null_string, 0 }
};


static ngx_http_billing_timeout_t  ngx_http_billing_stripe_timeouts[] = {
    { ngx_string("connect="),
      offsetof(ngx_http_billing_main_conf_t, stripe_connect_timeout) },
    { ngx_string("total="),
      offsetof(ngx_http_billing_main_conf_t, stripe_total_timeout) },
    { ngx_null_string, 0 }
};


static ngx_command_t  ngx_http_billing_commands[] = {

    { ngx_string("billing"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_billing,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("billing_database_url"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_billing_database_url,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("billing_database_resolver"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_billing_database_resolver,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("billing_pool"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_http_billing_pool,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("billing_batch"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_billing_batch,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("billing_db_timeouts"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_http_billing_timeouts,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      ngx_http_billing_db_timeouts },

    { ngx_string("billing_audit_interval"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_billing_main_conf_t, audit_interval),
      NULL },

    { ngx_string("billing_audit_budget"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_billing_main_conf_t, audit_budget),
      NULL },

    { ngx_string("billing_metrics_zone"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE2,
      ngx_http_billing_zone,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      &ngx_http_billing_metrics_zone },

    { ngx_string("billing_jwt_key"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_billing_jwt_key,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("billing_jwt_jwks_url"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_billing_main_conf_t, jwks_url),
      NULL },

    { ngx_string("billing_jwt_jwks_allow_http"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_billing_main_conf_t, jwks_allow_http),
      NULL },

    { ngx_string("billing_jwt_jwks_zone"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE2,
      ngx_http_billing_zone,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      &ngx_http_billing_jwks_zone },

    { ngx_string("billing_jwt_jwks_refresh"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_billing_main_conf_t, jwks_refresh),
      NULL },

    { ngx_string("billing_jwt_jwks_cooldown"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_billing_main_conf_t, jwks_cooldown),
      NULL },

    { ngx_string("billing_jwt_issuer"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_billing_secret,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_billing_main_conf_t, jwt_issuer),
      NULL },

    { ngx_string("billing_jwt_audience"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_billing_secret,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_billing_main_conf_t, jwt_audience),
      NULL },

    { ngx_string("billing_jwt_leeway"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_billing_main_conf_t, jwt_leeway),
      NULL },

    { ngx_string("billing_stripe_secret_key"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_billing_secret,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_billing_main_conf_t, stripe_secret_key),
      NULL },

    { ngx_string("billing_stripe_webhook_secret"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_billing_secret_list,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_billing_main_conf_t, stripe_webhook_secrets),
      NULL },

    { ngx_string("billing_stripe_webhook_tolerance"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_billing_main_conf_t, stripe_tolerance),
      NULL },

    { ngx_string("billing_stripe_api_url"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_billing_main_conf_t, stripe_api_url),
      NULL },

    { ngx_string("billing_stripe_timeouts"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_http_billing_timeouts,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      ngx_http_billing_stripe_timeouts },

    { ngx_string("billing_checkout_urls"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE2,
      ngx_http_billing_checkout_urls,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("billing_notify_url"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_billing_main_conf_t, notify_url),
      NULL },

    { ngx_string("billing_notify_secret"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_billing_secret,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_billing_main_conf_t, notify_secret),
      NULL },

    { ngx_string("billing_notify_interval"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_billing_main_conf_t, notify_interval),
      NULL },

    { ngx_string("billing_cors_origins"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_conf_set_str_array_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_billing_loc_conf_t, cors_origins),
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_billing_module_ctx = {
    ngx_http_billing_preconfiguration,     /* preconfiguration */
    ngx_http_billing_postconfiguration,    /* postconfiguration */

    ngx_http_billing_create_main_conf,     /* create main configuration */
    ngx_http_billing_init_main_conf,       /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_billing_create_loc_conf,      /* create location configuration */
    ngx_http_billing_merge_loc_conf        /* merge location configuration */
};


ngx_module_t  ngx_http_billing_module = {
    NGX_MODULE_V1,
    &ngx_http_billing_module_ctx,          /* module context */
    ngx_http_billing_commands,             /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_http_billing_init_process,         /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_billing_exit_process,         /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static void *
ngx_http_billing_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_billing_main_conf_t  *bmcf;

    bmcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_billing_main_conf_t));
    if (bmcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     bmcf->database_url = { 0, NULL };
     *     bmcf->jwt_key = NULL;
     *     bmcf->metrics_zone = NULL;
     *     bmcf->pool = NULL;
     */

    bmcf->url_pool_max = NGX_CONF_UNSET_UINT;
    bmcf->pool_min = NGX_CONF_UNSET_UINT;
    bmcf->pool_max = NGX_CONF_UNSET_UINT;
    bmcf->pool_queue = NGX_CONF_UNSET_UINT;
    bmcf->batch_max = NGX_CONF_UNSET_UINT;
    bmcf->connect_timeout = NGX_CONF_UNSET_MSEC;
    bmcf->query_timeout = NGX_CONF_UNSET_MSEC;
    bmcf->audit_interval = NGX_CONF_UNSET_MSEC;
    bmcf->audit_budget = NGX_CONF_UNSET_MSEC;
    bmcf->jwt_leeway = NGX_CONF_UNSET;
    bmcf->jwks_refresh = NGX_CONF_UNSET;
    bmcf->jwks_cooldown = NGX_CONF_UNSET;
    bmcf->jwks_allow_http = NGX_CONF_UNSET;
    bmcf->stripe_tolerance = NGX_CONF_UNSET;
    bmcf->stripe_connect_timeout = NGX_CONF_UNSET_MSEC;
    bmcf->stripe_total_timeout = NGX_CONF_UNSET_MSEC;
    bmcf->notify_interval = NGX_CONF_UNSET_MSEC;

    return bmcf;
}


static char *
ngx_http_billing_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_billing_main_conf_t *bmcf = conf;

    ngx_conf_init_uint_value(bmcf->pool_min, 2);
    ngx_conf_init_uint_value(bmcf->pool_max, 10);
    ngx_conf_init_uint_value(bmcf->pool_queue, 128);
    ngx_conf_init_uint_value(bmcf->batch_max, 0);
    ngx_conf_init_msec_value(bmcf->connect_timeout, 5000);
    ngx_conf_init_msec_value(bmcf->query_timeout, 10000);
    ngx_conf_init_msec_value(bmcf->audit_interval, 60000);

    /*
     * An audit run stops itself after its budget, keeping its progress, so
     * that the pool's query timeout (the server's statement_timeout too)
     * never cancels it: the budget must leave room for the last chunk.
     */
    if (bmcf->audit_budget == NGX_CONF_UNSET_MSEC) {
        bmcf->audit_budget = ngx_min(1000, bmcf->query_timeout / 2);

    } else if (bmcf->audit_budget == 0
               || bmcf->audit_budget > bmcf->query_timeout / 2)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"billing_audit_budget\" must be positive and at "
                           "most half the query timeout (%M ms)",
                           bmcf->query_timeout);
        return NGX_CONF_ERROR;
    }
    ngx_conf_init_value(bmcf->jwt_leeway, 60);
    ngx_conf_init_value(bmcf->jwks_refresh, 600);
    ngx_conf_init_value(bmcf->jwks_cooldown, 30);
    ngx_conf_init_value(bmcf->jwks_allow_http, 0);

    if (bmcf->jwt_key && bmcf->jwks_url.len) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"billing_jwt_key\" and \"billing_jwt_jwks_url\" "
                           "cannot both be set");
        return NGX_CONF_ERROR;
    }

    /* keys fetched in plain text could be swapped by anyone on the path */
    if (bmcf->jwks_url.len
        && !billing_url_scheme_allowed((const char *) bmcf->jwks_url.data,
                                       bmcf->jwks_url.len,
                                       bmcf->jwks_allow_http))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"billing_jwt_jwks_url\" must be an https:// URL%s",
                           bmcf->jwks_allow_http
                           ? " or an http:// one"
                           : " (\"billing_jwt_jwks_allow_http on\" also "
                             "allows http://, for tests)");
        return NGX_CONF_ERROR;
    }
    ngx_conf_init_value(bmcf->stripe_tolerance, 300);
    ngx_conf_init_msec_value(bmcf->stripe_connect_timeout, 5000);
    ngx_conf_init_msec_value(bmcf->stripe_total_timeout, 15000);
    ngx_conf_init_msec_value(bmcf->notify_interval, 1000);

    if (bmcf->stripe_api_url.len == 0) {
        ngx_str_set(&bmcf->stripe_api_url, "https://api.stripe.com");
    }

    while (bmcf->stripe_api_url.len
           && bmcf->stripe_api_url.data[bmcf->stripe_api_url.len - 1] == '/')
    {
        bmcf->stripe_api_url.len--;
    }

    if (bmcf->notify_url.len && bmcf->notify_secret.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"billing_notify_url\" requires "
                           "\"billing_notify_secret\"");
        return NGX_CONF_ERROR;
    }

    if (bmcf->notify_interval == 0) {
        bmcf->notify_interval = 1;
    }

    /* the deployment URL's connection_limit=N is the pool's maximum */
    if (bmcf->url_pool_max != NGX_CONF_UNSET_UINT && bmcf->url_pool_max) {
        bmcf->pool_max = bmcf->url_pool_max;
    }

    if (bmcf->pool_min > bmcf->pool_max) {
        bmcf->pool_min = bmcf->pool_max;
    }

    /* host names to look up off the event loop: a thread pool for them */
    return ngx_http_billing_lookup_conf(cf, &bmcf->database_url,
                                        bmcf->database_resolver,
                                        &bmcf->lookup);
}


static void *
ngx_http_billing_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_billing_loc_conf_t  *blcf;

    blcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_billing_loc_conf_t));
    if (blcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     blcf->endpoint = NULL;
     */

    blcf->cors_origins = NGX_CONF_UNSET_PTR;

    return blcf;
}


static char *
ngx_http_billing_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_billing_loc_conf_t *prev = parent;
    ngx_http_billing_loc_conf_t *conf = child;

    /* the endpoint belongs to its own location only: not merged */
    ngx_conf_merge_ptr_value(conf->cors_origins, prev->cors_origins, NULL);

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_billing_preconfiguration(ngx_conf_t *cf)
{
    return ngx_http_billing_add_variables(cf);
}


static ngx_int_t
ngx_http_billing_postconfiguration(ngx_conf_t *cf)
{
    ngx_http_handler_pt           *h;
    ngx_http_core_main_conf_t     *cmcf;
    ngx_http_billing_main_conf_t  *bmcf;

    bmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_billing_module);

    /* the zones no directive named, under their default names */
    if (bmcf->metrics_zone == NULL
        && ngx_http_billing_zone_add(cf, bmcf, &ngx_http_billing_metrics_zone,
                                     NULL, 0)
           != NGX_CONF_OK)
    {
        return NGX_ERROR;
    }

    if (bmcf->jwks_url.len && bmcf->jwks_zone == NULL
        && ngx_http_billing_zone_add(cf, bmcf, &ngx_http_billing_jwks_zone,
                                     NULL, 0)
           != NGX_CONF_OK)
    {
        return NGX_ERROR;
    }

    /* the zone compares the URL its keys came from with this one */
    if (bmcf->jwks_zone) {
        ngx_http_billing_jwks_zone_conf(bmcf->jwks_zone, bmcf);
    }

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_LOG_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_billing_log_handler;

    return ngx_http_billing_cors_init(cf);
}


static ngx_int_t
ngx_http_billing_init_process(ngx_cycle_t *cycle)
{
    const char *const             *hot;
    ngx_http_billing_main_conf_t  *bmcf;

    /* cache manager and loader processes serve no requests */
    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        return NGX_OK;
    }

    bmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_billing_module);
    if (bmcf == NULL) {
        return NGX_OK;
    }

    ngx_http_billing_metrics_attach(bmcf->metrics_zone);

    if (ngx_http_billing_curl_init(cycle) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ngx_http_billing_jwks_init_process(cycle, bmcf) != NGX_OK) {
        return NGX_ERROR;
    }

    if (bmcf->database_url.len == 0) {
        return NGX_OK;
    }

    bmcf->pool = ngx_http_billing_pg_pool_create(cycle, &bmcf->database_url,
                                                 bmcf->lookup,
                                                 bmcf->pool_min,
                                                 bmcf->pool_max,
                                                 bmcf->pool_queue,
                                                 bmcf->connect_timeout,
                                                 bmcf->query_timeout);
    if (bmcf->pool == NULL) {
        return NGX_ERROR;
    }

    ngx_http_billing_batch_init(bmcf->pool, bmcf->batch_max);

    for (hot = ngx_http_billing_api_hot_statements(); *hot; hot++) {
        if (ngx_http_billing_pg_prepare(bmcf->pool, *hot) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    if (ngx_http_billing_audit_init(cycle, bmcf) != NGX_OK) {
        return NGX_ERROR;
    }

    return ngx_http_billing_outbox_init(cycle, bmcf);
}


static void
ngx_http_billing_exit_process(ngx_cycle_t *cycle)
{
    ngx_http_billing_main_conf_t  *bmcf;

    bmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_billing_module);
    if (bmcf == NULL) {
        return;
    }

    ngx_http_billing_audit_exit();
    ngx_http_billing_auth_exit_process();
    ngx_http_billing_jwks_exit_process();
    ngx_http_billing_outbox_exit(cycle);
    ngx_http_billing_curl_exit(cycle);

    if (bmcf->pool) {
        ngx_http_billing_pg_pool_destroy(bmcf->pool);
        bmcf->pool = NULL;
    }

    ngx_http_billing_metrics_worker_exit();
}


/*
 * The content handler of every billing location.  A CORS preflight is
 * answered before the endpoint sees it; otherwise the route ("/{id}" or
 * the collection) checks the method and the caller, in that order, and
 * its handler answers.
 */
static ngx_int_t
ngx_http_billing_handler(ngx_http_request_t *r)
{
    ngx_int_t                     rc;
    ngx_str_t                     id;
    ngx_http_billing_ctx_t       *ctx;
    ngx_http_billing_route_t     *route;
    ngx_http_billing_endpoint_t  *ep;
    ngx_http_billing_loc_conf_t  *blcf;

    blcf = ngx_http_get_module_loc_conf(r, ngx_http_billing_module);
    ep = blcf->endpoint;

    if (r->method == NGX_HTTP_OPTIONS && blcf->cors_origins
        && ep->id != NGX_HTTP_BILLING_EP_ERROR)
    {
        return ngx_http_billing_cors_preflight(r);
    }

    route = &ep->collection;

    if (ep->item.handler) {
        rc = ngx_http_billing_path_id(r, &id);
        if (rc != NGX_DECLINED) {
            return rc;
        }

        if (id.len) {
            ctx = ngx_http_billing_get_ctx(r);
            if (ctx == NULL) {
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }

            ctx->item = id;
            route = &ep->item;
        }
    }

    rc = ngx_http_billing_method(r, route->methods, route->allow);
    if (rc != NGX_DECLINED) {
        return rc;
    }

    if (route->bearer) {
        rc = ngx_http_billing_require_auth(r, route->scope);
        if (rc != NGX_DECLINED) {
            return rc;
        }
    }

    return route->handler(r);
}


/* counts every answer of a billing location, also those nginx itself
 * gave (413, 429, ...) before our content handler ran */
static ngx_int_t
ngx_http_billing_log_handler(ngx_http_request_t *r)
{
    ngx_time_t                   *tp;
    ngx_msec_int_t                ms;
    ngx_http_billing_loc_conf_t  *blcf;

    blcf = ngx_http_get_module_loc_conf(r, ngx_http_billing_module);

    if (blcf->endpoint == NULL) {
        return NGX_OK;
    }

    tp = ngx_timeofday();
    ms = (ngx_msec_int_t) ((tp->sec - r->start_sec) * 1000
                           + (tp->msec - r->start_msec));

    ngx_http_billing_metrics_request(blcf->endpoint->id,
                                     r->headers_out.status,
                                     (ngx_msec_t) ngx_max(ms, 0));

    return NGX_OK;
}


/* directives */


static char *
ngx_http_billing(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_billing_loc_conf_t *blcf = conf;

    ngx_str_t                    *value;
    ngx_http_core_loc_conf_t     *clcf;
    ngx_http_billing_endpoint_t  *e;

    if (blcf->endpoint) {
        return "is duplicate";
    }

    value = cf->args->elts;

    /* the words of a configuration file are NUL-terminated */
    for (e = ngx_http_billing_endpoints; e->name.len; e++) {
        if (ngx_strcmp(e->name.data, value[1].data) == 0) {
            break;
        }
    }

    if (e->name.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "unknown billing endpoint \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    blcf->endpoint = e;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_billing_handler;

    return NGX_CONF_OK;
}


/* secrets do not linger in freed memory */
static void
ngx_http_billing_free_value(char *value, size_t len)
{
    ngx_explicit_memzero(value, len);
    free(value);
}


/*
 * Resolves a "env:NAME", "file:PATH" or literal value.  The value may be a
 * secret: it is copied into the configuration pool and never logged.
 */
static char *
ngx_http_billing_resolve(ngx_conf_t *cf, ngx_str_t *spec, ngx_str_t *out)
{
    char    *value, err[256];
    size_t   len;

    if (billing_value_resolve((const char *) spec->data, spec->len, &value,
                              &len, err, sizeof(err))
        != 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "%s", err);
        return NGX_CONF_ERROR;
    }

    out->data = ngx_pnalloc(cf->pool, len + 1);
    if (out->data == NULL) {
        ngx_http_billing_free_value(value, len);
        return NGX_CONF_ERROR;
    }

    ngx_memcpy(out->data, value, len + 1);
    out->len = len;

    ngx_http_billing_free_value(value, len);

    return NGX_CONF_OK;
}


static char *
ngx_http_billing_database_url(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_billing_main_conf_t *bmcf = conf;

    long        limit;
    char       *url, err[256];
    ngx_str_t  *value, resolved;

    if (bmcf->database_url.data) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_http_billing_resolve(cf, &value[1], &resolved) != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
    }

    if (billing_dburl_take_connection_limit((const char *) resolved.data,
                                            resolved.len, &url, &limit,
                                            err, sizeof(err))
        != 0)
    {
        ngx_explicit_memzero(resolved.data, resolved.len);
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid billing_database_url: %s", err);
        return NGX_CONF_ERROR;
    }

    ngx_explicit_memzero(resolved.data, resolved.len);

    bmcf->database_url.len = ngx_strlen(url);
    bmcf->database_url.data = ngx_pnalloc(cf->pool, bmcf->database_url.len + 1);
    if (bmcf->database_url.data == NULL) {
        ngx_http_billing_free_value(url, bmcf->database_url.len);
        return NGX_CONF_ERROR;
    }

    ngx_memcpy(bmcf->database_url.data, url, bmcf->database_url.len + 1);
    ngx_http_billing_free_value(url, bmcf->database_url.len);

    bmcf->url_pool_max = (ngx_uint_t) limit;

    return NGX_CONF_OK;
}


/*
 * "billing_database_resolver 127.0.0.1:5353": the DNS server the database
 * host is looked up with, instead of those of /etc/resolv.conf (the C
 * library's other rules still apply).  An IPv4 address: the C library's
 * resolver state holds those with a port.
 */
static char *
ngx_http_billing_database_resolver(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_billing_main_conf_t *bmcf = conf;

    ngx_str_t  *value;
    ngx_url_t   u;

    if (bmcf->database_resolver) {
        return "is duplicate";
    }

    value = cf->args->elts;

    ngx_memzero(&u, sizeof(ngx_url_t));

    u.url = value[1];
    u.default_port = 53;
    u.no_resolve = 1;

    if (ngx_parse_url(cf->pool, &u) != NGX_OK || u.naddrs != 1
        || u.addrs[0].sockaddr->sa_family != AF_INET)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid DNS server \"%V\": an IPv4 address "
                           "with an optional port", &value[1]);
        return NGX_CONF_ERROR;
    }

    bmcf->database_resolver = &u.addrs[0];

    return NGX_CONF_OK;
}


/* "max=N": waiting calls of one kind sent together at most, 0 = one by one */
static char *
ngx_http_billing_batch(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_billing_main_conf_t *bmcf = conf;

    ngx_int_t   n;
    ngx_str_t  *value;

    if (bmcf->batch_max != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (value[1].len < 4 || ngx_strncmp(value[1].data, "max=", 4) != 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    n = ngx_atoi(value[1].data + 4, value[1].len - 4);

    if (n == NGX_ERROR || n > NGX_HTTP_BILLING_PG_BATCH_MAX) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid value \"%V\" (max=0..%d)", &value[1],
                           NGX_HTTP_BILLING_PG_BATCH_MAX);
        return NGX_CONF_ERROR;
    }

    bmcf->batch_max = (ngx_uint_t) n;

    return NGX_CONF_OK;
}


static char *
ngx_http_billing_pool(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_billing_main_conf_t *bmcf = conf;

    ngx_int_t    n;
    ngx_str_t   *value, s;
    ngx_uint_t   i, *field;

    if (bmcf->pool_max != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "min=", 4) == 0) {
            field = &bmcf->pool_min;
            s.data = value[i].data + 4;
            s.len = value[i].len - 4;

        } else if (ngx_strncmp(value[i].data, "max=", 4) == 0) {
            field = &bmcf->pool_max;
            s.data = value[i].data + 4;
            s.len = value[i].len - 4;

        } else if (ngx_strncmp(value[i].data, "queue=", 6) == 0) {
            field = &bmcf->pool_queue;
            s.data = value[i].data + 6;
            s.len = value[i].len - 6;

        } else {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid parameter \"%V\"", &value[i]);
            return NGX_CONF_ERROR;
        }

        n = ngx_atoi(s.data, s.len);
        if (n == NGX_ERROR || n > 10000
            || (field == &bmcf->pool_max && n == 0))
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid value \"%V\"", &value[i]);
            return NGX_CONF_ERROR;
        }

        *field = (ngx_uint_t) n;
    }

    if (bmcf->pool_max == NGX_CONF_UNSET_UINT) {
        bmcf->pool_max = 10;
    }

    if (bmcf->pool_min != NGX_CONF_UNSET_UINT
        && bmcf->pool_min > bmcf->pool_max)
    {
        return "has min greater than max";
    }

    return NGX_CONF_OK;
}


/* "connect=5s query=10s": each parameter into its field of the main conf */
static char *
ngx_http_billing_timeouts(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    u_char  *p = conf;

    ngx_str_t                   *value, s;
    ngx_msec_t                   ms;
    ngx_uint_t                   i;
    ngx_http_billing_timeout_t  *t;

    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {

        for (t = cmd->post; t->name.len; t++) {
            if (value[i].len > t->name.len
                && ngx_strncmp(value[i].data, t->name.data, t->name.len) == 0)
            {
                break;
            }
        }

        if (t->name.len == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid parameter \"%V\"", &value[i]);
            return NGX_CONF_ERROR;
        }

        s.data = value[i].data + t->name.len;
        s.len = value[i].len - t->name.len;

        ms = ngx_parse_time(&s, 0);
        if (ms == (ngx_msec_t) NGX_ERROR || ms == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid timeout \"%V\"", &value[i]);
            return NGX_CONF_ERROR;
        }

        *(ngx_msec_t *) (p + t->offset) = ms;
    }

    return NGX_CONF_OK;
}


/* "name size": a zone of this module, at least its default size */
static char *
ngx_http_billing_zone(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_billing_zone_t *z = cmd->post;

    ssize_t     size;
    ngx_str_t  *value;

    if (*(ngx_shm_zone_t **) ((char *) conf + z->offset)) {
        return "is duplicate";
    }

    value = cf->args->elts;

    size = ngx_parse_size(&value[2]);
    if (size == NGX_ERROR || (size_t) size < z->size) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid zone size \"%V\": at least %uzk",
                           &value[2], z->size / 1024);
        return NGX_CONF_ERROR;
    }

    return ngx_http_billing_zone_add(cf, conf, z, &value[1], size);
}


/* the zone, named and sized by a directive, or by default (NULL, 0) */
static char *
ngx_http_billing_zone_add(ngx_conf_t *cf, void *conf,
    ngx_http_billing_zone_t *z, ngx_str_t *name, size_t size)
{
    ngx_shm_zone_t  **zone;

    zone = (ngx_shm_zone_t **) ((char *) conf + z->offset);

    if (name == NULL) {
        name = &z->name;
        size = z->size;
    }

    *zone = ngx_shared_memory_add(cf, name, size, &ngx_http_billing_module);
    if (*zone == NULL) {
        return NGX_CONF_ERROR;
    }

    /* one name for two of this module's zones: one would use the other's */
    if ((*zone)->data || (*zone)->init) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "duplicate zone \"%V\"", name);
        return NGX_CONF_ERROR;
    }

    (*zone)->init = z->init;

    return NGX_CONF_OK;
}


static void
ngx_http_billing_free_key(void *data)
{
    EVP_PKEY_free(data);
}


static char *
ngx_http_billing_jwt_key(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_billing_main_conf_t *bmcf = conf;

    char                err[256];
    ngx_str_t          *value, pem;
    ngx_pool_cleanup_t *cln;

    if (bmcf->jwt_key) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_http_billing_resolve(cf, &value[1], &pem) != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
    }

    bmcf->jwt_key = billing_pem_public_key((const char *) pem.data, pem.len,
                                           err, sizeof(err));
    if (bmcf->jwt_key == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid billing_jwt_key: %s", err);
        return NGX_CONF_ERROR;
    }

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        return NGX_CONF_ERROR;
    }

    cln->handler = ngx_http_billing_free_key;
    cln->data = bmcf->jwt_key;

    return NGX_CONF_OK;
}


/* a value that may be a secret: "env:NAME", "file:PATH" or a literal */
static char *
ngx_http_billing_secret(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    char  *p = conf;

    ngx_str_t  *field;

    field = (ngx_str_t *) (p + cmd->offset);

    if (field->data) {
        return "is duplicate";
    }

    return ngx_http_billing_secret_value(cf, field);
}


static char *
ngx_http_billing_secret_list(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    char  *p = conf;

    ngx_str_t     *s;
    ngx_array_t  **a;

    a = (ngx_array_t **) (p + cmd->offset);

    if (*a == NULL) {
        *a = ngx_array_create(cf->pool, 2, sizeof(ngx_str_t));
        if (*a == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    s = ngx_array_push(*a);
    if (s == NULL) {
        return NGX_CONF_ERROR;
    }

    return ngx_http_billing_secret_value(cf, s);
}


/* the directive's value, resolved; a secret cannot be empty */
static char *
ngx_http_billing_secret_value(ngx_conf_t *cf, ngx_str_t *field)
{
    ngx_str_t  *value;

    value = cf->args->elts;

    if (ngx_http_billing_resolve(cf, &value[1], field) != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
    }

    if (field->len == 0) {
        return "is empty";
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_billing_checkout_urls(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_billing_main_conf_t *bmcf = conf;

    ngx_str_t   *value, *field;
    ngx_uint_t   i, n;

    if (bmcf->checkout_success_url.data) {
        return "is duplicate";
    }

    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "success=", 8) == 0) {
            field = &bmcf->checkout_success_url;
            n = 8;

        } else if (ngx_strncmp(value[i].data, "cancel=", 7) == 0) {
            field = &bmcf->checkout_cancel_url;
            n = 7;

        } else {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid parameter \"%V\"", &value[i]);
            return NGX_CONF_ERROR;
        }

        field->data = value[i].data + n;
        field->len = value[i].len - n;

        if (field->len == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "empty URL in \"%V\"", &value[i]);
            return NGX_CONF_ERROR;
        }
    }

    if (bmcf->checkout_success_url.len == 0
        || bmcf->checkout_cancel_url.len == 0)
    {
        return "requires success= and cancel=";
    }

    return NGX_CONF_OK;
}
