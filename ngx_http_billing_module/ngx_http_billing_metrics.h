
/*
 * ScholarLink Billing: Prometheus metrics in a shared-memory zone.
 */


#ifndef _NGX_HTTP_BILLING_METRICS_H_INCLUDED_
#define _NGX_HTTP_BILLING_METRICS_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


/*
 * Plain counters.  Each belongs to a family (metric name) and carries one
 * fixed label set; the table in ngx_http_billing_metrics.c names them.
 * The order here is the layout of the zone: append, never reorder
 * without changing the layout hash (done automatically from the table).
 */
/* the Stripe event types counted on their own, "other" included */
#define NGX_HTTP_BILLING_WEBHOOK_TYPES  9


typedef enum {
    NGX_HTTP_BILLING_M_DB_CONNECT_ERROR = 0,
    NGX_HTTP_BILLING_M_DB_QUERY_ERROR,
    NGX_HTTP_BILLING_M_DB_TIMEOUT,
    NGX_HTTP_BILLING_M_DB_QUEUE_FULL,

    NGX_HTTP_BILLING_M_RECONCILE_CHARGED,
    NGX_HTTP_BILLING_M_RECONCILE_REPLAYED,
    NGX_HTTP_BILLING_M_RECONCILE_CONFLICT,
    NGX_HTTP_BILLING_M_RECONCILE_INSUFFICIENT,
    NGX_HTTP_BILLING_M_RECONCILE_INVALID,
    NGX_HTTP_BILLING_M_RECONCILE_UNKNOWN_MODEL,
    NGX_HTTP_BILLING_M_RECONCILE_ERROR,

    NGX_HTTP_BILLING_M_JWT_OK,
    NGX_HTTP_BILLING_M_JWT_MISSING,
    NGX_HTTP_BILLING_M_JWT_INVALID,
    NGX_HTTP_BILLING_M_JWT_EXPIRED,
    NGX_HTTP_BILLING_M_JWT_FORBIDDEN,

    NGX_HTTP_BILLING_M_JWKS_OK,
    NGX_HTTP_BILLING_M_JWKS_ERROR,

    NGX_HTTP_BILLING_M_CREDITS_CONSUMED,
    NGX_HTTP_BILLING_M_CREDITS_PURCHASED,

    NGX_HTTP_BILLING_M_STRIPE_OK,
    NGX_HTTP_BILLING_M_STRIPE_ERROR,
    NGX_HTTP_BILLING_M_STRIPE_TIMEOUT,

    NGX_HTTP_BILLING_M_OUTBOX_OK,
    NGX_HTTP_BILLING_M_OUTBOX_ERROR,

    NGX_HTTP_BILLING_M_DB_BATCHES,
    NGX_HTTP_BILLING_M_DB_BATCHED,
    NGX_HTTP_BILLING_M_DB_BATCH_ALONE,

    /* webhooks: NGX_HTTP_BILLING_M_WEBHOOK + type * outcomes + outcome */
    NGX_HTTP_BILLING_M_WEBHOOK,

    NGX_HTTP_BILLING_M_COUNT = NGX_HTTP_BILLING_M_WEBHOOK
                               + NGX_HTTP_BILLING_WEBHOOK_TYPES * 5
} ngx_http_billing_counter_e;


typedef enum {
    NGX_HTTP_BILLING_WH_PROCESSED = 0,
    NGX_HTTP_BILLING_WH_DUPLICATE,
    NGX_HTTP_BILLING_WH_IGNORED,
    NGX_HTTP_BILLING_WH_INVALID_SIGNATURE,
    NGX_HTTP_BILLING_WH_ERROR
} ngx_http_billing_webhook_outcome_e;


/* gauges kept per worker and summed at scrape time */
typedef enum {
    NGX_HTTP_BILLING_G_POOL_IDLE = 0,
    NGX_HTTP_BILLING_G_POOL_BUSY,
    NGX_HTTP_BILLING_G_POOL_CONNECTING,
    NGX_HTTP_BILLING_G_POOL_WAITERS,
    NGX_HTTP_BILLING_G_COUNT
} ngx_http_billing_gauge_e;


/* gauges measured by one worker for everybody (last writer wins) */
typedef enum {
    NGX_HTTP_BILLING_S_OUTBOX_BACKLOG = 0,
    NGX_HTTP_BILLING_S_INVARIANT_VIOLATIONS,
    NGX_HTTP_BILLING_S_INVARIANT_CHECK_SUCCESS,     /* Unix time */
    NGX_HTTP_BILLING_S_OUTBOX_DEAD_LETTERS,
    NGX_HTTP_BILLING_S_COUNT
} ngx_http_billing_shared_gauge_e;


typedef enum {
    NGX_HTTP_BILLING_H_STRIPE = 0       /* histograms besides per-endpoint */
} ngx_http_billing_histogram_e;


ngx_int_t ngx_http_billing_metrics_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
void ngx_http_billing_metrics_attach(ngx_shm_zone_t *shm_zone);

void ngx_http_billing_metrics_inc(ngx_uint_t counter, uint64_t n);
void ngx_http_billing_metrics_gauge(ngx_uint_t gauge, uint64_t value);
void ngx_http_billing_metrics_shared_gauge(ngx_uint_t gauge, uint64_t value);
void ngx_http_billing_metrics_request(ngx_uint_t endpoint, ngx_uint_t status,
    ngx_msec_t elapsed);
void ngx_http_billing_metrics_observe(ngx_uint_t histogram,
    ngx_msec_t elapsed);
void ngx_http_billing_metrics_webhook(const u_char *type, size_t len,
    ngx_uint_t outcome);
void ngx_http_billing_metrics_worker_exit(void);

/* renders the text exposition format into a chain of the request's pool */
ngx_chain_t *ngx_http_billing_metrics_render(ngx_pool_t *pool, size_t *len);


#endif /* _NGX_HTTP_BILLING_METRICS_H_INCLUDED_ */
