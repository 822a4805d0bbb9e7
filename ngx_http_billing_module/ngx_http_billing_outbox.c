
/*
 * ScholarLink Billing: delivery of outgoing notifications (docs/spec.md §4.4).
 *
 * The ledger functions write notifications into billing.outbox in the
 * same transaction as the ledger change.  Every worker polls the outbox
 * on a cancelable timer (billing_notify_interval) when billing_notify_url
 * is set, one round at a time:
 *
 *   1. one statement: outbox_maintain() prunes a batch of delivered rows
 *      past their retention and counts the backlog and the dead letters
 *      (the billing_outbox_backlog and billing_outbox_dead_letters gauges);
 *      outbox_claim(10, lease): FOR UPDATE SKIP LOCKED plus a lease keep
 *      other workers and pods off the claimed rows;
 *   2. every claimed notification is POSTed at once through the curl
 *      multi, signed: X-Billing-Signature: t=<unix>,v1=<hex HMAC-SHA256
 *      of "<t>.<body>"> with billing_notify_secret;
 *   3. one statement records the outcomes: outbox_done() for 2xx,
 *      outbox_retry() (exponential back-off in SQL; a dead letter once its
 *      attempts or its age are spent) for anything else.
 *
 * Delivery is at least once: a worker that dies mid-round leaves its rows
 * to be claimed again when the lease runs out.  Nothing here blocks, and
 * the timer is not re-armed once the worker is shutting down.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_billing.h"
#include "ngx_http_billing_curl.h"
#include "ngx_http_billing_metrics.h"
#include "ngx_http_billing_outbox.h"
#include "ngx_http_billing_pg.h"

#include "billing_stripe.h"
#include "billing_util.h"


#define NGX_HTTP_BILLING_OUTBOX_BATCH  10
#define NGX_HTTP_BILLING_OUTBOX_PRUNE  "500"    /* rows deleted per round */


typedef struct ngx_http_billing_outbox_s  ngx_http_billing_outbox_t;

typedef struct {
    ngx_http_billing_outbox_t    *ob;
    ngx_http_billing_http_t      *http;
    u_char                       *id;          /* outbox.id, decimal */
    u_char                       *event_id;
    u_char                       *payload;
    size_t                        len;
    ngx_uint_t                    ok;
    u_char                        error[128];
} ngx_http_billing_delivery_t;


struct ngx_http_billing_outbox_s {
    ngx_http_billing_main_conf_t *bmcf;
    ngx_log_t                    *log;
    ngx_event_t                   timer;
    ngx_http_billing_pg_op_t      op;
    ngx_uint_t                    op_pending;
    const char                   *params[3];
    u_char                        lease[NGX_INT_T_LEN + 1];

    ngx_pool_t                   *round;       /* NULL between rounds */
    ngx_http_billing_delivery_t  *deliveries;
    ngx_uint_t                    ndeliveries;
    ngx_uint_t                    pending;
    ngx_uint_t                    full;        /* the claim filled a batch */
};


static void ngx_http_billing_outbox_tick(ngx_event_t *ev);
static ngx_int_t ngx_http_billing_outbox_query(ngx_http_billing_outbox_t *ob,
    const char *sql, int nparams, ngx_http_billing_pg_done_pt handler);
static void ngx_http_billing_outbox_claimed(ngx_http_billing_pg_op_t *op);
static void ngx_http_billing_outbox_deliver(ngx_http_billing_delivery_t *d);
static void ngx_http_billing_outbox_delivered(
    ngx_http_billing_http_result_t *res, void *data);
static void ngx_http_billing_outbox_record(ngx_http_billing_outbox_t *ob);
static void ngx_http_billing_outbox_recorded(ngx_http_billing_pg_op_t *op);
static void ngx_http_billing_outbox_end_round(ngx_http_billing_outbox_t *ob,
    ngx_msec_t next);


static ngx_http_billing_outbox_t  *ngx_http_billing_outbox;

