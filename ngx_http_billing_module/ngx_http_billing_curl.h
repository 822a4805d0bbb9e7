
/*
 * ScholarLink Billing: outgoing HTTP(S) requests with libcurl's multi
 * interface driven by nginx events and timers (one CURLM per worker).
 */


#ifndef _NGX_HTTP_BILLING_CURL_H_INCLUDED_
#define _NGX_HTTP_BILLING_CURL_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>

#include <curl/curl.h>


/* responses larger than this fail with CURLE_WRITE_ERROR */
#define NGX_HTTP_BILLING_HTTP_BODY_MAX  (256 * 1024)


typedef struct ngx_http_billing_http_s  ngx_http_billing_http_t;


typedef struct {
    long                          status;   /* HTTP status; 0: no answer */
    CURLcode                      code;     /* CURLE_OK or why it failed */
    const char                   *error;    /* curl's message, never NULL */
    u_char                       *body;     /* NUL-terminated, may be "" */
    size_t                        len;
    ngx_msec_t                    elapsed;
    unsigned                      timedout:1;
    unsigned                      too_large:1;
} ngx_http_billing_http_result_t;


/*
 * Called once per request, never from inside the call that started it and
 * never after ngx_http_billing_http_cancel().  The result (and its body)
 * is valid only during the call; the handle is freed right after it.
 */
typedef void (*ngx_http_billing_http_done_pt)(
    ngx_http_billing_http_result_t *res, void *data);


ngx_int_t ngx_http_billing_curl_init(ngx_cycle_t *cycle);
void ngx_http_billing_curl_exit(ngx_cycle_t *cycle);

/*
 * Starts a request: method "GET" or "POST" (body copied; may be NULL for
 * GET).  The handle takes over "headers" (freed with the handle, also on
 * failure).  Returns NULL when the request cannot be started: the callback
 * is then never called.
 */
ngx_http_billing_http_t *ngx_http_billing_http_request(const char *method,
    ngx_str_t *url, struct curl_slist *headers, const u_char *body,
    size_t len, ngx_msec_t connect_timeout, ngx_msec_t total_timeout,
    ngx_http_billing_http_done_pt done, void *data, ngx_log_t *log);

#define ngx_http_billing_http_post(url, headers, body, len, ct, tt, done,     \
                                   data, log)                                 \
    ngx_http_billing_http_request("POST", url, headers, body, len, ct, tt,    \
                                  done, data, log)

#define ngx_http_billing_http_get(url, headers, ct, tt, done, data, log)      \
    ngx_http_billing_http_request("GET", url, headers, NULL, 0, ct, tt,       \
                                  done, data, log)

/*
 * Stops a request in flight; its callback will not be called.  Also valid
 * after ngx_http_billing_curl_exit() (which detaches, but does not free,
 * the transfers still in flight), so exit hooks may run in any order.
 */
void ngx_http_billing_http_cancel(ngx_http_billing_http_t *h);


#endif /* _NGX_HTTP_BILLING_CURL_H_INCLUDED_ */
