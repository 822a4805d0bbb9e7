
/*
 * ScholarLink Billing: a per-worker, non-blocking PostgreSQL pool driven by
 * nginx events (libpq's asynchronous API only).
 */


#ifndef _NGX_HTTP_BILLING_PG_H_INCLUDED_
#define _NGX_HTTP_BILLING_PG_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>

#include <libpq-fe.h>

#include "ngx_http_billing_lookup.h"


typedef struct ngx_http_billing_pg_pool_s  ngx_http_billing_pg_pool_t;
typedef struct ngx_http_billing_pg_conn_s  ngx_http_billing_pg_conn_t;
typedef struct ngx_http_billing_pg_op_s    ngx_http_billing_pg_op_t;

typedef void (*ngx_http_billing_pg_done_pt)(ngx_http_billing_pg_op_t *op);


/*
 * Group commit: calls of one kind (op->batch) that wait in the queue when
 * a connection frees up may be sent as one statement.  The pool finds them
 * and takes them off the queue; the grouper (ngx_http_billing_batch.c)
 * makes the one op that carries them and answers each of them.
 */
typedef struct {
    const char                   *sql;       /* one array per parameter */
    unsigned                      read_only:1;   /* a kind of reads */
} ngx_http_billing_pg_batch_t;

/* ops: n >= 2 waiters of one kind, in arrival order; NULL: send them alone */
typedef ngx_http_billing_pg_op_t *(*ngx_http_billing_pg_group_pt)(
    ngx_http_billing_pg_pool_t *pool, ngx_http_billing_pg_op_t **ops,
    ngx_uint_t n);

#define NGX_HTTP_BILLING_PG_BATCH_MAX  100


/* op->status once the handler runs, or once the pool refused the op */
typedef enum {
    NGX_HTTP_BILLING_PG_OK = 0,          /* op->res holds the tuples */
    NGX_HTTP_BILLING_PG_SQL_ERROR,       /* the server refused the query,
                                            or its transaction failed */
    NGX_HTTP_BILLING_PG_UNAVAILABLE,     /* no connection could be made */
    NGX_HTTP_BILLING_PG_BUSY,            /* the wait queue was full */
    NGX_HTTP_BILLING_PG_TIMEOUT,         /* waited or ran too long */
    NGX_HTTP_BILLING_PG_BROKEN           /* connection lost mid-query */
} ngx_http_billing_pg_status_e;


struct ngx_http_billing_pg_op_s {
    /* filled by the caller */
    const char                   *sql;
    int                           nparams;
    const char *const            *values;
    ngx_http_billing_pg_done_pt   handler;
    void                         *data;
    ngx_log_t                    *log;
    unsigned                      read_only:1;   /* safe to run twice */
    ngx_http_billing_pg_batch_t  *batch;     /* may be sent with its kind */

    /* where the answer is in op->res: a batch's row and first column */
    int                           row;
    int                           col;

    /* filled by the pool; op->res is cleared after the handler returns */
    ngx_http_billing_pg_status_e  status;
    PGresult                     *res;

    ngx_http_billing_pg_pool_t   *pool;
    ngx_http_billing_pg_conn_t   *conn;
    ngx_queue_t                   queue;         /* in pool->waiters */
    ngx_event_t                   wait;      /* waiting for a connection */
    unsigned                      waiting:1;
    unsigned                      sent:1;    /* the server may have run it */
    unsigned                      retries:8;

    /* the grouper's pointer to this op, cleared when it is cancelled */
    ngx_http_billing_pg_op_t    **link;
};


typedef struct {
    ngx_uint_t                    idle;
    ngx_uint_t                    busy;
    ngx_uint_t                    connecting;
    ngx_uint_t                    waiters;
} ngx_http_billing_pg_stats_t;


/* lookup: how the URL's host names are looked up, NULL when none need it */
ngx_http_billing_pg_pool_t *ngx_http_billing_pg_pool_create(ngx_cycle_t *cycle,
    ngx_str_t *url, ngx_http_billing_lookup_conf_t *lookup, ngx_uint_t min,
    ngx_uint_t max, ngx_uint_t queue, ngx_msec_t connect_timeout,
    ngx_msec_t query_timeout);
void ngx_http_billing_pg_pool_destroy(ngx_http_billing_pg_pool_t *pool);

/* prepares op for ngx_http_billing_pg_query(): everything else zeroed */
void ngx_http_billing_pg_op_init(ngx_http_billing_pg_op_t *op,
    const char *sql, int nparams, const char *const *values,
    ngx_http_billing_pg_done_pt handler, void *data, ngx_log_t *log);

/*
 * Runs op->sql on a pooled connection.  NGX_OK: op->handler will be called
 * later (never from inside this call).  NGX_DECLINED: refused at once,
 * op->status says why (BUSY: the wait queue is full; UNAVAILABLE: no
 * connection can be made now); the handler is not called.
 */
ngx_int_t ngx_http_billing_pg_query(ngx_http_billing_pg_pool_t *pool,
    ngx_http_billing_pg_op_t *op);

/* 1 if the op succeeded with rows x cols tuples (-1: any number) */
ngx_uint_t ngx_http_billing_pg_shape(ngx_http_billing_pg_op_t *op,
    int rows, int cols);

/* detaches an op whose owner is going away; its handler is never called */
void ngx_http_billing_pg_cancel(ngx_http_billing_pg_op_t *op);

/*
 * sql is prepared on every connection the pool opens (its setup), and an
 * op whose op->sql is that very pointer is sent as the prepared statement.
 * NGX_ERROR: too many statements.
 */
ngx_int_t ngx_http_billing_pg_prepare(ngx_http_billing_pg_pool_t *pool,
    const char *sql);

/* max: waiters of one kind sent together at most (< 2: never) */
void ngx_http_billing_pg_batching(ngx_http_billing_pg_pool_t *pool,
    ngx_uint_t max, ngx_http_billing_pg_group_pt group);

/* ends an op the pool no longer holds (a grouper's item): its handler runs */
void ngx_http_billing_pg_finish(ngx_http_billing_pg_op_t *op,
    ngx_http_billing_pg_status_e status, PGresult *res);

void ngx_http_billing_pg_stats(ngx_http_billing_pg_pool_t *pool,
    ngx_http_billing_pg_stats_t *stats);


#endif /* _NGX_HTTP_BILLING_PG_H_INCLUDED_ */
