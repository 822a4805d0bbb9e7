
/*
 * ScholarLink Billing: non-blocking PostgreSQL connection pool.
 *
 * Every libpq call here is one of the asynchronous ones: PQconnectStartParams
 * and PQconnectPoll to connect, PQsendQuery(Params) + PQflush to send,
 * PQconsumeInput / PQisBusy / PQgetResult to read.  libpq's socket is wrapped
 * in an nginx connection (ngx_http_billing_socket.c: level-triggered events,
 * libpq keeps the descriptor).  The write event is registered only while
 * libpq has something to write.
 *
 * A connection opens in steps, one state each:
 *
 *     LOOKUP -> CONNECTING -> SETUP (statement after statement) -> ready
 *
 * LOOKUP waits for the addresses of the URL's host names (one lookup for
 * the pool, ngx_http_billing_lookup.c; skipped when the URL needs none),
 * CONNECTING drives PQconnectPoll, SETUP runs the session's first
 * statements (ngx_http_billing_pg_setup_steps[]).  A ready connection goes
 * to the first waiter or idles; a query takes it IDLE -> SENDING ->
 * READING and back.
 *
 * A connection is given back to the pool only when it is idle and healthy;
 * an idle connection keeps its read event armed, so a server that goes away
 * is noticed at once and the connection is dropped, and the pool reconnects
 * by itself, paced by a back-off timer.  Once a connection could not be
 * opened, only that timer opens the next one: requests do not, until one
 * has opened again.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>

#include "ngx_http_billing_lookup.h"
#include "ngx_http_billing_metrics.h"
#include "ngx_http_billing_pg.h"
#include "ngx_http_billing_socket.h"


typedef enum {
    NGX_HTTP_BILLING_PG_LOOKUP = 0,     /* waits for the host's addresses */
    NGX_HTTP_BILLING_PG_CONNECTING,     /* PQconnectPoll */
    NGX_HTTP_BILLING_PG_SETUP,          /* the session's first statements */
    NGX_HTTP_BILLING_PG_IDLE,
    NGX_HTTP_BILLING_PG_SENDING,
    NGX_HTTP_BILLING_PG_READING
} ngx_http_billing_pg_state_e;

/* not usable yet: counted as "connecting" */
#define ngx_http_billing_pg_opening(pc)                                       \
    ((pc)->state <= NGX_HTTP_BILLING_PG_SETUP)


/* statements prepared on each connection, at most */
#define NGX_HTTP_BILLING_PG_PREPARED     8


/* a statement every new session runs, and what to do when it fails */
typedef struct {
    const char                   *sql;
    const char                   *hint;
} ngx_http_billing_pg_step_t;


struct ngx_http_billing_pg_conn_s {
    ngx_queue_t                   queue;     /* pool->idle, active or lookups */
    ngx_http_billing_pg_pool_t   *pool;
    PGconn                       *pg;        /* NULL while looking up */
    ngx_connection_t             *c;
    ino_t                         ino;       /* of the socket c watches */
    ngx_http_billing_pg_state_e   state;
    ngx_uint_t                    step;      /* SETUP: the statement out */
    ngx_uint_t                    prepared;  /* bit i: pool->prepared[i] */
    ngx_http_billing_pg_op_t     *op;        /* NULL when idle or detached */
    PGresult                     *res;       /* the result that decides */
    unsigned                      fatal:1;   /* the server said goodbye */
};


struct ngx_http_billing_pg_pool_s {
    ngx_log_t                    *log;
    const char                   *keywords[8];
    const char                   *values[8];

    ngx_uint_t                    min;
    ngx_uint_t                    max;
    ngx_uint_t                    queue_max;
    ngx_msec_t                    connect_timeout;
    ngx_msec_t                    query_timeout;

    ngx_queue_t                   idle;
    ngx_queue_t                   active;    /* connecting or busy */
    ngx_queue_t                   lookups;   /* waiting for the lookup */
    ngx_queue_t                   waiters;

    ngx_uint_t                    nconns;
    ngx_uint_t                    nidle;
    ngx_uint_t                    nconnecting;
    ngx_uint_t                    nwaiters;

    ngx_http_billing_lookup_conf_t  *lookup_conf;
    ngx_http_billing_lookup_t    *lookup;    /* in flight, or NULL */
    ngx_event_t                   lookup_timer;

    ngx_uint_t                    batch_max;
    ngx_http_billing_pg_group_pt  group;

    const char                   *prepared[NGX_HTTP_BILLING_PG_PREPARED];
    ngx_uint_t                    nprepared;

    ngx_event_t                   refill;    /* keeps "min" connections */
    ngx_msec_t                    backoff;
    unsigned                      failing:1; /* the last open failed */
    unsigned                      closing:1;
};


#define NGX_HTTP_BILLING_PG_BACKOFF_MIN  250
#define NGX_HTTP_BILLING_PG_BACKOFF_MAX  5000


/*
 * What every session runs once connected, in order, before its first
 * query.  The server's sessions run as billing_app whatever their login
 * may do (docs/security.md): a login that owns the schema could otherwise
 * change the ledger or disable its triggers.
 */
static ngx_http_billing_pg_step_t  ngx_http_billing_pg_setup_steps[] = {
    { "SET ROLE billing_app",
      "the login must be a member of billing_app: "
      "sql/migrate.sh --grant-runtime grants it" },
    { NULL, NULL }
};

#define NGX_HTTP_BILLING_PG_BASE_STEPS                                        \
    (sizeof(ngx_http_billing_pg_setup_steps)                                  \
     / sizeof(ngx_http_billing_pg_step_t) - 1)

/*
 * Then the hot statements (ngx_http_billing_pg_prepare), each prepared
 * under the name of its place: parsed and analysed once per connection
 * instead of once per call.  Prepared after SET ROLE, so as billing_app.
 *
 * Canaries (sql/README.md): a prepared statement refers to the function
 * it calls; CREATE OR REPLACE keeps the function (same oid) and the server
 * invalidates the statement's plan, which is made again at the next call,
 * so a migration run while connections are open is seen at once.  A new
 * signature is a new function name, hence a new statement text in a new
 * module version: an old connection never calls a new function by an old
 * statement.  A statement the server refuses to prepare (a function the
 * database does not have yet) is sent unprepared on that connection.
 */
static const char  *ngx_http_billing_pg_statement_names[] = {
    "billing_0", "billing_1", "billing_2", "billing_3",
    "billing_4", "billing_5", "billing_6", "billing_7"
};


static ngx_int_t ngx_http_billing_pg_connect(ngx_http_billing_pg_pool_t *pool);
static ngx_int_t ngx_http_billing_pg_look_up(ngx_http_billing_pg_conn_t *pc);
static void ngx_http_billing_pg_looked_up(void *data,
    ngx_http_billing_lookup_result_t *res, const char *error);
static void ngx_http_billing_pg_lookup_timeout(ngx_event_t *ev);
static ngx_int_t ngx_http_billing_pg_start(ngx_http_billing_pg_conn_t *pc,
    ngx_http_billing_lookup_result_t *res);
static void ngx_http_billing_pg_connect_poll(ngx_http_billing_pg_conn_t *pc);
static void ngx_http_billing_pg_setup(ngx_http_billing_pg_conn_t *pc);
static void ngx_http_billing_pg_setup_event(ngx_http_billing_pg_conn_t *pc);
static void ngx_http_billing_pg_ready(ngx_http_billing_pg_conn_t *pc);
static void ngx_http_billing_pg_open_failed(ngx_http_billing_pg_conn_t *pc);
static ngx_int_t ngx_http_billing_pg_wrap(ngx_http_billing_pg_conn_t *pc);
static ngx_uint_t ngx_http_billing_pg_same_socket(
    ngx_http_billing_pg_conn_t *pc);
