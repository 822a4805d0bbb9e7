
/*
 * ScholarLink Billing: the periodic ledger audit behind the
 * billing_invariant_violations and
 * billing_invariant_check_last_success_timestamp_seconds gauges.
 *
 * Worker 0 of every nginx instance calls billing.audit_run() every
 * billing_audit_interval through the pool (sql/functions/audit.sql).  The
 * audit is incremental: a run checks the ledger entries written since the
 * last one and stops at billing_audit_budget, keeping its progress, so it
 * never meets the pool's query timeout however large the ledger grows.  One
 * run at a time in the whole cluster (an advisory lock): the other
 * instances skip, and read what the last run found.  When final entries are
 * left over, the next run comes soon instead of an interval later.
 *
 * Both gauges come from the database, so every instance shows the same
 * numbers; an instance whose call fails keeps its last ones, and the alert
 * on the success timestamp (BillingInvariantCheckStale) says the audit is
 * not running.  0 turns the audit off.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_billing.h"
#include "ngx_http_billing_audit.h"
#include "ngx_http_billing_metrics.h"
#include "ngx_http_billing_pg.h"


/* the pause before the next run while final entries wait */
#define NGX_HTTP_BILLING_AUDIT_CATCH_UP  250


typedef struct {
    ngx_http_billing_main_conf_t *bmcf;
    ngx_event_t                   timer;
    ngx_http_billing_pg_op_t      op;
    ngx_uint_t                    pending;
    const char                   *params[1];
    u_char                        budget[NGX_INT_T_LEN + 1];
} ngx_http_billing_audit_t;


static void ngx_http_billing_audit_tick(ngx_event_t *ev);
static void ngx_http_billing_audit_done(ngx_http_billing_pg_op_t *op);
static int64_t ngx_http_billing_audit_int(PGresult *res, int col);


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

    (void) ngx_sprintf(a->budget, "%M%Z", bmcf->audit_budget);
    a->params[0] = (const char *) a->budget;

    /* soon after start, so the gauges mean something from the first scrape */
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
        return;         /* the last run is still out */
    }

    ngx_http_billing_pg_op_init(&a->op,
                               "SELECT ran, examined, more, violations, "
                               "last_success "
                               "FROM billing.audit_run($1::int)",
                               1, a->params, ngx_http_billing_audit_done, a,
                               ev->log);

    if (ngx_http_billing_pg_query(a->bmcf->pool, &a->op) == NGX_OK) {
        a->pending = 1;

    } else {
        ngx_log_error(NGX_LOG_WARN, ev->log, 0,
                      "billing: the ledger audit could not run: "
                      "no database connection");
    }
}


static void
ngx_http_billing_audit_done(ngx_http_billing_pg_op_t *op)
{
    int64_t                    examined, violations, last_success;
    ngx_uint_t                 ran, more;
    ngx_http_billing_audit_t  *a;

    a = op->data;
    a->pending = 0;

    if (!ngx_http_billing_pg_shape(op, 1, 5)
        || (violations = ngx_http_billing_audit_int(op->res, 3)) < 0)
    {
        /* the gauges keep their values; the success timestamp ages */
        ngx_log_error(NGX_LOG_WARN, op->log, 0,
                      "billing: the ledger audit could not run");
        return;
    }

    ran = (PQgetvalue(op->res, 0, 0)[0] == 't');
    more = (PQgetvalue(op->res, 0, 2)[0] == 't');
    examined = ngx_http_billing_audit_int(op->res, 1);
    last_success = ngx_http_billing_audit_int(op->res, 4);

    ngx_log_debug4(NGX_LOG_DEBUG_HTTP, op->log, 0,
                   "billing audit: %s, %L entries examined%s, %L violations",
                   ran ? "ran" : "skipped: another session audits",
                   examined, more ? ", more waiting" : "", violations);

    if (ran && violations > 0) {
        ngx_log_error(NGX_LOG_ALERT, op->log, 0,
                      "billing: the ledger audit found %L invariant "
                      "violations: SELECT * FROM billing.audit_findings "
                      "tells which", violations);
    }

    ngx_http_billing_metrics_shared_gauge(
        NGX_HTTP_BILLING_S_INVARIANT_VIOLATIONS, (uint64_t) violations);

    if (last_success > 0) {
        ngx_http_billing_metrics_shared_gauge(
            NGX_HTTP_BILLING_S_INVARIANT_CHECK_SUCCESS,
            (uint64_t) last_success);
    }

    /* final entries left over: catch up without waiting an interval */
    if (more && !ngx_exiting && !ngx_terminate
        && a->bmcf->audit_interval > NGX_HTTP_BILLING_AUDIT_CATCH_UP)
    {
        ngx_add_timer(&a->timer, NGX_HTTP_BILLING_AUDIT_CATCH_UP);
    }
}


/* a non-negative integer column, 0 when NULL, -1 when not a number */
static int64_t
ngx_http_billing_audit_int(PGresult *res, int col)
{
    if (PQgetisnull(res, 0, col)) {
        return 0;
    }

    return ngx_atoof((u_char *) PQgetvalue(res, 0, col),
                     PQgetlength(res, 0, col));
}