/* debug builds log a timer's ev->data as a connection: give it one */
static ngx_connection_t            ngx_http_billing_outbox_dummy;


ngx_int_t
ngx_http_billing_outbox_init(ngx_cycle_t *cycle,
    ngx_http_billing_main_conf_t *bmcf)
{
    ngx_http_billing_outbox_t  *ob;

    if (bmcf->notify_url.len == 0 || bmcf->pool == NULL) {
        return NGX_OK;
    }

    ob = ngx_pcalloc(cycle->pool, sizeof(ngx_http_billing_outbox_t));
    if (ob == NULL) {
        return NGX_ERROR;
    }

    ob->bmcf = bmcf;
    ob->log = cycle->log;

    /* the lease outlives the slowest delivery of a round */
    (void) ngx_sprintf(ob->lease, "%ui%Z",
                       (ngx_uint_t) ngx_max(30, bmcf->stripe_total_timeout
                                                / 1000 * 2 + 5));

    ngx_memzero(&ngx_http_billing_outbox_dummy, sizeof(ngx_connection_t));
    ngx_http_billing_outbox_dummy.fd = (ngx_socket_t) -1;

    ob->timer.handler = ngx_http_billing_outbox_tick;
    ob->timer.data = &ngx_http_billing_outbox_dummy;
    ob->timer.log = cycle->log;
    ob->timer.cancelable = 1;

    ngx_http_billing_outbox = ob;

    ngx_add_timer(&ob->timer, bmcf->notify_interval);

    return NGX_OK;
}


void
ngx_http_billing_outbox_exit(ngx_cycle_t *cycle)
{
    ngx_uint_t                  i;
    ngx_http_billing_outbox_t  *ob;

    ob = ngx_http_billing_outbox;
    if (ob == NULL) {
        return;
    }

    ngx_http_billing_outbox = NULL;

    if (ob->timer.timer_set) {
        ngx_del_timer(&ob->timer);
    }

    if (ob->op_pending) {
        ngx_http_billing_pg_cancel(&ob->op);
        ob->op_pending = 0;
    }

    for (i = 0; i < ob->ndeliveries; i++) {
        if (ob->deliveries[i].http) {
            ngx_http_billing_http_cancel(ob->deliveries[i].http);
            ob->deliveries[i].http = NULL;
        }
    }

    if (ob->round) {
        ngx_destroy_pool(ob->round);
        ob->round = NULL;
    }
}


static void
ngx_http_billing_outbox_tick(ngx_event_t *ev)
{
    ngx_int_t                   rc;
    ngx_http_billing_outbox_t  *ob;

    ob = ngx_http_billing_outbox;

    if (ob == NULL || ngx_exiting || ngx_quit || ngx_terminate) {
        return;
    }

    if (ob->round) {
        return;                 /* one round at a time */
    }

    ob->round = ngx_create_pool(4096, ob->log);
    if (ob->round == NULL) {
        ngx_add_timer(&ob->timer, ob->bmcf->notify_interval);
        return;
    }

    ob->deliveries = NULL;
    ob->ndeliveries = 0;
    ob->pending = 0;
    ob->full = 0;

    ob->params[0] = "10";
    ob->params[1] = (const char *) ob->lease;

    rc = ngx_http_billing_outbox_query(ob,
                 "SELECT m.backlog, m.dead, c.id, c.event_id, c.payload "
                 "FROM billing.outbox_maintain("
                     NGX_HTTP_BILLING_OUTBOX_PRUNE ") m "
                 "LEFT JOIN billing.outbox_claim($1::int, $2::int) c ON true",
                 2, ngx_http_billing_outbox_claimed);

    if (rc != NGX_OK) {
        ngx_http_billing_outbox_end_round(ob, ob->bmcf->notify_interval);
    }
}


