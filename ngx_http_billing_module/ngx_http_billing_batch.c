
/*
 * ScholarLink Billing: group commit (docs/architecture.md, "Group commit").
 *
 * When a pooled connection frees up and several calls of one kind (a
 * reconcile, a hold creation, a balance read) wait in the pool's queue,
 * the pool hands them here in arrival order (ngx_http_billing_pg_group);
 * they become ONE statement: the kind's batch function, given one array
 * per parameter of the single call, element i of each being item i's
 * (billing.api_reconcile_batch(users[], models[], ...)).  It answers one row
 * per item, (ordinal, status, code, body, meta); each item's own completion
 * then reads its row as it would read the single call's.
 *
 * Only what already waits is grouped: nobody waits for a batch to fill,
 * so at low load nothing changes.
 *
 * When the statement fails as a whole, each item is answered as it would
 * be alone:
 *   - the server refused it (an error, a deadlock, a missing function or
 *     privilege: the transaction rolled back, nothing was written), or it
 *     never reached the server: each item is sent again, alone; the
 *     idempotency keys would make even a repeat exact;
 *   - the connection was lost or timed out after it was sent: nobody knows
 *     whether it committed, each item gets what a single call gets then,
 *     database_outcome_unknown (docs/spec.md §4, errors).  A batch of
 *     reads is first run again elsewhere by the pool, as a single read is.
 */


#include <ngx_config.h>
#include <ngx_core.h>

#include "ngx_http_billing_batch.h"
#include "ngx_http_billing_metrics.h"
#include "ngx_http_billing_pg.h"

#include "billing_array.h"


#define NGX_HTTP_BILLING_BATCH_PARAMS  8


typedef struct {
    ngx_http_billing_pg_op_t      op;        /* the batch's statement */
    ngx_http_billing_pg_pool_t   *pool;
    ngx_uint_t                    n;
    const char                   *values[NGX_HTTP_BILLING_BATCH_PARAMS];
    ngx_http_billing_pg_op_t     *item[1];   /* n; NULL once cancelled */
} ngx_http_billing_batch_t;


static ngx_http_billing_pg_op_t *ngx_http_billing_batch_group(
    ngx_http_billing_pg_pool_t *pool, ngx_http_billing_pg_op_t **ops,
    ngx_uint_t n);
static void ngx_http_billing_batch_done(ngx_http_billing_pg_op_t *bop);
static ngx_int_t ngx_http_billing_batch_rows(ngx_http_billing_batch_t *b,
    PGresult *res, int *rows);
static void ngx_http_billing_batch_answer(ngx_http_billing_batch_t *b,
    ngx_uint_t i, ngx_http_billing_pg_status_e status, PGresult *res,
    int row);
static void ngx_http_billing_batch_alone(ngx_http_billing_batch_t *b,
    ngx_uint_t i);


void
ngx_http_billing_batch_init(ngx_http_billing_pg_pool_t *pool, ngx_uint_t max)
{
    if (max > 1) {
        ngx_http_billing_pg_batching(pool, max, ngx_http_billing_batch_group);
    }
}


/*
 * The pool's grouper: one op whose parameters are the items' parameters
 * as arrays (PostgreSQL array literals, every element quoted: keys may
 * hold quotes, backslashes, braces or commas).  Allocated outside any
 * request: an item's request may go away while the batch is out.
 */
static ngx_http_billing_pg_op_t *
ngx_http_billing_batch_group(ngx_http_billing_pg_pool_t *pool,
    ngx_http_billing_pg_op_t **ops, ngx_uint_t n)
{
    int                        nparams;
    char                      *p;
    size_t                     head, size, len[NGX_HTTP_BILLING_BATCH_PARAMS];
    ngx_uint_t                 i, j;
    const char                *column[NGX_HTTP_BILLING_PG_BATCH_MAX];
    ngx_http_billing_batch_t  *b;

    nparams = ops[0]->nparams;

    if (nparams < 1 || nparams > NGX_HTTP_BILLING_BATCH_PARAMS
        || n > NGX_HTTP_BILLING_PG_BATCH_MAX)
    {
        return NULL;
    }

    head = sizeof(ngx_http_billing_batch_t)
           + (n - 1) * sizeof(ngx_http_billing_pg_op_t *);
    size = head;

    for (j = 0; j < (ngx_uint_t) nparams; j++) {
        for (i = 0; i < n; i++) {
            column[i] = ops[i]->values[j];
        }

        len[j] = billing_array_size(column, n);

        if (len[j] == 0 || size > NGX_MAX_SIZE_T_VALUE - len[j]) {
            return NULL;
        }

        size += len[j];
    }

    b = ngx_alloc(size, ngx_cycle->log);
    if (b == NULL) {
        return NULL;
    }

    p = (char *) b + head;

    for (j = 0; j < (ngx_uint_t) nparams; j++) {
        for (i = 0; i < n; i++) {
            column[i] = ops[i]->values[j];
        }

        b->values[j] = p;
        p += billing_array_write(p, column, n) + 1;
    }

    b->pool = pool;
    b->n = n;

    for (i = 0; i < n; i++) {
        b->item[i] = ops[i];
        ops[i]->link = &b->item[i];
    }

    ngx_http_billing_pg_op_init(&b->op, ops[0]->batch->sql, nparams,
                                b->values, ngx_http_billing_batch_done, b,
                                ngx_cycle->log);

    /* a batch of reads is a read: the pool runs it again on a lost link */
    b->op.read_only = ops[0]->read_only;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "billing batch: %ui requests in one statement", n);

    ngx_http_billing_metrics_inc(NGX_HTTP_BILLING_M_DB_BATCHES, 1);
    ngx_http_billing_metrics_inc(NGX_HTTP_BILLING_M_DB_BATCHED, n);

    return &b->op;
}