static void ngx_http_billing_pg_unwrap(ngx_http_billing_pg_conn_t *pc,
    ngx_uint_t fd_closed);
static void ngx_http_billing_pg_close(ngx_http_billing_pg_conn_t *pc);
static void ngx_http_billing_pg_want_write(ngx_http_billing_pg_conn_t *pc,
    ngx_uint_t want);
static void ngx_http_billing_pg_event(ngx_event_t *ev);
static ngx_int_t ngx_http_billing_pg_send(ngx_http_billing_pg_conn_t *pc,
    ngx_http_billing_pg_op_t *op);
static void ngx_http_billing_pg_flush(ngx_http_billing_pg_conn_t *pc);
static ngx_int_t ngx_http_billing_pg_collect(ngx_http_billing_pg_conn_t *pc);
static ngx_uint_t ngx_http_billing_pg_failed(PGresult *res);
static void ngx_http_billing_pg_read(ngx_http_billing_pg_conn_t *pc);
static void ngx_http_billing_pg_idle_read(ngx_http_billing_pg_conn_t *pc);
static ngx_int_t ngx_http_billing_pg_alive(ngx_http_billing_pg_conn_t *pc);
static void ngx_http_billing_pg_notice(void *arg, const PGresult *res);
static void ngx_http_billing_pg_complete(ngx_http_billing_pg_conn_t *pc,
    ngx_http_billing_pg_status_e status);
static void ngx_http_billing_pg_release(ngx_http_billing_pg_conn_t *pc);
static ngx_http_billing_pg_op_t *ngx_http_billing_pg_group(
    ngx_http_billing_pg_pool_t *pool, ngx_http_billing_pg_op_t *first);
static void ngx_http_billing_pg_finish_op(ngx_http_billing_pg_op_t *op,
    ngx_http_billing_pg_status_e status, PGresult *res);
static void ngx_http_billing_pg_unqueue(ngx_http_billing_pg_op_t *op);
static void ngx_http_billing_pg_fail_waiters(ngx_http_billing_pg_pool_t *pool);
static void ngx_http_billing_pg_wait_timeout(ngx_event_t *ev);
static void ngx_http_billing_pg_refill_handler(ngx_event_t *ev);
static void ngx_http_billing_pg_schedule_refill(
    ngx_http_billing_pg_pool_t *pool);
static void ngx_http_billing_pg_update_gauges(ngx_http_billing_pg_pool_t *pool);
static void ngx_http_billing_pg_log_error(ngx_http_billing_pg_conn_t *pc,
    const char *what);
static size_t ngx_http_billing_pg_trim(const char *msg);


ngx_http_billing_pg_pool_t *
ngx_http_billing_pg_pool_create(ngx_cycle_t *cycle, ngx_str_t *url,
    ngx_http_billing_lookup_conf_t *lookup, ngx_uint_t min, ngx_uint_t max,
    ngx_uint_t queue, ngx_msec_t connect_timeout, ngx_msec_t query_timeout)
{
    u_char                      *dsn, *options;
    ngx_uint_t                   i;
    ngx_http_billing_pg_pool_t  *pool;

    pool = ngx_pcalloc(cycle->pool, sizeof(ngx_http_billing_pg_pool_t));
    if (pool == NULL) {
        return NULL;
    }

    dsn = ngx_pnalloc(cycle->pool, url->len + 1);
    options = ngx_pnalloc(cycle->pool, NGX_INT_T_LEN + 64);
    if (dsn == NULL || options == NULL) {
        return NULL;
    }

    ngx_memcpy(dsn, url->data, url->len);
    dsn[url->len] = '\0';

    /* the server enforces the query timeout too, so a query we gave up on
     * does not keep running and holding row locks */
    ngx_sprintf(options, "-c statement_timeout=%M%Z", query_timeout);

    /*
     * Keywords after "dbname" override what the URL says (and so do the
     * "host", "hostaddr" and "port" a lookup adds).  GSS encryption is
     * pinned off: nothing here uses it.
     */
    i = 0;
    pool->keywords[i] = "dbname";
    pool->values[i++] = (char *) dsn;
    pool->keywords[i] = "application_name";
    pool->values[i++] = "ngx_billing";
    pool->keywords[i] = "gssencmode";
    pool->values[i++] = "disable";
    pool->keywords[i] = "options";
    pool->values[i++] = (char *) options;
    pool->keywords[i] = NULL;
    pool->values[i] = NULL;

    pool->log = cycle->log;
    pool->min = ngx_min(min, max);
    pool->max = max;
    pool->queue_max = queue;
    pool->connect_timeout = connect_timeout;
    pool->query_timeout = query_timeout;
    pool->backoff = NGX_HTTP_BILLING_PG_BACKOFF_MIN;
    pool->lookup_conf = lookup;

    ngx_queue_init(&pool->idle);
    ngx_queue_init(&pool->active);
    ngx_queue_init(&pool->lookups);
    ngx_queue_init(&pool->waiters);

    pool->refill.handler = ngx_http_billing_pg_refill_handler;
    pool->refill.data = pool;
    pool->refill.log = cycle->log;
    pool->refill.cancelable = 1;

    pool->lookup_timer.handler = ngx_http_billing_pg_lookup_timeout;
    pool->lookup_timer.data = pool;
    pool->lookup_timer.log = cycle->log;
    pool->lookup_timer.cancelable = 1;

    ngx_log_debug4(NGX_LOG_DEBUG_HTTP, cycle->log, 0,
                   "billing pg: pool of %ui to %ui connections, "
                   "%ui waiters at most, %s", pool->min, pool->max, queue,
                   lookup ? "host names looked up in threads"
                          : "no host name to look up");

    /* warm up in the event loop, never in init_process itself */
    ngx_add_timer(&pool->refill, 1);

    return pool;
}


void
ngx_http_billing_pg_pool_destroy(ngx_http_billing_pg_pool_t *pool)
{
    ngx_queue_t                 *q;
    ngx_http_billing_pg_conn_t  *pc;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, pool->log, 0,
                   "billing pg: pool destroyed, %ui connections",
                   pool->nconns);

    pool->closing = 1;

    if (pool->refill.timer_set) {
        ngx_del_timer(&pool->refill);
    }

    if (pool->lookup_timer.timer_set) {
        ngx_del_timer(&pool->lookup_timer);
    }

    /* a lookup still in a thread frees itself when it ends */
    if (pool->lookup) {
        ngx_http_billing_lookup_cancel(pool->lookup);
        pool->lookup = NULL;
    }

    while (!ngx_queue_empty(&pool->lookups)) {
        q = ngx_queue_head(&pool->lookups);
        pc = ngx_queue_data(q, ngx_http_billing_pg_conn_t, queue);
        ngx_http_billing_pg_close(pc);
    }

    while (!ngx_queue_empty(&pool->idle)) {
        q = ngx_queue_head(&pool->idle);
        pc = ngx_queue_data(q, ngx_http_billing_pg_conn_t, queue);
        ngx_http_billing_pg_close(pc);
    }

    while (!ngx_queue_empty(&pool->active)) {
        q = ngx_queue_head(&pool->active);
        pc = ngx_queue_data(q, ngx_http_billing_pg_conn_t, queue);
        pc->op = NULL;
        ngx_http_billing_pg_close(pc);
    }
}


