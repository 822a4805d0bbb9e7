
/*
 * ScholarLink Billing: libcurl's multi socket interface on nginx events.
 *
 * One CURLM per worker.  curl tells us which sockets to watch through
 * CURLMOPT_SOCKETFUNCTION: each socket is wrapped in an nginx connection
 * (ngx_http_billing_socket.c: level-triggered events, curl keeps the
 * descriptor), forgotten again on CURL_POLL_REMOVE, and curl closes the
 * socket.  CURLMOPT_TIMERFUNCTION arms one cancelable nginx timer; a
 * timeout of 0 ("act now") becomes a 1 ms timer, so curl_multi_socket_action
 * is never called from inside a curl callback.
 *
 * Name resolution uses curl's own resolver (threaded in Debian's libcurl),
 * so nothing here blocks the event loop.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>

#include "ngx_http_billing_curl.h"
#include "ngx_http_billing_socket.h"


struct ngx_http_billing_http_s {
    ngx_queue_t                     queue;      /* in the active list */
    CURL                           *easy;
    struct curl_slist              *headers;
    ngx_http_billing_http_done_pt   done;
    void                           *data;
    ngx_log_t                      *log;
    u_char                         *buf;
    size_t                          len;
    size_t                          cap;
    ngx_msec_t                      start;
    unsigned                        too_large:1;
    char                            errbuf[CURL_ERROR_SIZE];
};


static int ngx_http_billing_curl_socket(CURL *easy, curl_socket_t s,
    int what, void *userp, void *socketp);
static int ngx_http_billing_curl_timer(CURLM *multi, long timeout_ms,
    void *userp);
static void ngx_http_billing_curl_timer_handler(ngx_event_t *ev);
static void ngx_http_billing_curl_event(ngx_event_t *ev);
static void ngx_http_billing_curl_check(void);
static void ngx_http_billing_curl_finish(ngx_http_billing_http_t *h,
    CURLcode code);
static void ngx_http_billing_curl_free(ngx_http_billing_http_t *h);
static size_t ngx_http_billing_curl_write(char *ptr, size_t size,
    size_t nmemb, void *userdata);


static ngx_uint_t         ngx_http_billing_curl_global;
static CURLM             *ngx_http_billing_curl_multi;
static ngx_log_t         *ngx_http_billing_curl_log;
static ngx_queue_t        ngx_http_billing_curl_active;
static ngx_event_t        ngx_http_billing_curl_timer_ev;

/* debug builds log a timer's ev->data as a connection: give it one */
static ngx_connection_t   ngx_http_billing_curl_dummy;


ngx_int_t
ngx_http_billing_curl_init(ngx_cycle_t *cycle)
{
    CURLM  *multi;

    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        return NGX_OK;
    }

    if (!ngx_http_billing_curl_global) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
            ngx_log_error(NGX_LOG_EMERG, cycle->log, 0,
                          "billing: curl_global_init() failed");
            return NGX_ERROR;
        }

        ngx_http_billing_curl_global = 1;
    }

    multi = curl_multi_init();
    if (multi == NULL) {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, 0,
                      "billing: curl_multi_init() failed");
        return NGX_ERROR;
    }

    curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION,
                      ngx_http_billing_curl_socket);
    curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION,
                      ngx_http_billing_curl_timer);

    ngx_http_billing_curl_multi = multi;
    ngx_http_billing_curl_log = cycle->log;
    ngx_queue_init(&ngx_http_billing_curl_active);

    ngx_memzero(&ngx_http_billing_curl_dummy, sizeof(ngx_connection_t));
    ngx_http_billing_curl_dummy.fd = (ngx_socket_t) -1;

    ngx_memzero(&ngx_http_billing_curl_timer_ev, sizeof(ngx_event_t));
    ngx_http_billing_curl_timer_ev.handler =
                                       ngx_http_billing_curl_timer_handler;
    ngx_http_billing_curl_timer_ev.data = &ngx_http_billing_curl_dummy;
    ngx_http_billing_curl_timer_ev.log = cycle->log;
    ngx_http_billing_curl_timer_ev.cancelable = 1;

    return NGX_OK;
}


