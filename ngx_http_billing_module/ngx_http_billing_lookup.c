
/*
 * ScholarLink Billing: the database URL's host names looked up without
 * blocking the event loop.
 *
 * libpq resolves a host name inside PQconnectStartParams with a
 * synchronous getaddrinfo(): a slow or failing DNS would freeze the
 * worker, /health included.  Here the same getaddrinfo() runs in nginx's
 * thread pool "default", so the C library's rules still apply
 * (/etc/hosts, search domains, ndots: what Kubernetes service names rely
 * on), and libpq is then given the addresses ("hostaddr") together with
 * the names ("host").  docs/architecture.md says why this and not nginx's
 * own resolver.
 *
 * A lookup is one thread task that owns all of its memory and reads only
 * configuration: the pool that started it may go away (reload, exit) and
 * only cancels it; its completion frees it.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>

#if !(NGX_THREADS)
#error "ngx_http_billing_module needs nginx built --with-threads"
#endif

#include <ngx_thread_pool.h>

#include <arpa/inet.h>
#include <netdb.h>
#include <resolv.h>

#include <libpq-fe.h>

#include "ngx_http_billing_lookup.h"


/* addresses kept per name: libpq would try them in this order */
#define NGX_HTTP_BILLING_LOOKUP_ADDRS  8


typedef enum {
    NGX_HTTP_BILLING_HOST_AS_IS = 0,    /* a unix socket, or libpq's default */
    NGX_HTTP_BILLING_HOST_ADDRESS,      /* an IPv4 or IPv6 address */
    NGX_HTTP_BILLING_HOST_NAME          /* looked up */
} ngx_http_billing_host_kind_e;


typedef struct {
    char                            *name;
    char                            *port;      /* NULL: the URL's one */
    ngx_http_billing_host_kind_e     kind;
} ngx_http_billing_host_t;


struct ngx_http_billing_lookup_conf_s {
    ngx_http_billing_host_t         *hosts;
    ngx_uint_t                       nhosts;
    ngx_thread_pool_t               *thread_pool;
    struct sockaddr_in               server;
    unsigned                         has_server:1;
    unsigned                         per_host_ports:1;

    /* what the three lists may take, terminating NULs included */
    size_t                           host_size;
    size_t                           addr_size;
    size_t                           port_size;
};


struct ngx_http_billing_lookup_s {
    ngx_thread_task_t                task;
    ngx_http_billing_lookup_conf_t  *conf;
    ngx_http_billing_lookup_pt       handler;   /* NULL once cancelled */
    void                            *data;
    ngx_log_t                       *log;
    ngx_msec_t                       start;

    /* written by the thread, read once it is done */
    ngx_uint_t                       nentries;
    char                             error[256];
    char                            *host;
    char                            *hostaddr;
    char                            *port;
    char                            *host_end;
    char                            *hostaddr_end;
    char                            *port_end;
};


static char *ngx_http_billing_lookup_copy(ngx_conf_t *cf, const char *s,
    size_t len);
static char *ngx_http_billing_lookup_split(ngx_conf_t *cf, const char *list,
    ngx_uint_t i);
static ngx_uint_t ngx_http_billing_lookup_count(const char *list);
static void ngx_http_billing_lookup_thread(void *data, ngx_log_t *log);
static void ngx_http_billing_lookup_add(ngx_http_billing_lookup_t *lk,
    ngx_http_billing_host_t *host, const char *addr);
static char *ngx_http_billing_lookup_append(char *end, ngx_uint_t first,
    const char *s);
static void ngx_http_billing_lookup_done(ngx_event_t *ev);