void
ngx_http_billing_pg_op_init(ngx_http_billing_pg_op_t *op, const char *sql,
    int nparams, const char *const *values,
    ngx_http_billing_pg_done_pt handler, void *data, ngx_log_t *log)
{
    ngx_memzero(op, sizeof(ngx_http_billing_pg_op_t));

    op->sql = sql;
    op->nparams = nparams;
    op->values = values;
    op->handler = handler;
    op->data = data;
    op->log = log;
}


ngx_int_t
ngx_http_billing_pg_query(ngx_http_billing_pg_pool_t *pool,
    ngx_http_billing_pg_op_t *op)
{
    ngx_queue_t                 *q;
    ngx_http_billing_pg_conn_t  *pc;

    op->pool = pool;
    op->conn = NULL;
    op->res = NULL;
    op->waiting = 0;

    if (op->retries == 0) {
        op->sent = 0;
    }

    /* a connection found dead here is closed and the next one tried */
    while (!ngx_queue_empty(&pool->idle)) {
        q = ngx_queue_head(&pool->idle);
        ngx_queue_remove(q);
        pool->nidle--;

        pc = ngx_queue_data(q, ngx_http_billing_pg_conn_t, queue);
        ngx_queue_insert_tail(&pool->active, q);

        /* what the server sent while we were not looking comes first */
        if (!ngx_http_billing_pg_alive(pc)) {
            pc->state = NGX_HTTP_BILLING_PG_SENDING;
            ngx_http_billing_pg_close(pc);
            continue;
        }

        if (ngx_http_billing_pg_send(pc, op) == NGX_OK) {
            ngx_http_billing_pg_update_gauges(pool);
            return NGX_OK;
        }
    }

    if (pool->nwaiters >= pool->queue_max) {
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, op->log, 0,
                       "billing pg: wait queue full (%ui)", pool->nwaiters);
        ngx_http_billing_metrics_inc(NGX_HTTP_BILLING_M_DB_QUEUE_FULL, 1);
        op->status = NGX_HTTP_BILLING_PG_BUSY;
        return NGX_DECLINED;
    }

    if (pool->failing) {
        /*
         * The last connection could not be opened: the back-off timer
         * opens the next one, not requests (a host that does not resolve,
         * a server that is down: each request would try again at once).
         * With nothing on its way, the request is refused at once.
         */
        if (pool->nconns == 0) {
            ngx_log_debug0(NGX_LOG_DEBUG_HTTP, op->log, 0,
                           "billing pg: no connection, backing off");
            ngx_http_billing_pg_schedule_refill(pool);
            op->status = NGX_HTTP_BILLING_PG_UNAVAILABLE;
            return NGX_DECLINED;
        }

    } else if (pool->nconns < pool->max
               && pool->nconnecting <= pool->nwaiters)
    {
        /* a connection being opened will take the first waiter */
        if (ngx_http_billing_pg_connect(pool) != NGX_OK
            && pool->nconns == 0)
        {
            ngx_log_debug0(NGX_LOG_DEBUG_HTTP, op->log, 0,
                           "billing pg: no connection can be made");
            op->status = NGX_HTTP_BILLING_PG_UNAVAILABLE;
            return NGX_DECLINED;
        }
    }

    ngx_queue_insert_tail(&pool->waiters, &op->queue);
    pool->nwaiters++;
    op->waiting = 1;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, op->log, 0,
                   "billing pg: waiting for a connection, %ui waiters",
                   pool->nwaiters);

    ngx_memzero(&op->wait, sizeof(ngx_event_t));
    op->wait.handler = ngx_http_billing_pg_wait_timeout;
    op->wait.data = op;
    op->wait.log = op->log;
    ngx_add_timer(&op->wait, pool->connect_timeout + pool->query_timeout);

    ngx_http_billing_pg_update_gauges(pool);

    return NGX_OK;
}


ngx_uint_t
ngx_http_billing_pg_shape(ngx_http_billing_pg_op_t *op, int rows, int cols)
{
    return op->status == NGX_HTTP_BILLING_PG_OK
           && (rows == -1 || PQntuples(op->res) == rows)
           && (cols == -1 || PQnfields(op->res) == cols);
}


void
ngx_http_billing_pg_cancel(ngx_http_billing_pg_op_t *op)
{
    if (op->waiting) {
        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, op->log, 0,
                       "billing pg: waiter cancelled");

        ngx_http_billing_pg_unqueue(op);
        ngx_http_billing_pg_update_gauges(op->pool);
    }

    if (op->conn) {
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, op->log, 0,
                       "billing pg: query on connection %d detached",
                       op->conn->c ? op->conn->c->fd : -1);

        /* the query finishes on the server; its result is discarded */
        op->conn->op = NULL;
        op->conn = NULL;
    }

    if (op->link) {
        /* in a batch: the batch's answer for it is discarded */
        *op->link = NULL;
        op->link = NULL;
    }

    op->handler = NULL;
}


ngx_int_t
ngx_http_billing_pg_prepare(ngx_http_billing_pg_pool_t *pool, const char *sql)
{
    if (pool->nprepared == NGX_HTTP_BILLING_PG_PREPARED) {
        return NGX_ERROR;
    }

    pool->prepared[pool->nprepared++] = sql;

    return NGX_OK;
}


void
ngx_http_billing_pg_batching(ngx_http_billing_pg_pool_t *pool, ngx_uint_t max,
    ngx_http_billing_pg_group_pt group)
{
    pool->batch_max = ngx_min(max, NGX_HTTP_BILLING_PG_BATCH_MAX);
    pool->group = group;
}


void
ngx_http_billing_pg_finish(ngx_http_billing_pg_op_t *op,
    ngx_http_billing_pg_status_e status, PGresult *res)
{
    ngx_http_billing_pg_finish_op(op, status, res);
}


void
ngx_http_billing_pg_stats(ngx_http_billing_pg_pool_t *pool,
    ngx_http_billing_pg_stats_t *stats)
{
    stats->idle = pool->nidle;
    stats->connecting = pool->nconnecting;
    stats->busy = pool->nconns - pool->nidle - pool->nconnecting;
    stats->waiters = pool->nwaiters;
}


/* opens one more connection; NGX_ERROR: it failed at once */
static ngx_int_t
ngx_http_billing_pg_connect(ngx_http_billing_pg_pool_t *pool)
{
    ngx_int_t                    rc;
    ngx_http_billing_pg_conn_t  *pc;

    pc = ngx_calloc(sizeof(ngx_http_billing_pg_conn_t), pool->log);
    if (pc == NULL) {
        ngx_http_billing_pg_schedule_refill(pool);
        return NGX_ERROR;
    }

    pc->pool = pool;
    pc->state = NGX_HTTP_BILLING_PG_CONNECTING;

    ngx_queue_insert_tail(&pool->active, &pc->queue);
    pool->nconns++;
    pool->nconnecting++;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, pool->log, 0,
                   "billing pg: opening connection %ui of %ui",
                   pool->nconns, pool->max);

    /* every connection looks the host up again: a failover moves it */
    rc = pool->lookup_conf ? ngx_http_billing_pg_look_up(pc)
                           : ngx_http_billing_pg_start(pc, NULL);

    ngx_http_billing_pg_update_gauges(pool);

    return rc;
}