void
ngx_http_billing_curl_exit(ngx_cycle_t *cycle)
{
    ngx_queue_t              *q;
    ngx_http_billing_http_t  *h;

    if (ngx_http_billing_curl_multi == NULL) {
        return;
    }

    /*
     * Transfers still in flight are detached, not freed: their owners may
     * cancel them later in their own exit hooks (whatever the order), and
     * a handle nobody cancels goes away with the process.
     */
    while (!ngx_queue_empty(&ngx_http_billing_curl_active)) {
        q = ngx_queue_head(&ngx_http_billing_curl_active);
        h = ngx_queue_data(q, ngx_http_billing_http_t, queue);

        ngx_log_debug0(NGX_LOG_DEBUG_EVENT, cycle->log, 0,
                       "billing curl: transfer detached at exit");

        ngx_queue_remove(q);
        ngx_queue_init(q);
        h->done = NULL;

        (void) curl_multi_remove_handle(ngx_http_billing_curl_multi, h->easy);
    }

    if (ngx_http_billing_curl_timer_ev.timer_set) {
        ngx_del_timer(&ngx_http_billing_curl_timer_ev);
    }

    /* cached connections are closed here; REMOVE callbacks unwrap them */
    curl_multi_cleanup(ngx_http_billing_curl_multi);
    ngx_http_billing_curl_multi = NULL;
}


ngx_http_billing_http_t *
ngx_http_billing_http_request(const char *method, ngx_str_t *url,
    struct curl_slist *headers, const u_char *body, size_t len,
    ngx_msec_t connect_timeout, ngx_msec_t total_timeout,
    ngx_http_billing_http_done_pt done, void *data, ngx_log_t *log)
{
    char                     *u;
    CURL                     *easy;
    CURLMcode                 mc;
    struct curl_slist        *l;
    ngx_http_billing_http_t  *h;

    if (ngx_http_billing_curl_multi == NULL) {
        curl_slist_free_all(headers);
        return NULL;
    }

    /* curl adds "Expect: 100-continue" to larger bodies: not wanted */
    l = curl_slist_append(headers, "Expect:");
    if (l == NULL) {
        curl_slist_free_all(headers);
        return NULL;
    }

    headers = l;

    h = ngx_calloc(sizeof(ngx_http_billing_http_t), log);
    u = ngx_alloc(url->len + 1, log);
    easy = curl_easy_init();

    if (h == NULL || u == NULL || easy == NULL) {
        goto failed;
    }

    ngx_memcpy(u, url->data, url->len);
    u[url->len] = '\0';

    h->easy = easy;
    h->headers = headers;
    h->done = done;
    h->data = data;
    h->log = log;
    h->start = ngx_current_msec;

    if (curl_easy_setopt(easy, CURLOPT_URL, u) != CURLE_OK
#if (LIBCURL_VERSION_NUM >= 0x075500)
        || curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https")
           != CURLE_OK
        || curl_easy_setopt(easy, CURLOPT_REDIR_PROTOCOLS_STR, "http,https")
           != CURLE_OK
#else
        || curl_easy_setopt(easy, CURLOPT_PROTOCOLS,
                            (long) (CURLPROTO_HTTP|CURLPROTO_HTTPS))
           != CURLE_OK
#endif
        || curl_easy_setopt(easy, CURLOPT_PRIVATE, h) != CURLE_OK
        || curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L) != CURLE_OK
        || curl_easy_setopt(easy, CURLOPT_NOPROGRESS, 1L) != CURLE_OK
        || curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 0L) != CURLE_OK
        || curl_easy_setopt(easy, CURLOPT_SSL_VERIFYPEER, 1L) != CURLE_OK
        || curl_easy_setopt(easy, CURLOPT_SSL_VERIFYHOST, 2L) != CURLE_OK
        || curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS,
                            (long) connect_timeout) != CURLE_OK
        || curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, (long) total_timeout)
           != CURLE_OK
        || curl_easy_setopt(easy, CURLOPT_HTTPHEADER, headers) != CURLE_OK
        || curl_easy_setopt(easy, CURLOPT_USERAGENT, "ScholarLink-Billing/1")
           != CURLE_OK
        || curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION,
                            ngx_http_billing_curl_write) != CURLE_OK
        || curl_easy_setopt(easy, CURLOPT_WRITEDATA, h) != CURLE_OK
        || curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, h->errbuf) != CURLE_OK)
    {
        goto failed;
    }

    if (ngx_strcmp(method, "POST") == 0) {
        if (curl_easy_setopt(easy, CURLOPT_POST, 1L) != CURLE_OK
            || curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE, (long) len)
               != CURLE_OK
            || curl_easy_setopt(easy, CURLOPT_COPYPOSTFIELDS,
                                body ? (const char *) body : "")
               != CURLE_OK)
        {
            goto failed;
        }

    } else if (ngx_strcmp(method, "GET") == 0) {
        if (curl_easy_setopt(easy, CURLOPT_HTTPGET, 1L) != CURLE_OK) {
            goto failed;
        }

    } else {
        goto failed;
    }

    ngx_free(u);
    u = NULL;

    ngx_queue_insert_tail(&ngx_http_billing_curl_active, &h->queue);

    /* no URL: one may carry credentials */
    ngx_log_debug1(NGX_LOG_DEBUG_EVENT, log, 0,
                   "billing curl: %s started", method);

    /* the timer callback runs from here: a 1 ms timer, nothing more */
    mc = curl_multi_add_handle(ngx_http_billing_curl_multi, easy);
    if (mc != CURLM_OK) {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "billing: curl_multi_add_handle() failed: %s",
                      curl_multi_strerror(mc));
        ngx_queue_remove(&h->queue);
        goto failed;
    }

    return h;