char *
ngx_http_billing_lookup_conf(ngx_conf_t *cf, ngx_str_t *url,
    ngx_addr_t *server, ngx_http_billing_lookup_conf_t **lcfp)
{
    char                            *err, *hosts, *ports, *hostaddr;
    size_t                           k;
    ngx_uint_t                       i, nports, names;
    u_char                           buf[sizeof(struct in6_addr)];
    PQconninfoOption                *opts, *o;
    ngx_http_billing_host_t         *h;
    ngx_http_billing_lookup_conf_t  *lcf;

    *lcfp = NULL;

    if (url->len == 0) {
        return NGX_CONF_OK;
    }

    /* libpq itself says what is wrong with a URL it cannot parse */
    opts = PQconninfoParse((const char *) url->data, &err);
    if (opts == NULL) {
        if (err) {
            PQfreemem(err);
        }

        return NGX_CONF_OK;
    }

    hosts = NULL;
    ports = NULL;
    hostaddr = NULL;

    for (o = opts; o->keyword; o++) {
        if (o->val == NULL || o->val[0] == '\0') {
            continue;
        }

        if (ngx_strcmp(o->keyword, "host") == 0) {
            hosts = o->val;

        } else if (ngx_strcmp(o->keyword, "port") == 0) {
            ports = o->val;

        } else if (ngx_strcmp(o->keyword, "hostaddr") == 0) {
            hostaddr = o->val;
        }
    }

    /* no host, or the URL names its addresses itself: libpq looks up
     * nothing */
    if (hostaddr || hosts == NULL) {
        PQconninfoFree(opts);
        return NGX_CONF_OK;
    }

    hosts = ngx_http_billing_lookup_copy(cf, hosts, ngx_strlen(hosts));

    if (hosts && ports) {
        ports = ngx_http_billing_lookup_copy(cf, ports, ngx_strlen(ports));
        hosts = ports ? hosts : NULL;
    }

    PQconninfoFree(opts);

    if (hosts == NULL) {
        return NGX_CONF_ERROR;
    }

    lcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_billing_lookup_conf_t));
    if (lcf == NULL) {
        return NGX_CONF_ERROR;
    }

    lcf->nhosts = ngx_http_billing_lookup_count(hosts);
    lcf->hosts = ngx_pcalloc(cf->pool,
                             lcf->nhosts * sizeof(ngx_http_billing_host_t));
    if (lcf->hosts == NULL) {
        return NGX_CONF_ERROR;
    }

    /* one port for all hosts, or one per host (libpq's rule) */
    nports = ports ? ngx_http_billing_lookup_count(ports) : 0;
    lcf->per_host_ports = (nports > 1 && nports == lcf->nhosts);

    names = 0;

    for (i = 0; i < lcf->nhosts; i++) {
        h = &lcf->hosts[i];

        h->name = ngx_http_billing_lookup_split(cf, hosts, i);
        if (h->name == NULL) {
            return NGX_CONF_ERROR;
        }

        if (lcf->per_host_ports) {
            h->port = ngx_http_billing_lookup_split(cf, ports, i);
            if (h->port == NULL) {
                return NGX_CONF_ERROR;
            }
        }

        if (h->name[0] == '\0' || h->name[0] == '/' || h->name[0] == '@') {
            h->kind = NGX_HTTP_BILLING_HOST_AS_IS;
            k = 1;

        } else if (inet_pton(AF_INET, h->name, buf) == 1
                   || inet_pton(AF_INET6, h->name, buf) == 1)
        {
            h->kind = NGX_HTTP_BILLING_HOST_ADDRESS;
            k = 1;

        } else {
            h->kind = NGX_HTTP_BILLING_HOST_NAME;
            k = NGX_HTTP_BILLING_LOOKUP_ADDRS;
            names++;
        }

        lcf->host_size += k * (ngx_strlen(h->name) + 1);
        lcf->addr_size += k * (NGX_INET6_ADDRSTRLEN + 1);
        lcf->port_size += k * (h->port ? ngx_strlen(h->port) + 1 : 1);
    }

    if (names == 0) {
        return NGX_CONF_OK;
    }

    lcf->host_size++;
    lcf->addr_size++;
    lcf->port_size++;

    /* "default": 32 threads unless a "thread_pool default" line says so */
    lcf->thread_pool = ngx_thread_pool_add(cf, NULL);
    if (lcf->thread_pool == NULL) {
        return NGX_CONF_ERROR;
    }

    if (server) {
        ngx_memcpy(&lcf->server, server->sockaddr, sizeof(struct sockaddr_in));
        lcf->has_server = 1;
    }

    *lcfp = lcf;

    return NGX_CONF_OK;
}


