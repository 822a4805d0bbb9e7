
/*
 * ScholarLink Billing: sockets that a library owns (libpq's, libcurl's),
 * watched through nginx connections.
 *
 * The library does the I/O itself, so events are registered
 * level-triggered: nginx's edge "ready" flags would never be reset, and a
 * lost edge would hang a query or a transfer; with level triggering epoll
 * reports again whatever the library left unread or unwritten.  The nginx
 * connection never owns the descriptor: it is forgotten with c->fd = -1,
 * and the library closes it.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>

#include "ngx_http_billing_socket.h"


ngx_connection_t *
ngx_http_billing_socket_wrap(ngx_socket_t fd, ngx_event_handler_pt handler,
    void *data, ngx_log_t *log)
{
    ngx_connection_t  *c;

    c = ngx_get_connection(fd, log);
    if (c == NULL) {
        return NULL;
    }

    c->data = data;
    c->log = log;
    c->read->log = log;
    c->write->log = log;
    c->read->handler = handler;
    c->write->handler = handler;

    ngx_log_debug1(NGX_LOG_DEBUG_EVENT, log, 0,
                   "billing socket %d: wrapped", fd);

    return c;
}


/* the event is watched while the library wants it, and only then */
ngx_int_t
ngx_http_billing_socket_watch(ngx_event_t *ev, ngx_uint_t want)
{
    ngx_int_t  event;

    event = ev->write ? NGX_WRITE_EVENT : NGX_READ_EVENT;

    if (want && !ev->active) {
        return ngx_add_event(ev, event, NGX_LEVEL_EVENT);
    }

    if (!want && ev->active) {
        return ngx_del_event(ev, event, 0);
    }

    return NGX_OK;
}


/*
 * Forgets the nginx side of the socket.  fd_closed: the library closed
 * the descriptor already, and the kernel forgot it by itself.
 */
void
ngx_http_billing_socket_unwrap(ngx_connection_t *c, ngx_uint_t fd_closed)
{
    ngx_uint_t  flags;

    ngx_log_debug2(NGX_LOG_DEBUG_EVENT, c->log, 0,
                   "billing socket %d: unwrapped%s", c->fd,
                   fd_closed ? ", closed by its library" : "");

    flags = fd_closed ? NGX_CLOSE_EVENT : 0;

    if (c->read->timer_set) {
        ngx_del_timer(c->read);
    }

    if (c->read->active || c->write->active) {
        if (ngx_event_actions.del_conn) {
            (void) ngx_del_conn(c, flags);

        } else {
            if (c->read->active) {
                (void) ngx_del_event(c->read, NGX_READ_EVENT, flags);
            }

            if (c->write->active) {
                (void) ngx_del_event(c->write, NGX_WRITE_EVENT, flags);
            }
        }
    }

    if (c->read->posted) {
        ngx_delete_posted_event(c->read);
    }

    if (c->write->posted) {
        ngx_delete_posted_event(c->write);
    }

    c->fd = (ngx_socket_t) -1;
    ngx_free_connection(c);
}