/*
 * One lookup at a time for the whole pool, and every connection that
 * opens meanwhile waits for its answer.  A lookup that outlives its timer
 * is not asked again: the next connection waits for the same one.
 */
static ngx_int_t
ngx_http_billing_pg_look_up(ngx_http_billing_pg_conn_t *pc)
{
    ngx_http_billing_pg_pool_t  *pool;

    pool = pc->pool;

    pc->state = NGX_HTTP_BILLING_PG_LOOKUP;
    ngx_queue_remove(&pc->queue);
    ngx_queue_insert_tail(&pool->lookups, &pc->queue);

    if (pool->lookup == NULL) {
        pool->lookup = ngx_http_billing_lookup_start(
                           pool->lookup_conf, ngx_http_billing_pg_looked_up,
                           pool, pool->log);
        if (pool->lookup == NULL) {
            ngx_log_error(NGX_LOG_ERR, pool->log, 0,
                          "billing: cannot start a database host lookup");
            ngx_http_billing_pg_open_failed(pc);
            return NGX_ERROR;
        }
    }

    if (!pool->lookup_timer.timer_set) {
        ngx_add_timer(&pool->lookup_timer, pool->connect_timeout);
    }

    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, pool->log, 0,
                   "billing pg: waiting for the host lookup");

    return NGX_OK;
}


/* the lookup's completion, in the event loop: each waiting connection
 * connects to what it found, or fails */
static void
ngx_http_billing_pg_looked_up(void *data,
    ngx_http_billing_lookup_result_t *res, const char *error)
{
    ngx_http_billing_pg_pool_t *pool = data;

    ngx_queue_t                  waiting, *q;
    ngx_http_billing_pg_conn_t  *pc;

    pool->lookup = NULL;

    if (pool->lookup_timer.timer_set) {
        ngx_del_timer(&pool->lookup_timer);
    }

    if (res == NULL) {
        ngx_log_error(NGX_LOG_ERR, pool->log, 0,
                      "billing: database host lookup: %s", error);

    } else if (error) {
        /* another host of the URL's list was found */
        ngx_log_error(NGX_LOG_WARN, pool->log, 0,
                      "billing: database host lookup: %s", error);
    }

    /* a handler called from here may open another connection: it waits
     * for a lookup of its own, not for this list */
    ngx_queue_init(&waiting);

    if (!ngx_queue_empty(&pool->lookups)) {
        ngx_queue_add(&waiting, &pool->lookups);
        ngx_queue_init(&pool->lookups);
    }

    while (!ngx_queue_empty(&waiting)) {
        q = ngx_queue_head(&waiting);
        ngx_queue_remove(q);
        ngx_queue_insert_tail(&pool->active, q);

        pc = ngx_queue_data(q, ngx_http_billing_pg_conn_t, queue);
        pc->state = NGX_HTTP_BILLING_PG_CONNECTING;

        if (res == NULL) {
            ngx_http_billing_pg_open_failed(pc);
            continue;
        }

        (void) ngx_http_billing_pg_start(pc, res);
    }
}


static void
ngx_http_billing_pg_lookup_timeout(ngx_event_t *ev)
{
    ngx_queue_t                 *q;
    ngx_http_billing_pg_conn_t  *pc;
    ngx_http_billing_pg_pool_t  *pool;

    pool = ev->data;

    ngx_log_error(NGX_LOG_ERR, pool->log, 0,
                  "billing: database host lookup timed out");

    while (!ngx_queue_empty(&pool->lookups)) {
        q = ngx_queue_head(&pool->lookups);
        pc = ngx_queue_data(q, ngx_http_billing_pg_conn_t, queue);
        ngx_http_billing_pg_open_failed(pc);
    }
}


/*
 * Starts libpq's connect.  res: the addresses a lookup found, given as
 * "hostaddr" beside the names ("host"), so that libpq looks up nothing
 * and still checks the server's certificate against the name.
 */
static ngx_int_t
ngx_http_billing_pg_start(ngx_http_billing_pg_conn_t *pc,
    ngx_http_billing_lookup_result_t *res)
{
    PGconn                      *pg;
    ngx_uint_t                   n;
    const char                  *keywords[12], *values[12], *msg;
    ngx_http_billing_pg_pool_t  *pool;

    pool = pc->pool;

    for (n = 0; pool->keywords[n]; n++) {
        keywords[n] = pool->keywords[n];
        values[n] = pool->values[n];
    }

    if (res) {
        keywords[n] = "host";
        values[n++] = res->host;
        keywords[n] = "hostaddr";
        values[n++] = res->hostaddr;

        if (res->port) {
            keywords[n] = "port";
            values[n++] = res->port;
        }
    }

    keywords[n] = NULL;
    values[n] = NULL;

    pc->state = NGX_HTTP_BILLING_PG_CONNECTING;

    /* does not wait for the server; with no name to look up, no DNS */
    pg = PQconnectStartParams(keywords, values, 1);

    if (pg == NULL || PQstatus(pg) == CONNECTION_BAD) {
        msg = pg ? PQerrorMessage(pg) : "out of memory";

        ngx_log_error(NGX_LOG_ERR, pool->log, 0,
                      "billing: cannot start a database connection: %*s",
                      ngx_http_billing_pg_trim(msg), msg);
        if (pg) {
            PQfinish(pg);
        }

        ngx_http_billing_pg_open_failed(pc);
        return NGX_ERROR;
    }

    pc->pg = pg;

    if (PQsetnonblocking(pg, 1) != 0) {
        ngx_http_billing_pg_log_error(pc, "cannot start a database connection");
        ngx_http_billing_pg_open_failed(pc);
        return NGX_ERROR;
    }

    /* libpq's default prints notices to stderr */
    PQsetNoticeReceiver(pg, ngx_http_billing_pg_notice, pc);

    if (ngx_http_billing_pg_wrap(pc) != NGX_OK) {
        ngx_http_billing_pg_open_failed(pc);
        return NGX_ERROR;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, pool->log, 0,
                   "billing pg: connection %d: connecting", pc->c->fd);

    ngx_add_timer(pc->c->read, pool->connect_timeout);

    /* libpq starts in "writing": wait for the TCP connect to complete */
    ngx_http_billing_pg_want_write(pc, 1);

    return NGX_OK;
}


static void
ngx_http_billing_pg_connect_poll(ngx_http_billing_pg_conn_t *pc)
{
    ngx_msec_int_t               left;
    PostgresPollingStatusType    rc;
    ngx_http_billing_pg_pool_t  *pool;

    pool = pc->pool;

    rc = PQconnectPoll(pc->pg);

    /*
     * libpq may have closed its socket and opened another one: sslmode
     * "prefer" falling back to plain, the next address or host.  The new
     * socket often has the old one's number, but the kernel dropped the
     * old one's epoll registration when it was closed: watched anew, with
     * what is left of the connect timeout.
     */
    if (!ngx_http_billing_pg_same_socket(pc)) {
        left = pool->connect_timeout;

        if (pc->c && pc->c->read->timer_set) {
            left = (ngx_msec_int_t) (pc->c->read->timer.key - ngx_current_msec);
            left = ngx_max(left, 1);
        }

        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, pool->log, 0,
                       "billing pg: connecting on a new socket %d",
                       PQsocket(pc->pg));

        ngx_http_billing_pg_unwrap(pc, 1);

        if (rc != PGRES_POLLING_FAILED) {
            if (ngx_http_billing_pg_wrap(pc) != NGX_OK) {
                rc = PGRES_POLLING_FAILED;

            } else {
                ngx_add_timer(pc->c->read, (ngx_msec_t) left);
            }
        }
    }

    switch (rc) {

    case PGRES_POLLING_WRITING:
    case PGRES_POLLING_READING:
        ngx_log_debug2(NGX_LOG_DEBUG_HTTP, pool->log, 0,
                       "billing pg: connection %d: connecting, %s",
                       pc->c->fd, rc == PGRES_POLLING_WRITING
                                  ? "writing" : "reading");
        ngx_http_billing_pg_want_write(pc, rc == PGRES_POLLING_WRITING);
        return;

    case PGRES_POLLING_OK:
        ngx_http_billing_pg_want_write(pc, 0);
        ngx_http_billing_pg_setup(pc);
        return;

    default: /* PGRES_POLLING_FAILED */
        ngx_http_billing_pg_log_error(pc, "database connection failed");
        ngx_http_billing_pg_open_failed(pc);
        return;
    }
}