/* one statement of a round, with ob->params */
static ngx_int_t
ngx_http_billing_outbox_query(ngx_http_billing_outbox_t *ob, const char *sql,
    int nparams, ngx_http_billing_pg_done_pt handler)
{
    ngx_http_billing_pg_op_init(&ob->op, sql, nparams, ob->params, handler,
                                ob, ob->log);

    if (ngx_http_billing_pg_query(ob->bmcf->pool, &ob->op) != NGX_OK) {
        return NGX_ERROR;
    }

    ob->op_pending = 1;

    return NGX_OK;
}


static u_char *
ngx_http_billing_outbox_copy(ngx_pool_t *pool, PGresult *res, int row,
    int col, size_t *len)
{
    u_char  *p;
    size_t   n;

    n = PQgetlength(res, row, col);

    p = ngx_pnalloc(pool, n + 1);
    if (p == NULL) {
        return NULL;
    }

    ngx_memcpy(p, PQgetvalue(res, row, col), n);
    p[n] = '\0';

    if (len) {
        *len = n;
    }

    return p;
}


static void
ngx_http_billing_outbox_claimed(ngx_http_billing_pg_op_t *op)
{
    int                           i, rows;
    off_t                         backlog, dead;
    ngx_uint_t                    n;
    ngx_http_billing_outbox_t    *ob;
    ngx_http_billing_delivery_t  *d;

    ob = op->data;
    ob->op_pending = 0;

    if (!ngx_http_billing_pg_shape(op, -1, 5)) {
        ngx_log_error(NGX_LOG_WARN, ob->log, 0,
                      "billing: outbox: cannot claim notifications");
        ngx_http_billing_outbox_end_round(ob, ob->bmcf->notify_interval);
        return;
    }

    rows = PQntuples(op->res);

    if (rows > 0 && !PQgetisnull(op->res, 0, 0)) {
        backlog = ngx_atoof((u_char *) PQgetvalue(op->res, 0, 0),
                            PQgetlength(op->res, 0, 0));

        if (backlog >= 0) {
            ngx_http_billing_metrics_shared_gauge(
                NGX_HTTP_BILLING_S_OUTBOX_BACKLOG, (uint64_t) backlog);
        }
    }

    if (rows > 0 && !PQgetisnull(op->res, 0, 1)) {
        dead = ngx_atoof((u_char *) PQgetvalue(op->res, 0, 1),
                         PQgetlength(op->res, 0, 1));

        if (dead >= 0) {
            ngx_http_billing_metrics_shared_gauge(
                NGX_HTTP_BILLING_S_OUTBOX_DEAD_LETTERS, (uint64_t) dead);
        }
    }

    ob->deliveries = ngx_pcalloc(ob->round, (rows ? rows : 1)
                                 * sizeof(ngx_http_billing_delivery_t));
    if (ob->deliveries == NULL) {
        ngx_http_billing_outbox_end_round(ob, ob->bmcf->notify_interval);
        return;
    }

    n = 0;

    for (i = 0; i < rows; i++) {
        if (PQgetisnull(op->res, i, 2) || PQgetisnull(op->res, i, 4)) {
            continue;
        }

        d = &ob->deliveries[n];
        d->ob = ob;
        d->id = ngx_http_billing_outbox_copy(ob->round, op->res, i, 2, NULL);
        d->event_id = ngx_http_billing_outbox_copy(ob->round, op->res, i, 3,
                                                   NULL);
        d->payload = ngx_http_billing_outbox_copy(ob->round, op->res, i, 4,
                                                  &d->len);

        if (d->id == NULL || d->event_id == NULL || d->payload == NULL) {
            break;
        }

        /* the answers' style (docs/api.md "Answers"), before it is signed */
        d->len = billing_json_compact((char *) d->payload, d->len);

        n++;
    }

    ob->ndeliveries = n;
    ob->full = (n >= NGX_HTTP_BILLING_OUTBOX_BATCH);

    if (n == 0) {
        ngx_http_billing_outbox_end_round(ob, ob->bmcf->notify_interval);
        return;
    }

    /* the result is freed when this handler returns: all copied above */
    for (i = 0; i < (int) n; i++) {
        ngx_http_billing_outbox_deliver(&ob->deliveries[i]);
    }

    if (ob->pending == 0) {
        ngx_http_billing_outbox_record(ob);
    }
}


