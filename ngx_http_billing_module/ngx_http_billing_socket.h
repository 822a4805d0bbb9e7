
/*
 * ScholarLink Billing: sockets that a library owns (libpq's, libcurl's),
 * watched through nginx connections.
 */


#ifndef _NGX_HTTP_BILLING_SOCKET_H_INCLUDED_
#define _NGX_HTTP_BILLING_SOCKET_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>


ngx_connection_t *ngx_http_billing_socket_wrap(ngx_socket_t fd,
    ngx_event_handler_pt handler, void *data, ngx_log_t *log);
ngx_int_t ngx_http_billing_socket_watch(ngx_event_t *ev, ngx_uint_t want);
void ngx_http_billing_socket_unwrap(ngx_connection_t *c,
    ngx_uint_t fd_closed);


#endif /* _NGX_HTTP_BILLING_SOCKET_H_INCLUDED_ */