failed:

    if (u) {
        ngx_free(u);
    }

    if (easy) {
        curl_easy_cleanup(easy);
    }

    curl_slist_free_all(headers);

    if (h) {
        ngx_free(h);
    }

    return NULL;
}


void
ngx_http_billing_http_cancel(ngx_http_billing_http_t *h)
{
    ngx_log_debug0(NGX_LOG_DEBUG_EVENT, h->log, 0,
                   "billing curl: transfer cancelled");

    /* a detached handle's queue link points to itself: harmless */
    ngx_queue_remove(&h->queue);

    if (ngx_http_billing_curl_multi) {
        (void) curl_multi_remove_handle(ngx_http_billing_curl_multi, h->easy);
    }

    ngx_http_billing_curl_free(h);
}


static size_t
ngx_http_billing_curl_write(char *ptr, size_t size, size_t nmemb,
    void *userdata)
{
    ngx_http_billing_http_t *h = userdata;

    size_t   n, cap;
    u_char  *p;

    n = size * nmemb;

    if (h->len + n > NGX_HTTP_BILLING_HTTP_BODY_MAX) {
        h->too_large = 1;
        return 0;               /* CURLE_WRITE_ERROR */
    }

    if (h->len + n + 1 > h->cap) {
        cap = ngx_max(h->cap * 2, h->len + n + 1);
        cap = ngx_max(cap, 4096);

        p = realloc(h->buf, cap);
        if (p == NULL) {
            return 0;
        }

        h->buf = p;
        h->cap = cap;
    }

    ngx_memcpy(h->buf + h->len, ptr, n);
    h->len += n;
    h->buf[h->len] = '\0';

    return n;
}


static int
ngx_http_billing_curl_socket(CURL *easy, curl_socket_t s, int what,
    void *userp, void *socketp)
{
    ngx_connection_t  *c;

    c = socketp;

    ngx_log_debug2(NGX_LOG_DEBUG_EVENT, ngx_http_billing_curl_log, 0,
                   "billing curl: socket %d: poll %d", (int) s, what);

    if (what == CURL_POLL_REMOVE) {
        if (c) {
            ngx_http_billing_socket_unwrap(c, 0);
            curl_multi_assign(ngx_http_billing_curl_multi, s, NULL);
        }

        return 0;
    }

    if (c == NULL) {
        c = ngx_http_billing_socket_wrap(s, ngx_http_billing_curl_event, NULL,
                                         ngx_http_billing_curl_log);
        if (c == NULL) {
            return -1;
        }

        curl_multi_assign(ngx_http_billing_curl_multi, s, c);
    }

    if (ngx_http_billing_socket_watch(c->read, what & CURL_POLL_IN) != NGX_OK
        || ngx_http_billing_socket_watch(c->write, what & CURL_POLL_OUT)
           != NGX_OK)
    {
        ngx_log_error(NGX_LOG_ERR, c->log, 0,
                      "billing: cannot watch a curl socket");
    }

    return 0;
}


