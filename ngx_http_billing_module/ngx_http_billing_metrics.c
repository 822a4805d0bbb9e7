
/*
 * ScholarLink Billing: Prometheus metrics in a shared-memory zone.
 *
 * The layout is fixed when the configuration is read: arrays of atomic
 * counters, updated with ngx_atomic_fetch_add and never under a lock, so
 * every worker counts into the same numbers and a scrape served by any
 * worker sees all of them.  Histograms store per-bucket counts; cumulative
 * buckets, _count and _sum are computed at scrape time, so "+Inf" can never
 * be below another bucket.  The zone keeps a layout hash: on reload the old
 * counters are kept when the layout is the same and reset otherwise.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_billing.h"
#include "ngx_http_billing_metrics.h"
#include "ngx_http_billing_shm.h"


#define NGX_HTTP_BILLING_METRICS_MAGIC    0x42494c4c4d455452ULL
#define NGX_HTTP_BILLING_METRICS_WORKERS  64
#define NGX_HTTP_BILLING_BUCKETS          13
#define NGX_HTTP_BILLING_HISTOGRAMS       1


typedef struct {
    ngx_atomic_t                  bucket[NGX_HTTP_BILLING_BUCKETS + 1];
    ngx_atomic_t                  sum_us;
} ngx_http_billing_histogram_t;


typedef struct {
    ngx_atomic_t                  pid;
    ngx_atomic_t                  value[NGX_HTTP_BILLING_G_COUNT];
} ngx_http_billing_worker_gauges_t;


typedef struct {
    uint64_t                      magic;
    uint64_t                      layout;
    ngx_atomic_t                  counter[NGX_HTTP_BILLING_M_COUNT];
    ngx_atomic_t                  requests[NGX_HTTP_BILLING_EP_COUNT][24];
    ngx_http_billing_histogram_t  latency[NGX_HTTP_BILLING_EP_COUNT];
    ngx_http_billing_histogram_t  histogram[NGX_HTTP_BILLING_HISTOGRAMS];
    ngx_http_billing_worker_gauges_t  worker[NGX_HTTP_BILLING_METRICS_WORKERS];
    ngx_atomic_t                  shared[NGX_HTTP_BILLING_S_COUNT];
} ngx_http_billing_metrics_shm_t;


typedef struct {
    const char                   *name;
    const char                   *type;
    const char                   *help;
    const char                   *labels;
} ngx_http_billing_metric_desc_t;


static ngx_http_billing_metrics_shm_t  *ngx_http_billing_metrics;


/* upper bounds in microseconds */
static const uint64_t  ngx_http_billing_bucket_us[NGX_HTTP_BILLING_BUCKETS] = {
    1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000,
    1000000, 2500000, 5000000, 10000000
};

static const char  *ngx_http_billing_bucket_le[NGX_HTTP_BILLING_BUCKETS + 1] = {
    "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25",
    "0.5", "1", "2.5", "5", "10", "+Inf"
};


/* statuses with a series of their own; anything else counts as "other" */
static const ngx_uint_t  ngx_http_billing_statuses[] = {
    200, 201, 204, 400, 401, 402, 403, 404, 405, 409, 413, 415, 422, 429,
    499, 500, 502, 503, 504, 0
};

#define NGX_HTTP_BILLING_NSTATUS                                              \
    (sizeof(ngx_http_billing_statuses) / sizeof(ngx_uint_t))


static const char
    *ngx_http_billing_endpoint_names[NGX_HTTP_BILLING_EP_COUNT] =
{
    "other", "health", "readyz", "metrics", "packages", "balance", "ledger",
    "reconcile", "holds", "purchases", "webhook", "models", "usage_summary",
    "admin_adjustments", "admin_usage", "admin_users", "admin_models",
    "error"
};


#define DB_ERRORS   "billing_db_errors_total", "counter",                      \
                    "Database errors by kind."
#define RECONCILE   "billing_reconcile_total", "counter",                      \
                    "Usage reconcile requests by outcome."
#define JWT         "billing_jwt_verifications_total", "counter",              \
                    "Bearer token verifications by outcome."
#define JWKS        "billing_jwks_refreshes_total", "counter",                 \
                    "JWKS key set refreshes by outcome."
#define STRIPE      "billing_stripe_api_requests_total", "counter",            \
                    "Calls to the Stripe API by outcome."
#define OUTBOX      "billing_outbox_deliveries_total", "counter",              \
                    "Outgoing notification deliveries by outcome."

