
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

void ngx_http_billing_pg_stats(ngx_http_billing_pg_pool_t *pool,
    ngx_http_billing_pg_stats_t *stats);


#endif /* _NGX_HTTP_BILLING_PG_H_INCLUDED_ */
