
/*
 * ScholarLink Billing: the database URL's host names looked up off the
 * event loop (getaddrinfo() in nginx's thread pool).
 */


#ifndef _NGX_HTTP_BILLING_LOOKUP_H_INCLUDED_
#define _NGX_HTTP_BILLING_LOOKUP_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>


typedef struct ngx_http_billing_lookup_conf_s  ngx_http_billing_lookup_conf_t;
typedef struct ngx_http_billing_lookup_s       ngx_http_billing_lookup_t;


/*
 * What a lookup found, as libpq's connection keywords: one entry per
 * address, "host" keeping the name (TLS checks it, .pgpass looks it up)
 * and "hostaddr" the address libpq connects to.  "port" is NULL when the
 * URL's own applies.
 */
typedef struct {
    const char                   *host;
    const char                   *hostaddr;
    const char                   *port;
} ngx_http_billing_lookup_result_t;


/* res is NULL when nothing could be found; error says why */
typedef void (*ngx_http_billing_lookup_pt)(void *data,
    ngx_http_billing_lookup_result_t *res, const char *error);


/*
 * At configuration time: *lcf is NULL when the URL names no host that
 * needs a lookup (an address, a unix socket, or "hostaddr" given).
 * server: a DNS server to ask instead of /etc/resolv.conf's, or NULL.
 */
char *ngx_http_billing_lookup_conf(ngx_conf_t *cf, ngx_str_t *url,
    ngx_addr_t *server, ngx_http_billing_lookup_conf_t **lcf);

/* the handler is called later from the event loop, never from here */
ngx_http_billing_lookup_t *ngx_http_billing_lookup_start(
    ngx_http_billing_lookup_conf_t *lcf, ngx_http_billing_lookup_pt handler,
    void *data, ngx_log_t *log);

/* the handler will not be called; the lookup frees itself when done */
void ngx_http_billing_lookup_cancel(ngx_http_billing_lookup_t *lk);


#endif /* _NGX_HTTP_BILLING_LOOKUP_H_INCLUDED_ */