static const ngx_http_billing_metric_desc_t
    ngx_http_billing_counters[NGX_HTTP_BILLING_M_WEBHOOK] =
{
    { DB_ERRORS, "kind=\"connect\"" },
    { DB_ERRORS, "kind=\"query\"" },
    { DB_ERRORS, "kind=\"timeout\"" },
    { DB_ERRORS, "kind=\"queue_full\"" },

    { RECONCILE, "outcome=\"charged\"" },
    { RECONCILE, "outcome=\"replayed\"" },
    { RECONCILE, "outcome=\"conflict\"" },
    { RECONCILE, "outcome=\"insufficient\"" },
    { RECONCILE, "outcome=\"invalid\"" },
    { RECONCILE, "outcome=\"unknown_model\"" },
    { RECONCILE, "outcome=\"error\"" },

    { JWT, "outcome=\"ok\"" },
    { JWT, "outcome=\"missing\"" },
    { JWT, "outcome=\"invalid\"" },
    { JWT, "outcome=\"expired\"" },
    { JWT, "outcome=\"forbidden\"" },

    { JWKS, "outcome=\"ok\"" },
    { JWKS, "outcome=\"error\"" },

    { "billing_credits_consumed_micros_total", "counter",
      "Credits debited for usage, in micro-dollars.", NULL },
    { "billing_credits_purchased_micros_total", "counter",
      "Credits granted by paid purchases, in micro-dollars.", NULL },

    { STRIPE, "outcome=\"ok\"" },
    { STRIPE, "outcome=\"error\"" },
    { STRIPE, "outcome=\"timeout\"" },

    { OUTBOX, "outcome=\"ok\"" },
    { OUTBOX, "outcome=\"error\"" },

    { "billing_db_batches_total", "counter",
      "Statements that carried several waiting requests (group commit).",
      NULL },
    { "billing_db_batched_requests_total", "counter",
      "Requests those statements carried.", NULL },
    { "billing_db_batch_retries_total", "counter",
      "Requests sent again alone after their batch failed as a whole.",
      NULL },
};


static const char  *ngx_http_billing_webhook_types[NGX_HTTP_BILLING_WEBHOOK_TYPES] = {
    "checkout.session.completed",
    "checkout.session.async_payment_succeeded",
    "checkout.session.async_payment_failed",
    "checkout.session.expired",
    "payment_intent.succeeded",
    "charge.refunded",
    "charge.dispute.created",
    "charge.dispute.closed",
    "other"
};

static const char  *ngx_http_billing_webhook_outcomes[] = {
    "processed", "duplicate", "ignored", "invalid_signature", "error"
};


static uint64_t
ngx_http_billing_metrics_layout(void)
{
    uint32_t    crc;
    ngx_uint_t  i;

    ngx_crc32_init(crc);

    for (i = 0; i < NGX_HTTP_BILLING_M_WEBHOOK; i++) {
        ngx_crc32_update(&crc, (u_char *) ngx_http_billing_counters[i].name,
                         ngx_strlen(ngx_http_billing_counters[i].name));
    }

    ngx_crc32_final(crc);

    return ((uint64_t) sizeof(ngx_http_billing_metrics_shm_t) << 32) | crc;
}


ngx_int_t
ngx_http_billing_metrics_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_http_billing_metrics_shm_t  *m, *old;

    /* a reload with the same layout: the counters carry on */
    old = data;

    if (old && (old->magic != NGX_HTTP_BILLING_METRICS_MAGIC
                || old->layout != ngx_http_billing_metrics_layout()))
    {
        old = NULL;
    }

    m = ngx_http_billing_shm_init(shm_zone, old,
                                  sizeof(ngx_http_billing_metrics_shm_t),
                                  "metrics");
    if (m == NULL) {
        return NGX_ERROR;
    }

    if (m->magic != NGX_HTTP_BILLING_METRICS_MAGIC
        || m->layout != ngx_http_billing_metrics_layout())
    {
        ngx_memzero(m, sizeof(ngx_http_billing_metrics_shm_t));
        m->magic = NGX_HTTP_BILLING_METRICS_MAGIC;
        m->layout = ngx_http_billing_metrics_layout();
    }

    ngx_http_billing_metrics = m;

    return NGX_OK;
}


void
ngx_http_billing_metrics_attach(ngx_shm_zone_t *shm_zone)
{
    ngx_http_billing_metrics = shm_zone ? shm_zone->data : NULL;
}