static void
ngx_http_billing_outbox_deliver(ngx_http_billing_delivery_t *d)
{
    u_char                         hex[65], *line;
    time_t                         now;
    struct curl_slist             *headers, *l;
    ngx_http_billing_outbox_t     *ob;
    ngx_http_billing_main_conf_t  *bmcf;

    ob = d->ob;
    bmcf = ob->bmcf;
    now = ngx_time();

    if (billing_hmac_sign((const char *) bmcf->notify_secret.data,
                          bmcf->notify_secret.len, (int64_t) now,
                          (const char *) d->payload, d->len, (char *) hex)
        != 0)
    {
        ngx_cpystrn(d->error, (u_char *) "cannot sign", sizeof(d->error));
        return;
    }

    line = ngx_pnalloc(ob->round, 256);
    if (line == NULL) {
        ngx_cpystrn(d->error, (u_char *) "out of memory", sizeof(d->error));
        return;
    }

    headers = curl_slist_append(NULL, "Content-Type: application/json");

    (void) ngx_sprintf(line, "X-Billing-Event-Id: %s%Z", d->event_id);
    l = headers ? curl_slist_append(headers, (char *) line) : NULL;

    (void) ngx_sprintf(line, "X-Billing-Signature: t=%T,v1=%s%Z", now, hex);
    l = l ? curl_slist_append(headers, (char *) line) : NULL;

    if (l == NULL) {
        curl_slist_free_all(headers);
        ngx_cpystrn(d->error, (u_char *) "out of memory", sizeof(d->error));
        return;
    }

    d->http = ngx_http_billing_http_post(&bmcf->notify_url, headers,
                                         d->payload, d->len,
                                         bmcf->stripe_connect_timeout,
                                         bmcf->stripe_total_timeout,
                                         ngx_http_billing_outbox_delivered,
                                         d, ob->log);
    if (d->http == NULL) {
        ngx_cpystrn(d->error, (u_char *) "cannot start the request",
                    sizeof(d->error));
        return;
    }

    ob->pending++;
}


static void
ngx_http_billing_outbox_delivered(ngx_http_billing_http_result_t *res,
    void *data)
{
    ngx_http_billing_delivery_t *d = data;

    u_char                     *p;
    ngx_http_billing_outbox_t  *ob;

    ob = d->ob;
    d->http = NULL;
    ob->pending--;

    if (res->code == CURLE_OK && res->status >= 200 && res->status < 300) {
        d->ok = 1;
        ngx_http_billing_metrics_inc(NGX_HTTP_BILLING_M_OUTBOX_OK, 1);

    } else {
        if (res->code == CURLE_OK) {
            (void) ngx_snprintf(d->error, sizeof(d->error) - 1, "HTTP %l%Z",
                                res->status);
        } else {
            (void) ngx_snprintf(d->error, sizeof(d->error) - 1, "%s%Z",
                                curl_easy_strerror(res->code));
        }

        /* the text goes into an array literal: keep it plain */
        for (p = d->error; *p; p++) {
            if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')
                  || (*p >= '0' && *p <= '9') || *p == ' ' || *p == '.'
                  || *p == ':' || *p == '-' || *p == '_'))
            {
                *p = ' ';
            }
        }

        ngx_log_error(NGX_LOG_WARN, ob->log, 0,
                      "billing: outbox: notification %s not delivered: %s",
                      d->event_id, d->error);
        ngx_http_billing_metrics_inc(NGX_HTTP_BILLING_M_OUTBOX_ERROR, 1);
    }

    if (ob->pending == 0 && ngx_http_billing_outbox == ob) {
        ngx_http_billing_outbox_record(ob);
    }
}


