
/*
 * ScholarLink Billing: answers: response headers, JSON bodies and RFC 9457
 * problems.  Imports neither authentication nor any endpoint.
 */


#ifndef _NGX_HTTP_BILLING_RESPONSE_H_INCLUDED_
#define _NGX_HTTP_BILLING_RESPONSE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>


/* a header whose value is a string literal */
#define ngx_http_billing_add_header_s(r, key, value)                          \
    ngx_http_billing_add_header(r, key, (u_char *) value, sizeof(value) - 1)

/* a problem whose detail is a string literal */
#define ngx_http_billing_problem_s(r, status, code, detail)                   \
    ngx_http_billing_problem(r, status, code, detail, sizeof(detail) - 1)


ngx_int_t ngx_http_billing_add_header(ngx_http_request_t *r, const char *key,
    u_char *value, size_t len);
ngx_int_t ngx_http_billing_method(ngx_http_request_t *r, ngx_uint_t allowed,
    const char *allow);
ngx_int_t ngx_http_billing_send_json(ngx_http_request_t *r, ngx_uint_t status,
    u_char *json, size_t len);
ngx_int_t ngx_http_billing_problem(ngx_http_request_t *r, ngx_uint_t status,
    const char *code, const char *detail, size_t detail_len);
ngx_int_t ngx_http_billing_invalid(ngx_http_request_t *r, const char *detail);
ngx_int_t ngx_http_billing_not_configured(ngx_http_request_t *r,
    const char *code, const char *detail, const char *missing);
ngx_int_t ngx_http_billing_error_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_billing_not_found_handler(ngx_http_request_t *r);


#endif /* _NGX_HTTP_BILLING_RESPONSE_H_INCLUDED_ */