/* sends the next statement of the session's setup, or hands it over */
static void
ngx_http_billing_pg_setup(ngx_http_billing_pg_conn_t *pc)
{
    int          rc;
    ngx_uint_t   i;
    const char  *sql;

    i = 0;

    if (pc->step < NGX_HTTP_BILLING_PG_BASE_STEPS) {
        sql = ngx_http_billing_pg_setup_steps[pc->step].sql;

    } else {
        i = pc->step - NGX_HTTP_BILLING_PG_BASE_STEPS;

        if (i == pc->pool->nprepared) {
            ngx_http_billing_pg_ready(pc);
            return;
        }

        sql = pc->pool->prepared[i];
    }

    pc->state = NGX_HTTP_BILLING_PG_SETUP;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, pc->pool->log, 0,
                   "billing pg: connection %d: setup \"%s\"", pc->c->fd,
                   sql);

    if (pc->step < NGX_HTTP_BILLING_PG_BASE_STEPS) {
        rc = PQsendQuery(pc->pg, sql);

    } else {
        rc = PQsendPrepare(pc->pg, ngx_http_billing_pg_statement_names[i],
                           sql, 0, NULL);
    }

    if (!rc) {
        ngx_http_billing_pg_log_error(pc, "cannot set up the database session");
        ngx_http_billing_pg_open_failed(pc);
        return;
    }

    ngx_http_billing_pg_setup_event(pc);
}


static void
ngx_http_billing_pg_setup_event(ngx_http_billing_pg_conn_t *pc)
{
    ngx_int_t                    rc;
    ngx_uint_t                   i;
    PGresult                    *res;
    const char                  *msg;
    ngx_http_billing_pg_step_t  *step;

    switch (PQflush(pc->pg)) {

    case 0:
        ngx_http_billing_pg_want_write(pc, 0);
        break;

    case 1:
        ngx_http_billing_pg_want_write(pc, 1);
        return;

    default:
        ngx_http_billing_pg_log_error(pc, "cannot set up the database session");
        ngx_http_billing_pg_open_failed(pc);
        return;
    }

    rc = ngx_http_billing_pg_collect(pc);

    if (rc == NGX_AGAIN) {
        return;
    }

    if (rc == NGX_ERROR) {
        ngx_http_billing_pg_log_error(pc, "database connection lost during "
                                          "setup");
        ngx_http_billing_pg_open_failed(pc);
        return;
    }

    res = pc->res;
    pc->res = NULL;

    if (pc->step >= NGX_HTTP_BILLING_PG_BASE_STEPS) {
        i = pc->step - NGX_HTTP_BILLING_PG_BASE_STEPS;

        if (res == NULL || ngx_http_billing_pg_failed(res)) {
            /* not fatal: the statement is sent as text on this session */
            msg = res ? PQresultErrorMessage(res) : "no result";

            ngx_log_error(NGX_LOG_WARN, pc->pool->log, 0,
                          "billing: cannot prepare \"%s\": %*s; it is sent "
                          "unprepared on this connection",
                          pc->pool->prepared[i],
                          ngx_http_billing_pg_trim(msg), msg);

        } else {
            pc->prepared |= (ngx_uint_t) 1 << i;
        }

        if (res) {
            PQclear(res);
        }

        pc->step++;
        ngx_http_billing_pg_setup(pc);
        return;
    }

    step = &ngx_http_billing_pg_setup_steps[pc->step];

    if (res == NULL || ngx_http_billing_pg_failed(res)) {
        /* refused: this session cannot serve, nor can the next one */
        msg = res ? PQresultErrorMessage(res) : "no result";

        ngx_log_error(NGX_LOG_ERR, pc->pool->log, 0,
                      "billing: database session setup failed: \"%s\": %*s "
                      "(%s)", step->sql, ngx_http_billing_pg_trim(msg), msg,
                      step->hint);

        if (res) {
            PQclear(res);
        }

        ngx_http_billing_pg_open_failed(pc);
        return;
    }

    PQclear(res);

    pc->step++;
    ngx_http_billing_pg_setup(pc);
}


static void
ngx_http_billing_pg_ready(ngx_http_billing_pg_conn_t *pc)
{
    ngx_http_billing_pg_pool_t  *pool;

    pool = pc->pool;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, pool->log, 0,
                   "billing pg: connection %d ready", pc->c->fd);

    if (pc->c->read->timer_set) {
        ngx_del_timer(pc->c->read);
    }

    pool->nconnecting--;
    pool->backoff = NGX_HTTP_BILLING_PG_BACKOFF_MIN;
    pool->failing = 0;
    pc->state = NGX_HTTP_BILLING_PG_READING;     /* "busy" until released */

    ngx_http_billing_pg_release(pc);
}


/*
 * A connection could not be opened: it is closed, the next attempt waits
 * for the back-off timer, and the waiters that no connection under way
 * will serve are told at once.
 */
static void
ngx_http_billing_pg_open_failed(ngx_http_billing_pg_conn_t *pc)
{
    ngx_http_billing_pg_pool_t  *pool;

    pool = pc->pool;

    ngx_http_billing_metrics_inc(NGX_HTTP_BILLING_M_DB_CONNECT_ERROR, 1);

    pool->failing = 1;

    ngx_http_billing_pg_close(pc);
    ngx_http_billing_pg_schedule_refill(pool);
    ngx_http_billing_pg_fail_waiters(pool);
}