void
ngx_http_billing_metrics_inc(ngx_uint_t counter, uint64_t n)
{
    if (ngx_http_billing_metrics && counter < NGX_HTTP_BILLING_M_COUNT) {
        (void) ngx_atomic_fetch_add(&ngx_http_billing_metrics->counter[counter],
                                    n);
    }
}


static ngx_http_billing_worker_gauges_t *
ngx_http_billing_metrics_slot(void)
{
    ngx_uint_t  w;

    w = ngx_min(ngx_worker, NGX_HTTP_BILLING_METRICS_WORKERS - 1);

    return &ngx_http_billing_metrics->worker[w];
}


void
ngx_http_billing_metrics_gauge(ngx_uint_t gauge, uint64_t value)
{
    ngx_http_billing_worker_gauges_t  *slot;

    if (ngx_http_billing_metrics == NULL || gauge >= NGX_HTTP_BILLING_G_COUNT) {
        return;
    }

    slot = ngx_http_billing_metrics_slot();
    slot->pid = (ngx_atomic_uint_t) ngx_pid;
    slot->value[gauge] = value;
}


void
ngx_http_billing_metrics_shared_gauge(ngx_uint_t gauge, uint64_t value)
{
    if (ngx_http_billing_metrics && gauge < NGX_HTTP_BILLING_S_COUNT) {
        ngx_http_billing_metrics->shared[gauge] = value;
    }
}


void
ngx_http_billing_metrics_worker_exit(void)
{
    ngx_uint_t                         i;
    ngx_http_billing_worker_gauges_t  *slot;

    if (ngx_http_billing_metrics == NULL) {
        return;
    }

    /* a new worker may already own the slot after a reload */
    slot = ngx_http_billing_metrics_slot();

    if (slot->pid == (ngx_atomic_uint_t) ngx_pid) {
        for (i = 0; i < NGX_HTTP_BILLING_G_COUNT; i++) {
            slot->value[i] = 0;
        }
    }
}


static void
ngx_http_billing_histogram_add(ngx_http_billing_histogram_t *h, uint64_t us)
{
    ngx_uint_t  i;

    for (i = 0; i < NGX_HTTP_BILLING_BUCKETS; i++) {
        if (us <= ngx_http_billing_bucket_us[i]) {
            break;
        }
    }

    (void) ngx_atomic_fetch_add(&h->bucket[i], 1);
    (void) ngx_atomic_fetch_add(&h->sum_us, us);
}


void
ngx_http_billing_metrics_request(ngx_uint_t endpoint, ngx_uint_t status,
    ngx_msec_t elapsed)
{
    ngx_uint_t  i;

    if (ngx_http_billing_metrics == NULL
        || endpoint >= NGX_HTTP_BILLING_EP_COUNT)
    {
        return;
    }

    for (i = 0; i < NGX_HTTP_BILLING_NSTATUS - 1; i++) {
        if (ngx_http_billing_statuses[i] == status) {
            break;
        }
    }

    (void) ngx_atomic_fetch_add(
                        &ngx_http_billing_metrics->requests[endpoint][i], 1);

    ngx_http_billing_histogram_add(&ngx_http_billing_metrics->latency[endpoint],
                                   (uint64_t) elapsed * 1000);
}


void
ngx_http_billing_metrics_observe(ngx_uint_t histogram, ngx_msec_t elapsed)
{
    if (ngx_http_billing_metrics && histogram < NGX_HTTP_BILLING_HISTOGRAMS) {
        ngx_http_billing_histogram_add(
            &ngx_http_billing_metrics->histogram[histogram],
            (uint64_t) elapsed * 1000);
    }
}


void
ngx_http_billing_metrics_webhook(const u_char *type, size_t len,
    ngx_uint_t outcome)
{
    ngx_uint_t  i, n;

    n = sizeof(ngx_http_billing_webhook_types) / sizeof(char *) - 1;

    /* unknown types share one series: label values stay bounded */
    for (i = 0; i < n; i++) {
        if (len == ngx_strlen(ngx_http_billing_webhook_types[i])
            && ngx_strncmp(type, ngx_http_billing_webhook_types[i], len) == 0)
        {
            break;
        }
    }

    ngx_http_billing_metrics_inc(NGX_HTTP_BILLING_M_WEBHOOK + i * 5 + outcome,
                                 1);
}


/* rendering */