ngx_http_billing_lookup_t *
ngx_http_billing_lookup_start(ngx_http_billing_lookup_conf_t *lcf,
    ngx_http_billing_lookup_pt handler, void *data, ngx_log_t *log)
{
    ngx_http_billing_lookup_t  *lk;

    lk = ngx_calloc(sizeof(ngx_http_billing_lookup_t) + lcf->host_size
                    + lcf->addr_size + lcf->port_size, log);
    if (lk == NULL) {
        return NULL;
    }

    lk->conf = lcf;
    lk->handler = handler;
    lk->data = data;
    lk->log = log;
    lk->start = ngx_current_msec;

    lk->host = (char *) (lk + 1);
    lk->hostaddr = lk->host + lcf->host_size;
    lk->port = lk->hostaddr + lcf->addr_size;
    lk->host_end = lk->host;
    lk->hostaddr_end = lk->hostaddr;
    lk->port_end = lk->port;

    lk->task.ctx = lk;
    lk->task.handler = ngx_http_billing_lookup_thread;
    lk->task.event.handler = ngx_http_billing_lookup_done;
    lk->task.event.data = lk;
    lk->task.event.log = log;

    if (ngx_thread_task_post(lcf->thread_pool, &lk->task) != NGX_OK) {
        ngx_free(lk);
        return NULL;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, log, 0,
                   "billing lookup: started for %ui hosts", lcf->nhosts);

    return lk;
}


void
ngx_http_billing_lookup_cancel(ngx_http_billing_lookup_t *lk)
{
    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, lk->log, 0,
                   "billing lookup: cancelled");

    /* the thread never reads it: it may still be running */
    lk->handler = NULL;
}


static char *
ngx_http_billing_lookup_copy(ngx_conf_t *cf, const char *s, size_t len)
{
    char  *p;

    p = ngx_pnalloc(cf->pool, len + 1);
    if (p == NULL) {
        return NULL;
    }

    ngx_memcpy(p, s, len);
    p[len] = '\0';

    return p;
}


/* how many entries a comma-separated list of libpq's has */
static ngx_uint_t
ngx_http_billing_lookup_count(const char *list)
{
    ngx_uint_t  n;

    for (n = 1; *list; list++) {
        if (*list == ',') {
            n++;
        }
    }

    return n;
}


/* entry i of a comma-separated list, as a string of its own */
static char *
ngx_http_billing_lookup_split(ngx_conf_t *cf, const char *list, ngx_uint_t i)
{
    const char  *end;

    while (i--) {
        list = ngx_strchr(list, ',') + 1;
    }

    end = ngx_strchr(list, ',');

    return ngx_http_billing_lookup_copy(cf, list,
                                        end ? (size_t) (end - list)
                                            : ngx_strlen(list));
}


/*
 * In a thread of the pool: plain C only, nothing of nginx's that is not
 * thread-safe, nothing outside *lk but the configuration it reads.
 */