static ngx_int_t
ngx_http_billing_pg_wrap(ngx_http_billing_pg_conn_t *pc)
{
    int           fd;
    struct stat   st;

    fd = PQsocket(pc->pg);
    if (fd == -1 || fstat(fd, &st) == -1) {
        return NGX_ERROR;
    }

    pc->c = ngx_http_billing_socket_wrap(fd, ngx_http_billing_pg_event, pc,
                                         pc->pool->log);
    if (pc->c == NULL) {
        return NGX_ERROR;
    }

    pc->ino = st.st_ino;

    if (ngx_http_billing_socket_watch(pc->c->read, 1) != NGX_OK) {
        ngx_http_billing_pg_unwrap(pc, 0);
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * Whether libpq's socket is still the one watched: the same number is not
 * enough (a closed descriptor's number is the next one given out), the
 * socket's inode tells one socket from the next.
 */
static ngx_uint_t
ngx_http_billing_pg_same_socket(ngx_http_billing_pg_conn_t *pc)
{
    int          fd;
    struct stat  st;

    fd = PQsocket(pc->pg);

    return pc->c != NULL && fd == pc->c->fd
           && fstat(fd, &st) == 0 && st.st_ino == pc->ino;
}


/* forgets the nginx side of the socket; libpq owns and closes the fd */
static void
ngx_http_billing_pg_unwrap(ngx_http_billing_pg_conn_t *pc,
    ngx_uint_t fd_closed)
{
    if (pc->c) {
        ngx_http_billing_socket_unwrap(pc->c, fd_closed);
        pc->c = NULL;
    }
}


static void
ngx_http_billing_pg_close(ngx_http_billing_pg_conn_t *pc)
{
    ngx_http_billing_pg_op_t    *op;
    ngx_http_billing_pg_pool_t  *pool;

    pool = pc->pool;
    op = pc->op;

    if (pc->res) {
        PQclear(pc->res);
        pc->res = NULL;
    }

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, pool->log, 0,
                   "billing pg: connection %d closed in state %d%s",
                   pc->c ? pc->c->fd : -1, (int) pc->state,
                   op ? ", its query lost" : "");

    /* libpq closes the socket itself when it reads the end of the stream */
    ngx_http_billing_pg_unwrap(pc, pc->pg && PQsocket(pc->pg) == -1);

    if (pc->state == NGX_HTTP_BILLING_PG_IDLE) {
        pool->nidle--;

    } else if (ngx_http_billing_pg_opening(pc)) {
        pool->nconnecting--;
    }

    ngx_queue_remove(&pc->queue);
    pool->nconns--;

    if (pc->pg) {
        PQfinish(pc->pg);
    }

    ngx_free(pc);

    if (pool->nconns < pool->min || pool->nwaiters) {
        ngx_http_billing_pg_schedule_refill(pool);
    }

    ngx_http_billing_pg_update_gauges(pool);

    if (op == NULL) {
        return;
    }

    /*
     * A read found its connection dead (a restarted or failed-over server,
     * pg_terminate_backend): running it again elsewhere changes nothing,
     * so it is tried on other connections (after a failover every idle
     * one may be dead) before the caller hears of it.  Writes are
     * not retried here: whether they committed is for the client to learn
     * with its idempotency key.
     */
    if (op->read_only && op->retries < ngx_min(pool->max, 16)
        && !ngx_exiting && !ngx_terminate)
    {
        op->retries++;
        op->conn = NULL;

        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, op->log, 0,
                       "billing pg: read tried again, retry %ui",
                       (ngx_uint_t) op->retries);

        if (ngx_http_billing_pg_query(pool, op) == NGX_OK) {
            return;
        }
    }

    /* last: the handler may start another query on this pool */
    ngx_http_billing_pg_finish_op(op, NGX_HTTP_BILLING_PG_BROKEN, NULL);
}


static void
ngx_http_billing_pg_want_write(ngx_http_billing_pg_conn_t *pc, ngx_uint_t want)
{
    (void) ngx_http_billing_socket_watch(pc->c->write, want);
}


static void
ngx_http_billing_pg_event(ngx_event_t *ev)
{
    ngx_connection_t            *c;
    ngx_http_billing_pg_op_t    *op;
    ngx_http_billing_pg_conn_t  *pc;

    c = ev->data;
    pc = c->data;

    if (ev->timedout) {
        ev->timedout = 0;

        if (ngx_http_billing_pg_opening(pc)) {
            ngx_log_error(NGX_LOG_ERR, pc->pool->log, 0,
                          "billing: database connect timed out");
            ngx_http_billing_pg_open_failed(pc);
            return;
        }

        /* nobody can tell what the server did with the query: drop it */
        ngx_log_error(NGX_LOG_ERR, pc->pool->log, 0,
                      "billing: database query timed out");
        ngx_http_billing_metrics_inc(NGX_HTTP_BILLING_M_DB_TIMEOUT, 1);

        op = pc->op;
        pc->op = NULL;

        ngx_http_billing_pg_close(pc);

        if (op) {
            ngx_http_billing_pg_finish_op(op, NGX_HTTP_BILLING_PG_TIMEOUT,
                                          NULL);
        }

        return;
    }

    switch (pc->state) {

    case NGX_HTTP_BILLING_PG_CONNECTING:
        ngx_http_billing_pg_connect_poll(pc);
        break;

    case NGX_HTTP_BILLING_PG_SETUP:
        ngx_http_billing_pg_setup_event(pc);
        break;

    case NGX_HTTP_BILLING_PG_SENDING:
        ngx_http_billing_pg_flush(pc);
        break;

    case NGX_HTTP_BILLING_PG_READING:
        ngx_http_billing_pg_read(pc);
        break;

    case NGX_HTTP_BILLING_PG_IDLE:
        ngx_http_billing_pg_idle_read(pc);
        break;

    default: /* NGX_HTTP_BILLING_PG_LOOKUP: no socket yet */
        break;
    }
}


/*
 * Sends op's query on pc.  NGX_ERROR: the connection turned out dead; it
 * is closed and op is untouched (its handler is not called), so the caller
 * can try another connection.
 */
static ngx_int_t
ngx_http_billing_pg_send(ngx_http_billing_pg_conn_t *pc,
    ngx_http_billing_pg_op_t *op)
{
    int          rc;
    ngx_uint_t   i;
    const char  *name;

    pc->state = NGX_HTTP_BILLING_PG_SENDING;

    /* a hot statement prepared on this connection goes by its name */
    name = NULL;

    for (i = 0; i < pc->pool->nprepared; i++) {
        if (pc->pool->prepared[i] == op->sql) {
            if (pc->prepared & ((ngx_uint_t) 1 << i)) {
                name = ngx_http_billing_pg_statement_names[i];
            }

            break;
        }
    }

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, op->log, 0,
                   "billing pg: query on connection %d: \"%s\"%s", pc->c->fd,
                   op->sql, name ? ", prepared" : "");

    /* text parameters, text results: one round trip */
    if (name) {
        rc = PQsendQueryPrepared(pc->pg, name, op->nparams, op->values, NULL,
                                 NULL, 0);

    } else {
        rc = PQsendQueryParams(pc->pg, op->sql, op->nparams, NULL,
                               op->values, NULL, NULL, 0);
    }

    rc = rc ? PQflush(pc->pg) : -1;

    if (rc == -1) {
        /* nothing complete reached the server: safe to send elsewhere */
        ngx_http_billing_pg_log_error(pc, "cannot send query");
        ngx_http_billing_metrics_inc(NGX_HTTP_BILLING_M_DB_QUERY_ERROR, 1);
        ngx_http_billing_pg_close(pc);
        return NGX_ERROR;
    }

    pc->op = op;
    op->conn = pc;

    /* from here on a lost connection leaves the outcome unknown */
    op->sent = 1;

    ngx_add_timer(pc->c->read, pc->pool->query_timeout);

    if (rc == 1) {
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, op->log, 0,
                       "billing pg: connection %d: sending", pc->c->fd);
        ngx_http_billing_pg_want_write(pc, 1);
        return NGX_OK;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, op->log, 0,
                   "billing pg: connection %d: sent, reading", pc->c->fd);

    pc->state = NGX_HTTP_BILLING_PG_READING;

    return NGX_OK;
}


static void
ngx_http_billing_pg_flush(ngx_http_billing_pg_conn_t *pc)
{
    switch (PQflush(pc->pg)) {

    case 0:
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, pc->pool->log, 0,
                       "billing pg: connection %d: sent, reading", pc->c->fd);
        ngx_http_billing_pg_want_write(pc, 0);
        pc->state = NGX_HTTP_BILLING_PG_READING;
        return;

    case 1:
        ngx_http_billing_pg_want_write(pc, 1);
        return;

    default:
        ngx_http_billing_pg_log_error(pc, "cannot send query");
        ngx_http_billing_pg_close(pc);
        return;
    }
}