typedef struct {
    u_char                       *pos;
    u_char                       *last;
} ngx_http_billing_out_t;


#define ngx_http_billing_out(o, ...)                                          \
    (o)->pos = ngx_slprintf((o)->pos, (o)->last, __VA_ARGS__)


static void
ngx_http_billing_render_header(ngx_http_billing_out_t *o, const char *name,
    const char *type, const char *help)
{
    ngx_http_billing_out(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name,
                         type);
}


static void
ngx_http_billing_render_histogram(ngx_http_billing_out_t *o, const char *name,
    const char *label, ngx_http_billing_histogram_t *h)
{
    uint64_t    cumulative, sum;
    ngx_uint_t  i;

    cumulative = 0;

    for (i = 0; i <= NGX_HTTP_BILLING_BUCKETS; i++) {
        cumulative += h->bucket[i];
        ngx_http_billing_out(o, "%s_bucket{%s%sle=\"%s\"} %uL\n", name,
                             label, *label ? "," : "",
                             ngx_http_billing_bucket_le[i], cumulative);
    }

    sum = h->sum_us;

    ngx_http_billing_out(o, "%s_sum%s%s%s %uL.%06uL\n", name,
                         *label ? "{" : "", label, *label ? "}" : "",
                         sum / 1000000, sum % 1000000);
    ngx_http_billing_out(o, "%s_count%s%s%s %uL\n", name,
                         *label ? "{" : "", label, *label ? "}" : "",
                         cumulative);
}


