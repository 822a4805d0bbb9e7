
/*
 * ScholarLink Billing: the periodic ledger audit behind the
 * billing_invariant_violations gauge.
 *
 * One worker per nginx instance (worker 0) runs billing.invariant_violations()
 * every billing_audit_interval through the pool and publishes the count in
 * the shared metrics zone; the alert "reconciliation errors" fires on it.
 * The check reads the whole ledger, so the interval is minutes, not
 * seconds; 0 turns it off.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_billing.h"
#include "ngx_http_billing_audit.h"
#include "ngx_http_billing_metrics.h"
#include "ngx_http_billing_pg.h"


typedef struct {
    ngx_http_billing_main_conf_t *bmcf;
    ngx_event_t                   timer;
    ngx_http_billing_pg_op_t      op;
    ngx_uint_t                    pending;
} ngx_http_billing_audit_t;


static void ngx_http_billing_audit_tick(ngx_event_t *ev);
static void ngx_http_billing_audit_done(ngx_http_billing_pg_op_t *op);


static ngx_http_billing_audit_t  ngx_http_billing_audit;


ngx_int_t
ngx_http_billing_audit_init(ngx_cycle_t *cycle,
    ngx_http_billing_main_conf_t *bmcf)
{
    ngx_http_billing_audit_t  *a;

    if (bmcf->audit_interval == 0 || bmcf->pool == NULL || ngx_worker != 0) {
        return NGX_OK;
    }

    a = &ngx_http_billing_audit;
    ngx_memzero(a, sizeof(ngx_http_billing_audit_t));

    a->bmcf = bmcf;
    a->timer.handler = ngx_http_billing_audit_tick;
    a->timer.data = a;
    a->timer.log = cycle->log;
    a->timer.cancelable = 1;

    /* soon after start, so the gauge means something from the first scrape */
    ngx_add_timer(&a->timer, ngx_min(bmcf->audit_interval, 5000));

    return NGX_OK;
}


void
ngx_http_billing_audit_exit(void)
{
    ngx_http_billing_audit_t  *a;

    a = &ngx_http_billing_audit;

    if (a->timer.timer_set) {
        ngx_del_timer(&a->timer);
    }

    if (a->pending) {
        ngx_http_billing_pg_cancel(&a->op);
        a->pending = 0;
    }
}


static void
ngx_http_billing_audit_tick(ngx_event_t *ev)
{
    ngx_http_billing_audit_t  *a;

    a = ev->data;

    if (ngx_exiting || ngx_terminate) {
        return;
    }

    ngx_add_timer(&a->timer, a->bmcf->audit_interval);

    if (a->pending) {
        return;         /* the last check is still running */
    }

    ngx_http_billing_pg_op_init(&a->op,
                               "SELECT count(*) "
                               "FROM billing.invariant_violations()",
                               0, NULL, ngx_http_billing_audit_done, a,
                               ev->log);

    if (ngx_http_billing_pg_query(a->bmcf->pool, &a->op) == NGX_OK) {
        a->pending = 1;
    }
}


static void
ngx_http_billing_audit_done(ngx_http_billing_pg_op_t *op)
{
    ngx_int_t                  n;
    ngx_http_billing_audit_t  *a;

    a = op->data;
    a->pending = 0;

    n = ngx_http_billing_pg_shape(op, 1, 1)
        ? ngx_atoi((u_char *) PQgetvalue(op->res, 0, 0),
                   PQgetlength(op->res, 0, 0))
        : NGX_ERROR;

    if (n == NGX_ERROR) {
        ngx_log_error(NGX_LOG_WARN, op->log, 0,
                      "billing: the ledger audit could not run");
        return;
    }

    if (n > 0) {
        ngx_log_error(NGX_LOG_ALERT, op->log, 0,
                      "billing: the ledger audit found %i invariant "
                      "violations: SELECT * FROM "
                      "billing.invariant_violations() tells which", n);
    }

    ngx_http_billing_metrics_shared_gauge(
        NGX_HTTP_BILLING_S_INVARIANT_VIOLATIONS, (uint64_t) n);
}