/*
 * Reads what the server sent for the statement out.  NGX_OK: every result
 * is in, and pc->res is the one that decides: the first error if any came
 * (an error after the rows, at commit time, rolled the transaction back),
 * the first result otherwise.  NGX_AGAIN: more is to come.  NGX_ERROR:
 * the connection is lost.
 */
static ngx_int_t
ngx_http_billing_pg_collect(ngx_http_billing_pg_conn_t *pc)
{
    PGresult  *res;

    if (!PQconsumeInput(pc->pg)) {
        return NGX_ERROR;
    }

    while (!PQisBusy(pc->pg)) {
        res = PQgetResult(pc->pg);

        if (res == NULL) {
            return NGX_OK;
        }

        if (pc->res == NULL
            || (ngx_http_billing_pg_failed(res)
                && !ngx_http_billing_pg_failed(pc->res)))
        {
            if (pc->res) {
                PQclear(pc->res);
            }

            pc->res = res;

        } else {
            PQclear(res);
        }
    }

    return NGX_AGAIN;
}


static ngx_uint_t
ngx_http_billing_pg_failed(PGresult *res)
{
    switch (PQresultStatus(res)) {
    case PGRES_TUPLES_OK:
    case PGRES_COMMAND_OK:
        return 0;

    default:
        return 1;
    }
}


static void
ngx_http_billing_pg_read(ngx_http_billing_pg_conn_t *pc)
{
    switch (ngx_http_billing_pg_collect(pc)) {

    case NGX_AGAIN:
        return;

    case NGX_ERROR:
        ngx_http_billing_pg_log_error(pc, "database connection lost");
        ngx_http_billing_metrics_inc(NGX_HTTP_BILLING_M_DB_QUERY_ERROR, 1);
        ngx_http_billing_pg_close(pc);
        return;

    default: /* NGX_OK */
        ngx_http_billing_pg_complete(pc, NGX_HTTP_BILLING_PG_OK);
    }
}


static void
ngx_http_billing_pg_idle_read(ngx_http_billing_pg_conn_t *pc)
{
    if (!ngx_http_billing_pg_alive(pc)) {
        ngx_log_error(NGX_LOG_WARN, pc->pool->log, 0,
                      "billing: idle database connection closed by server");
        ngx_http_billing_pg_close(pc);
    }
}


/*
 * An idle connection has nothing to read unless the server is leaving: a
 * terminated or restarting backend sends a FATAL message (which libpq hands
 * to the notice receiver while idle) and closes.  Reads only what is
 * already there, never waits.
 */
static ngx_int_t
ngx_http_billing_pg_alive(ngx_http_billing_pg_conn_t *pc)
{
    PGnotify  *n;

    if (!PQconsumeInput(pc->pg) || PQstatus(pc->pg) != CONNECTION_OK
        || pc->fatal)
    {
        return 0;
    }

    while ((n = PQnotifies(pc->pg)) != NULL) {
        PQfreemem(n);
    }

    return 1;
}


static void
ngx_http_billing_pg_notice(void *arg, const PGresult *res)
{
    ngx_http_billing_pg_conn_t *pc = arg;

    size_t       len;
    const char  *msg, *severity;

    severity = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);

    if (severity && (ngx_strcmp(severity, "FATAL") == 0
                     || ngx_strcmp(severity, "PANIC") == 0))
    {
        pc->fatal = 1;
    }

    msg = PQresultErrorMessage(res);
    len = ngx_strlen(msg);

    while (len && (msg[len - 1] == '\n' || msg[len - 1] == ' ')) {
        len--;
    }

    if (pc->fatal) {
        ngx_log_error(NGX_LOG_WARN, pc->pool->log, 0,
                      "billing: database says: %*s", len, msg);

    } else {
        ngx_log_error(NGX_LOG_INFO, pc->pool->log, 0,
                      "billing: database says: %*s", len, msg);
    }
}


static void
ngx_http_billing_pg_complete(ngx_http_billing_pg_conn_t *pc,
    ngx_http_billing_pg_status_e status)
{
    PGresult                  *res;
    ngx_http_billing_pg_op_t  *op;

    if (pc->c->read->timer_set) {
        ngx_del_timer(pc->c->read);
    }

    res = pc->res;
    pc->res = NULL;

    if (res == NULL) {
        status = NGX_HTTP_BILLING_PG_SQL_ERROR;

    } else {
        switch (PQresultStatus(res)) {
        case PGRES_TUPLES_OK:
        case PGRES_COMMAND_OK:
            break;

        default:
            status = NGX_HTTP_BILLING_PG_SQL_ERROR;
            ngx_log_error(NGX_LOG_ERR, pc->pool->log, 0,
                          "billing: query failed: %s",
                          PQresultErrorMessage(res));
            ngx_http_billing_metrics_inc(NGX_HTTP_BILLING_M_DB_QUERY_ERROR, 1);
        }
    }

    op = pc->op;
    pc->op = NULL;

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, pc->pool->log, 0,
                   "billing pg: connection %d: query done, status %d%s",
                   pc->c->fd, (int) status, op ? "" : ", nobody waits");

    /* hand the connection back first: the handler may start a new query */
    ngx_http_billing_pg_release(pc);

    if (op) {
        ngx_http_billing_pg_finish_op(op, status, res);
    }

    if (res) {
        PQclear(res);
    }
}


/* a connection that finished a query or connected: next waiter or idle */
static void
ngx_http_billing_pg_release(ngx_http_billing_pg_conn_t *pc)
{
    ngx_queue_t                 *q;
    ngx_http_billing_pg_op_t    *op, *bop;
    ngx_http_billing_pg_pool_t  *pool;

    pool = pc->pool;

    if (PQstatus(pc->pg) != CONNECTION_OK
        || PQtransactionStatus(pc->pg) != PQTRANS_IDLE)
    {
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, pool->log, 0,
                       "billing pg: connection %d cannot be reused",
                       pc->c->fd);
        ngx_http_billing_pg_close(pc);
        return;
    }

    if (!ngx_queue_empty(&pool->waiters)) {
        q = ngx_queue_head(&pool->waiters);
        op = ngx_queue_data(q, ngx_http_billing_pg_op_t, queue);

        bop = (op->batch && pool->batch_max > 1)
              ? ngx_http_billing_pg_group(pool, op) : NULL;

        if (bop) {
            ngx_log_debug1(NGX_LOG_DEBUG_HTTP, pool->log, 0,
                           "billing pg: connection %d to a batch", pc->c->fd);

            if (ngx_http_billing_pg_send(pc, bop) != NGX_OK) {
                /*
                 * The connection was dead and nothing reached the server;
                 * the items left the queue: the batch's handler sends
                 * them again, each alone (bop->sent is 0).
                 */
                ngx_http_billing_pg_finish_op(bop,
                                              NGX_HTTP_BILLING_PG_BROKEN,
                                              NULL);
                return;
            }

            ngx_http_billing_pg_update_gauges(pool);
            return;
        }

        ngx_log_debug2(NGX_LOG_DEBUG_HTTP, pool->log, 0,
                       "billing pg: connection %d to the first of %ui "
                       "waiters", pc->c->fd, pool->nwaiters);

        /* a dead connection is closed; the waiter keeps its place */
        if (ngx_http_billing_pg_send(pc, op) != NGX_OK) {
            return;
        }

        ngx_http_billing_pg_unqueue(op);
        ngx_http_billing_pg_update_gauges(pool);
        return;
    }

    if (ngx_exiting || ngx_terminate || pool->nidle >= pool->max) {
        ngx_http_billing_pg_close(pc);
        return;
    }

    pc->state = NGX_HTTP_BILLING_PG_IDLE;
    ngx_queue_remove(&pc->queue);
    ngx_queue_insert_head(&pool->idle, &pc->queue);
    pool->nidle++;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, pool->log, 0,
                   "billing pg: connection %d idle, %ui idle", pc->c->fd,
                   pool->nidle);

    ngx_http_billing_pg_update_gauges(pool);
}