ngx_chain_t *
ngx_http_billing_metrics_render(ngx_pool_t *pool, size_t *len)
{
    u_char                                 label[64];
    uint64_t                               v, gauges[NGX_HTTP_BILLING_G_COUNT];
    ngx_buf_t                             *b;
    ngx_uint_t                             i, j, w;
    ngx_chain_t                           *cl;
    ngx_http_billing_out_t                 o;
    ngx_http_billing_metrics_shm_t        *m;
    const ngx_http_billing_metric_desc_t  *d, *prev;

    m = ngx_http_billing_metrics;
    if (m == NULL) {
        return NULL;
    }

    /* the layout is bounded, so is the output: one buffer */
    b = ngx_create_temp_buf(pool, 128 * 1024);
    if (b == NULL) {
        return NULL;
    }

    o.pos = b->pos;
    o.last = b->end;

    ngx_http_billing_render_header(&o, "billing_http_requests_total", "counter",
                                   "HTTP requests answered, by endpoint and "
                                   "status.");

    for (i = 0; i < NGX_HTTP_BILLING_EP_COUNT; i++) {
        for (j = 0; j < NGX_HTTP_BILLING_NSTATUS; j++) {
            v = m->requests[i][j];
            if (v == 0) {
                continue;
            }

            if (ngx_http_billing_statuses[j]) {
                ngx_http_billing_out(&o, "billing_http_requests_total"
                                     "{endpoint=\"%s\",status=\"%ui\"} %uL\n",
                                     ngx_http_billing_endpoint_names[i],
                                     ngx_http_billing_statuses[j], v);
            } else {
                ngx_http_billing_out(&o, "billing_http_requests_total"
                                     "{endpoint=\"%s\",status=\"other\"} %uL\n",
                                     ngx_http_billing_endpoint_names[i], v);
            }
        }
    }

    ngx_http_billing_render_header(&o, "billing_http_request_duration_seconds",
                                   "histogram",
                                   "Time to answer, by endpoint.");

    for (i = 1; i < NGX_HTTP_BILLING_EP_COUNT; i++) {
        ngx_sprintf(label, "endpoint=\"%s\"%Z",
                    ngx_http_billing_endpoint_names[i]);
        ngx_http_billing_render_histogram(&o,
                                    "billing_http_request_duration_seconds",
                                    (char *) label, &m->latency[i]);
    }

    prev = NULL;

    for (i = 0; i < NGX_HTTP_BILLING_M_WEBHOOK; i++) {
        d = &ngx_http_billing_counters[i];

        if (prev == NULL || ngx_strcmp(prev->name, d->name) != 0) {
            ngx_http_billing_render_header(&o, d->name, d->type, d->help);
        }

        prev = d;

        if (d->labels) {
            ngx_http_billing_out(&o, "%s{%s} %uL\n", d->name, d->labels,
                                 (uint64_t) m->counter[i]);
        } else {
            ngx_http_billing_out(&o, "%s %uL\n", d->name,
                                 (uint64_t) m->counter[i]);
        }
    }

    ngx_http_billing_render_header(&o, "billing_stripe_webhooks_total",
                                   "counter",
                                   "Stripe webhook events by type and "
                                   "outcome.");

    for (i = 0; i < NGX_HTTP_BILLING_WEBHOOK_TYPES; i++) {
        for (j = 0; j < 5; j++) {
            v = m->counter[NGX_HTTP_BILLING_M_WEBHOOK + i * 5 + j];
            if (v == 0) {
                continue;
            }

            ngx_http_billing_out(&o, "billing_stripe_webhooks_total"
                                 "{type=\"%s\",outcome=\"%s\"} %uL\n",
                                 ngx_http_billing_webhook_types[i],
                                 ngx_http_billing_webhook_outcomes[j], v);
        }
    }

    ngx_http_billing_render_header(&o, "billing_stripe_api_duration_seconds",
                                   "histogram",
                                   "Time Stripe took to answer.");
    ngx_http_billing_render_histogram(&o, "billing_stripe_api_duration_seconds",
                                 "", &m->histogram[NGX_HTTP_BILLING_H_STRIPE]);

    ngx_memzero(gauges, sizeof(gauges));

    for (w = 0; w < NGX_HTTP_BILLING_METRICS_WORKERS; w++) {
        for (i = 0; i < NGX_HTTP_BILLING_G_COUNT; i++) {
            gauges[i] += m->worker[w].value[i];
        }
    }

    ngx_http_billing_render_header(&o, "billing_db_pool_connections", "gauge",
                                   "Database connections of all workers, by "
                                   "state.");
    ngx_http_billing_out(&o,
        "billing_db_pool_connections{state=\"idle\"} %uL\n"
        "billing_db_pool_connections{state=\"busy\"} %uL\n"
        "billing_db_pool_connections{state=\"connecting\"} %uL\n",
        gauges[NGX_HTTP_BILLING_G_POOL_IDLE],
        gauges[NGX_HTTP_BILLING_G_POOL_BUSY],
        gauges[NGX_HTTP_BILLING_G_POOL_CONNECTING]);

    ngx_http_billing_render_header(&o, "billing_db_pool_waiters", "gauge",
                                   "Requests waiting for a database "
                                   "connection.");
    ngx_http_billing_out(&o, "billing_db_pool_waiters %uL\n",
                         gauges[NGX_HTTP_BILLING_G_POOL_WAITERS]);

    ngx_http_billing_render_header(&o, "billing_outbox_backlog", "gauge",
                                   "Notifications not yet delivered.");
    ngx_http_billing_out(&o, "billing_outbox_backlog %uL\n",
                         (uint64_t)
                         m->shared[NGX_HTTP_BILLING_S_OUTBOX_BACKLOG]);

    ngx_http_billing_render_header(&o, "billing_outbox_dead_letters", "gauge",
                                   "Notifications that kept failing and are "
                                   "no longer retried.");
    ngx_http_billing_out(&o, "billing_outbox_dead_letters %uL\n",
                         (uint64_t)
                         m->shared[NGX_HTTP_BILLING_S_OUTBOX_DEAD_LETTERS]);

    ngx_http_billing_render_header(&o, "billing_invariant_violations", "gauge",
                                   "Ledger invariant violations found by the "
                                   "audit and not yet cleared by a full pass.");
    ngx_http_billing_out(&o, "billing_invariant_violations %uL\n",
                         (uint64_t)
                         m->shared[NGX_HTTP_BILLING_S_INVARIANT_VIOLATIONS]);

    ngx_http_billing_render_header(&o,
                        "billing_invariant_check_last_success_timestamp_seconds",
                        "gauge",
                        "When a run of the ledger audit last completed, "
                        "anywhere in the cluster (Unix time; 0: not known "
                        "yet).");
    ngx_http_billing_out(&o,
                     "billing_invariant_check_last_success_timestamp_seconds "
                     "%uL\n",
                     (uint64_t)
                     m->shared[NGX_HTTP_BILLING_S_INVARIANT_CHECK_SUCCESS]);

    b->last = o.pos;
    b->last_buf = 1;
    b->last_in_chain = 1;

    cl = ngx_alloc_chain_link(pool);
    if (cl == NULL) {
        return NULL;
    }

    cl->buf = b;
    cl->next = NULL;

    *len = b->last - b->pos;

    return cl;
}