static void
ngx_http_billing_lookup_thread(void *data, ngx_log_t *log)
{
    ngx_http_billing_lookup_t *lk = data;

    int                              rc, err;
    char                             addrs[NGX_HTTP_BILLING_LOOKUP_ADDRS]
                                          [NGX_INET6_ADDRSTRLEN + 1];
    void                            *in;
    ngx_uint_t                       i, j, n;
    struct addrinfo                  hints, *res, *ai;
    ngx_http_billing_host_t         *h;
    ngx_http_billing_lookup_conf_t  *lcf;

    lcf = lk->conf;

    if (lcf->has_server) {
        /*
         * This thread's resolver state, with one server instead of those
         * of /etc/resolv.conf; the C library keeps a server list that its
         * caller changed (resolver(3)).
         */
        if (res_init() == 0) {
            _res.nscount = 1;
            _res.nsaddr_list[0] = lcf->server;
        }
    }

    for (i = 0; i < lcf->nhosts; i++) {
        h = &lcf->hosts[i];

        switch (h->kind) {

        case NGX_HTTP_BILLING_HOST_AS_IS:
            ngx_http_billing_lookup_add(lk, h, "");
            continue;

        case NGX_HTTP_BILLING_HOST_ADDRESS:
            ngx_http_billing_lookup_add(lk, h, h->name);
            continue;

        default: /* NGX_HTTP_BILLING_HOST_NAME */
            break;
        }

        ngx_memzero(&hints, sizeof(struct addrinfo));
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;

        rc = getaddrinfo(h->name, NULL, &hints, &res);

        if (rc != 0) {
            err = errno;

            /* the first failure is the one told; the other hosts may do */
            if (lk->error[0] == '\0') {
                (void) snprintf(lk->error, sizeof(lk->error),
                                "cannot resolve \"%s\": %s", h->name,
                                rc == EAI_SYSTEM ? strerror(err)
                                                 : gai_strerror(rc));
            }

            continue;
        }

        n = 0;

        for (ai = res; ai && n < NGX_HTTP_BILLING_LOOKUP_ADDRS;
             ai = ai->ai_next)
        {
            if (ai->ai_family == AF_INET) {
                in = &((struct sockaddr_in *) ai->ai_addr)->sin_addr;

            } else if (ai->ai_family == AF_INET6) {
                in = &((struct sockaddr_in6 *) ai->ai_addr)->sin6_addr;

            } else {
                continue;
            }

            if (inet_ntop(ai->ai_family, in, addrs[n], sizeof(addrs[n]))
                == NULL)
            {
                continue;
            }

            /* /etc/hosts may list an address twice */
            for (j = 0; j < n; j++) {
                if (strcmp(addrs[j], addrs[n]) == 0) {
                    break;
                }
            }

            if (j == n) {
                ngx_http_billing_lookup_add(lk, h, addrs[n]);
                n++;
            }
        }

        freeaddrinfo(res);

        if (n == 0 && lk->error[0] == '\0') {
            (void) snprintf(lk->error, sizeof(lk->error),
                            "no address found for \"%s\"", h->name);
        }
    }
}


/* one more entry of the three lists libpq reads side by side */
static void
ngx_http_billing_lookup_add(ngx_http_billing_lookup_t *lk,
    ngx_http_billing_host_t *h, const char *addr)
{
    ngx_uint_t  first;

    first = (lk->nentries == 0);

    lk->host_end = ngx_http_billing_lookup_append(lk->host_end, first,
                                                  h->name);
    lk->hostaddr_end = ngx_http_billing_lookup_append(lk->hostaddr_end, first,
                                                      addr);

    if (lk->conf->per_host_ports) {
        lk->port_end = ngx_http_billing_lookup_append(lk->port_end, first,
                                                      h->port);
    }

    lk->nentries++;
}


/*
 * Appends s (after a comma unless it is the first entry) where a list
 * ends; returns the new end.  The buffers were sized at configuration
 * time for every entry there can be.
 */
static char *
ngx_http_billing_lookup_append(char *end, ngx_uint_t first, const char *s)
{
    size_t  len;

    if (!first) {
        *end++ = ',';
    }

    len = strlen(s);
    memcpy(end, s, len);
    end += len;
    *end = '\0';

    return end;
}


static void
ngx_http_billing_lookup_done(ngx_event_t *ev)
{
    ngx_http_billing_lookup_t         *lk;
    ngx_http_billing_lookup_result_t   res;

    lk = ev->data;

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, lk->log, 0,
                   "billing lookup: %ui entries in %M ms%s", lk->nentries,
                   ngx_current_msec - lk->start,
                   lk->handler ? "" : ", nobody waits");

    if (lk->handler) {
        if (lk->nentries) {
            res.host = lk->host;
            res.hostaddr = lk->hostaddr;
            res.port = lk->conf->per_host_ports ? lk->port : NULL;

            lk->handler(lk->data, &res, lk->error[0] ? lk->error : NULL);

        } else {
            lk->handler(lk->data, NULL, lk->error);
        }
    }

    ngx_free(lk);
}