/*
 * Group commit: the waiters of first's kind, from the head of the queue
 * (others keep their places), up to batch_max, become one op made by the
 * grouper, and leave the queue.  Only what already waits: nobody is kept
 * waiting for a batch to fill.  NULL: first goes alone (no other of its
 * kind waits, or the grouper could not make the op).
 */
static ngx_http_billing_pg_op_t *
ngx_http_billing_pg_group(ngx_http_billing_pg_pool_t *pool,
    ngx_http_billing_pg_op_t *first)
{
    ngx_uint_t                 i, n;
    ngx_queue_t               *q;
    ngx_http_billing_pg_op_t  *op, *bop, *ops[NGX_HTTP_BILLING_PG_BATCH_MAX];

    n = 0;

    for (q = ngx_queue_head(&pool->waiters);
         q != ngx_queue_sentinel(&pool->waiters) && n < pool->batch_max;
         q = ngx_queue_next(q))
    {
        op = ngx_queue_data(q, ngx_http_billing_pg_op_t, queue);

        if (op->batch == first->batch) {
            ops[n++] = op;
        }
    }

    if (n < 2) {
        return NULL;
    }

    bop = pool->group(pool, ops, n);
    if (bop == NULL) {
        return NULL;
    }

    for (i = 0; i < n; i++) {
        ngx_http_billing_pg_unqueue(ops[i]);
    }

    return bop;
}


static void
ngx_http_billing_pg_finish_op(ngx_http_billing_pg_op_t *op,
    ngx_http_billing_pg_status_e status, PGresult *res)
{
    ngx_http_billing_pg_done_pt  handler;

    op->conn = NULL;
    op->status = status;
    op->res = res;

    handler = op->handler;
    op->handler = NULL;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, op->log, 0,
                   "billing pg: query finished, status %d%s", (int) status,
                   handler ? "" : ", nobody waits");

    /* the handler may free the op with its request: do not touch it after */
    if (handler) {
        handler(op);
    }
}


/* the database cannot be reached: do not keep callers waiting for it */
static void
ngx_http_billing_pg_fail_waiters(ngx_http_billing_pg_pool_t *pool)
{
    ngx_queue_t               *q;
    ngx_http_billing_pg_op_t  *op;

    if (pool->nconns > pool->nconnecting) {
        return;     /* live connections will serve them */
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, pool->log, 0,
                   "billing pg: database unreachable, failing %ui of %ui "
                   "waiters", pool->nwaiters - pool->nconnecting,
                   pool->nwaiters);

    while (pool->nwaiters > pool->nconnecting) {
        q = ngx_queue_head(&pool->waiters);
        op = ngx_queue_data(q, ngx_http_billing_pg_op_t, queue);

        ngx_http_billing_pg_unqueue(op);
        ngx_http_billing_pg_finish_op(op, NGX_HTTP_BILLING_PG_UNAVAILABLE,
                                      NULL);
    }

    ngx_http_billing_pg_update_gauges(pool);
}


/* takes an op off the wait queue, where it waited for a connection */
static void
ngx_http_billing_pg_unqueue(ngx_http_billing_pg_op_t *op)
{
    ngx_queue_remove(&op->queue);
    op->pool->nwaiters--;
    op->waiting = 0;

    if (op->wait.timer_set) {
        ngx_del_timer(&op->wait);
    }
}


static void
ngx_http_billing_pg_wait_timeout(ngx_event_t *ev)
{
    ngx_http_billing_pg_op_t  *op;

    op = ev->data;

    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, op->log, 0,
                   "billing pg: no connection became free in time");

    ngx_http_billing_pg_unqueue(op);

    ngx_http_billing_metrics_inc(NGX_HTTP_BILLING_M_DB_TIMEOUT, 1);
    ngx_http_billing_pg_update_gauges(op->pool);

    ngx_http_billing_pg_finish_op(op, NGX_HTTP_BILLING_PG_TIMEOUT, NULL);
}


static void
ngx_http_billing_pg_schedule_refill(ngx_http_billing_pg_pool_t *pool)
{
    if (pool->refill.timer_set || pool->closing || ngx_exiting
        || ngx_terminate)
    {
        return;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, pool->log, 0,
                   "billing pg: refill in %M ms", pool->backoff);

    ngx_add_timer(&pool->refill, pool->backoff);
    pool->backoff = ngx_min(pool->backoff * 2, NGX_HTTP_BILLING_PG_BACKOFF_MAX);
}


static void
ngx_http_billing_pg_refill_handler(ngx_event_t *ev)
{
    ngx_uint_t                   want;
    ngx_http_billing_pg_pool_t  *pool;

    pool = ev->data;

    if (ngx_exiting || ngx_terminate) {
        return;
    }

    want = ngx_max(pool->min, ngx_min(pool->nwaiters, pool->max));

    /* after a failure one connection tries, even if none is wanted */
    if (pool->failing && want == 0) {
        want = 1;
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, pool->log, 0,
                   "billing pg: refill from %ui to %ui connections",
                   pool->nconns, want);

    while (pool->nconns < want) {
        if (ngx_http_billing_pg_connect(pool) != NGX_OK) {
            break;      /* the failure re-armed the timer with back-off */
        }
    }

    ngx_http_billing_pg_update_gauges(pool);
}


static void
ngx_http_billing_pg_update_gauges(ngx_http_billing_pg_pool_t *pool)
{
    ngx_http_billing_pg_stats_t  s;

    ngx_http_billing_pg_stats(pool, &s);

    ngx_http_billing_metrics_gauge(NGX_HTTP_BILLING_G_POOL_IDLE, s.idle);
    ngx_http_billing_metrics_gauge(NGX_HTTP_BILLING_G_POOL_BUSY, s.busy);
    ngx_http_billing_metrics_gauge(NGX_HTTP_BILLING_G_POOL_CONNECTING,
                                   s.connecting);
    ngx_http_billing_metrics_gauge(NGX_HTTP_BILLING_G_POOL_WAITERS, s.waiters);
}


static void
ngx_http_billing_pg_log_error(ngx_http_billing_pg_conn_t *pc, const char *what)
{
    char  *msg;

    /* libpq's messages name host and user, never the password */
    msg = PQerrorMessage(pc->pg);

    ngx_log_error(NGX_LOG_ERR, pc->pool->log, 0, "billing: %s: %*s",
                  what, ngx_http_billing_pg_trim(msg), msg);
}


/* libpq's messages end in a newline: their length without it */
static size_t
ngx_http_billing_pg_trim(const char *msg)
{
    size_t  len;

    len = ngx_strlen(msg);

    while (len && (msg[len - 1] == '\n' || msg[len - 1] == ' ')) {
        len--;
    }

    return len;
}