static void
ngx_http_billing_batch_done(ngx_http_billing_pg_op_t *bop)
{
    int                        rows[NGX_HTTP_BILLING_PG_BATCH_MAX];
    ngx_uint_t                 i, alone;
    ngx_http_billing_batch_t  *b;

    b = bop->data;

    if (bop->status == NGX_HTTP_BILLING_PG_OK) {

        if (ngx_http_billing_batch_rows(b, bop->res, rows) == NGX_OK) {
            for (i = 0; i < b->n; i++) {
                ngx_http_billing_batch_answer(b, i, NGX_HTTP_BILLING_PG_OK,
                                              bop->res, rows[i]);
            }

        } else {
            /* it committed, but what it answered cannot be read */
            for (i = 0; i < b->n; i++) {
                ngx_http_billing_batch_answer(b, i,
                                              NGX_HTTP_BILLING_PG_BROKEN,
                                              NULL, 0);
            }
        }

    } else if (bop->status == NGX_HTTP_BILLING_PG_SQL_ERROR || !bop->sent) {

        /* nothing of it was written */
        alone = 0;

        for (i = 0; i < b->n; i++) {
            alone += (b->item[i] != NULL);
        }

        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "billing: a batch of %ui requests failed as a whole, "
                      "%ui of them are sent again one by one", b->n, alone);

        ngx_http_billing_metrics_inc(NGX_HTTP_BILLING_M_DB_BATCH_ALONE,
                                     alone);

        for (i = 0; i < b->n; i++) {
            ngx_http_billing_batch_alone(b, i);
        }

    } else {
        /* lost or timed out after it was sent: the outcome is unknown */
        for (i = 0; i < b->n; i++) {
            ngx_http_billing_batch_answer(b, i, bop->status, NULL, 0);
        }
    }

    ngx_free(b);
}


/* rows[i]: the row of item i; every ordinal 1..n exactly once */
static ngx_int_t
ngx_http_billing_batch_rows(ngx_http_billing_batch_t *b, PGresult *res,
    int *rows)
{
    int         row;
    ngx_int_t   ordinal;
    ngx_uint_t  i;

    if (PQntuples(res) != (int) b->n || PQnfields(res) != 5) {
        goto invalid;
    }

    for (i = 0; i < b->n; i++) {
        rows[i] = -1;
    }

    for (row = 0; row < (int) b->n; row++) {
        ordinal = ngx_atoi((u_char *) PQgetvalue(res, row, 0),
                           PQgetlength(res, row, 0));

        if (ordinal < 1 || ordinal > (ngx_int_t) b->n
            || rows[ordinal - 1] != -1)
        {
            goto invalid;
        }

        rows[ordinal - 1] = row;
    }

    return NGX_OK;

invalid:

    ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                  "billing: a batch of %ui requests answered %d rows of %d "
                  "columns, not one row per request", b->n, PQntuples(res),
                  PQnfields(res));

    return NGX_ERROR;
}


/* item i's answer: its row of the batch's result, or the batch's failure */
static void
ngx_http_billing_batch_answer(ngx_http_billing_batch_t *b, ngx_uint_t i,
    ngx_http_billing_pg_status_e status, PGresult *res, int row)
{
    ngx_http_billing_pg_op_t  *op;

    op = b->item[i];

    if (op == NULL) {
        return;         /* its request went away */
    }

    b->item[i] = NULL;
    op->link = NULL;

    op->sent = 1;
    op->row = row;
    op->col = 1;        /* after the ordinal */

    ngx_http_billing_pg_finish(op, status, res);
}


/* item i sent again, alone, as if it had just arrived */
static void
ngx_http_billing_batch_alone(ngx_http_billing_batch_t *b, ngx_uint_t i)
{
    ngx_http_billing_pg_op_t  *op;

    op = b->item[i];

    if (op == NULL) {
        return;
    }

    b->item[i] = NULL;
    op->link = NULL;
    op->batch = NULL;
    op->retries = 0;

    if (ngx_http_billing_pg_query(b->pool, op) != NGX_OK) {
        /* refused at once (queue full, no connection): op->status says */
        ngx_http_billing_pg_finish(op, op->status, NULL);
    }
}