static void
ngx_http_billing_outbox_record(ngx_http_billing_outbox_t *ob)
{
    u_char                       *done, *retry, *errors, *dp, *rp, *ep;
    size_t                        size;
    ngx_int_t                     rc;
    ngx_uint_t                    i, ndone, nretry;
    ngx_http_billing_delivery_t  *d;

    size = ob->ndeliveries * (NGX_INT64_LEN + 2) + 3;

    done = ngx_pnalloc(ob->round, size);
    retry = ngx_pnalloc(ob->round, size);
    errors = ngx_pnalloc(ob->round, ob->ndeliveries * (128 + 4) + 3);

    if (done == NULL || retry == NULL || errors == NULL) {
        ngx_http_billing_outbox_end_round(ob, ob->bmcf->notify_interval);
        return;
    }

    dp = ngx_cpymem(done, "{", 1);
    rp = ngx_cpymem(retry, "{", 1);
    ep = ngx_cpymem(errors, "{", 1);
    ndone = 0;
    nretry = 0;

    for (i = 0; i < ob->ndeliveries; i++) {
        d = &ob->deliveries[i];

        if (d->ok) {
            dp = ngx_sprintf(dp, "%s%s", ndone++ ? "," : "", d->id);

        } else {
            rp = ngx_sprintf(rp, "%s%s", nretry ? "," : "", d->id);
            ep = ngx_sprintf(ep, "%s\"%s\"", nretry ? "," : "",
                             d->error[0] ? (char *) d->error : "error");
            nretry++;
        }
    }

    *dp++ = '}'; *dp = '\0';
    *rp++ = '}'; *rp = '\0';
    *ep++ = '}'; *ep = '\0';

    ob->params[0] = (const char *) done;
    ob->params[1] = (const char *) retry;
    ob->params[2] = (const char *) errors;

    rc = ngx_http_billing_outbox_query(ob,
             "SELECT (SELECT count(*) FROM unnest($1::bigint[]) AS d(i) "
             "WHERE billing.outbox_done(d.i)), "
             "(SELECT count(*) FROM unnest($2::bigint[], $3::text[]) "
             "AS t(i, e) WHERE billing.outbox_retry(t.i, t.e))",
             3, ngx_http_billing_outbox_recorded);

    if (rc != NGX_OK) {
        /* the leases run out and the rows are delivered again */
        ngx_log_error(NGX_LOG_WARN, ob->log, 0,
                      "billing: outbox: cannot record deliveries");
        ngx_http_billing_outbox_end_round(ob, ob->bmcf->notify_interval);
    }
}


static void
ngx_http_billing_outbox_recorded(ngx_http_billing_pg_op_t *op)
{
    ngx_http_billing_outbox_t  *ob;

    ob = op->data;
    ob->op_pending = 0;

    if (op->status != NGX_HTTP_BILLING_PG_OK) {
        ngx_log_error(NGX_LOG_WARN, ob->log, 0,
                      "billing: outbox: cannot record deliveries");
    }

    /* a full batch: more may be waiting, go on at once */
    ngx_http_billing_outbox_end_round(ob, ob->full
                                          ? 1 : ob->bmcf->notify_interval);
}


static void
ngx_http_billing_outbox_end_round(ngx_http_billing_outbox_t *ob,
    ngx_msec_t next)
{
    if (ob->round) {
        ngx_destroy_pool(ob->round);
        ob->round = NULL;
    }

    ob->deliveries = NULL;
    ob->ndeliveries = 0;
    ob->pending = 0;

    if (ngx_exiting || ngx_quit || ngx_terminate
        || ngx_http_billing_outbox != ob)
    {
        return;
    }

    if (ob->timer.timer_set) {
        ngx_del_timer(&ob->timer);
    }

    ngx_add_timer(&ob->timer, next);
}