static int
ngx_http_billing_curl_timer(CURLM *multi, long timeout_ms, void *userp)
{
    ngx_event_t  *ev;

    ev = &ngx_http_billing_curl_timer_ev;

    /* ngx_add_timer() keeps a timer set less than 300 ms away: reset it */
    if (ev->timer_set) {
        ngx_del_timer(ev);
    }

    ngx_log_debug1(NGX_LOG_DEBUG_EVENT, ngx_http_billing_curl_log, 0,
                   "billing curl: timer %l ms", timeout_ms);

    if (timeout_ms < 0) {
        return 0;
    }

    /* transfers in flight hold up a graceful shutdown (bounded by their
     * total timeout); an idle multi does not */
    ev->cancelable = ngx_queue_empty(&ngx_http_billing_curl_active);

    ngx_add_timer(ev, timeout_ms > 0 ? (ngx_msec_t) timeout_ms : 1);

    return 0;
}


static void
ngx_http_billing_curl_timer_handler(ngx_event_t *ev)
{
    int  running;

    if (ngx_http_billing_curl_multi == NULL) {
        return;
    }

    (void) curl_multi_socket_action(ngx_http_billing_curl_multi,
                                    CURL_SOCKET_TIMEOUT, 0, &running);

    ngx_log_debug1(NGX_LOG_DEBUG_EVENT, ev->log, 0,
                   "billing curl: timer fired, %d running", running);

    ngx_http_billing_curl_check();
}


static void
ngx_http_billing_curl_event(ngx_event_t *ev)
{
    int                running;
    curl_socket_t      fd;
    ngx_connection_t  *c;

    c = ev->data;
    fd = c->fd;

    if (ngx_http_billing_curl_multi == NULL || fd == (ngx_socket_t) -1) {
        return;
    }

    ngx_log_debug2(NGX_LOG_DEBUG_EVENT, ev->log, 0,
                   "billing curl: socket %d %s", (int) fd,
                   ev->write ? "writable" : "readable");

    /* c may be freed by a REMOVE callback in here: not used afterwards */
    (void) curl_multi_socket_action(ngx_http_billing_curl_multi, fd,
                                    ev->write ? CURL_CSELECT_OUT
                                              : CURL_CSELECT_IN,
                                    &running);

    ngx_http_billing_curl_check();
}


static void
ngx_http_billing_curl_check(void)
{
    int                       left;
    CURL                     *easy;
    void                     *priv;
    CURLMsg                  *msg;
    CURLcode                  code;
    ngx_http_billing_http_t  *h;

    while (ngx_http_billing_curl_multi
           && (msg = curl_multi_info_read(ngx_http_billing_curl_multi, &left)))
    {
        if (msg->msg != CURLMSG_DONE) {
            continue;
        }

        easy = msg->easy_handle;
        code = msg->data.result;
        priv = NULL;

        if (curl_easy_getinfo(easy, CURLINFO_PRIVATE, &priv) != CURLE_OK
            || priv == NULL)
        {
            (void) curl_multi_remove_handle(ngx_http_billing_curl_multi, easy);
            continue;
        }

        h = priv;
        ngx_http_billing_curl_finish(h, code);
    }
}


static void
ngx_http_billing_curl_finish(ngx_http_billing_http_t *h, CURLcode code)
{
    long                            status;
    ngx_http_billing_http_result_t  res;

    ngx_queue_remove(&h->queue);
    (void) curl_multi_remove_handle(ngx_http_billing_curl_multi, h->easy);

    status = 0;
    (void) curl_easy_getinfo(h->easy, CURLINFO_RESPONSE_CODE, &status);

    ngx_memzero(&res, sizeof(ngx_http_billing_http_result_t));

    res.code = code;
    res.status = (code == CURLE_OK) ? status : 0;
    res.body = h->buf ? h->buf : (u_char *) "";
    res.len = h->len;
    res.elapsed = ngx_current_msec - h->start;
    res.timedout = (code == CURLE_OPERATION_TIMEDOUT);
    res.too_large = h->too_large;

    if (code == CURLE_OK) {
        res.error = "";

    } else if (h->too_large) {
        res.error = "response too large";

    } else {
        res.error = h->errbuf[0] ? h->errbuf : curl_easy_strerror(code);
    }

    ngx_log_debug3(NGX_LOG_DEBUG_EVENT, h->log, 0,
                   "billing curl: done: curl %d, status %l, %M ms",
                   (int) code, status, res.elapsed);

    if (h->done) {
        h->done(&res, h->data);
    }

    ngx_http_billing_curl_free(h);
}


static void
ngx_http_billing_curl_free(ngx_http_billing_http_t *h)
{
    curl_easy_cleanup(h->easy);
    curl_slist_free_all(h->headers);

    if (h->buf) {
        free(h->buf);
    }

    ngx_free(h);
}
