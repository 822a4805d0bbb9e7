
/*
 * ScholarLink Billing: answers.  Every answer of the module leaves through
 * here: JSON bodies, RFC 9457 problems (also for the statuses nginx gives
 * by itself, through "billing error;") and the headers that go with them.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_billing_response.h"

#include "billing_util.h"


static ngx_int_t ngx_http_billing_send(ngx_http_request_t *r,
    ngx_uint_t status, ngx_str_t *content_type, ngx_str_t *body);
static const char *ngx_http_billing_title(ngx_uint_t status);


static ngx_str_t  ngx_http_billing_json_type = ngx_string("application/json");
static ngx_str_t  ngx_http_billing_problem_type =
    ngx_string("application/problem+json");


ngx_int_t
ngx_http_billing_add_header(ngx_http_request_t *r, const char *key,
    u_char *value, size_t len)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    h->key.data = (u_char *) key;
    h->key.len = ngx_strlen(key);
    h->value.data = value;
    h->value.len = len;

    return NGX_OK;
}


/* NGX_DECLINED when the method is allowed; otherwise the 405 answer */
ngx_int_t
ngx_http_billing_method(ngx_http_request_t *r, ngx_uint_t allowed,
    const char *allow)
{
    if (r->method & allowed) {
        return NGX_DECLINED;
    }

    if (ngx_http_billing_add_header(r, "Allow", (u_char *) allow,
                                    ngx_strlen(allow))
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_billing_problem_s(r, NGX_HTTP_NOT_ALLOWED,
                                      "method_not_allowed",
                                      "this method is not allowed here");
}


static ngx_int_t
ngx_http_billing_send(ngx_http_request_t *r, ngx_uint_t status,
    ngx_str_t *content_type, ngx_str_t *body)
{
    ngx_int_t     rc;
    ngx_buf_t    *b;
    ngx_chain_t   out;

    if (ngx_http_discard_request_body(r) != NGX_OK) {
        r->keepalive = 0;
    }

    r->headers_out.status = status;
    r->headers_out.content_type = *content_type;
    r->headers_out.content_type_len = content_type->len;
    r->headers_out.content_type_lowcase = NULL;
    r->headers_out.content_length_n = body->len;

    if (r->method == NGX_HTTP_HEAD || body->len == 0) {
        r->header_only = 1;
    }

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_ERROR;
    }

    b->pos = body->data;
    b->last = body->data + body->len;
    b->memory = 1;
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


ngx_int_t
ngx_http_billing_send_json(ngx_http_request_t *r, ngx_uint_t status,
    u_char *json, size_t len)
{
    ngx_str_t  body;

    body.data = json;
    body.len = len;

    return ngx_http_billing_send(r, status, &ngx_http_billing_json_type, &body);
}


static const char *
ngx_http_billing_title(ngx_uint_t status)
{
    switch (status) {
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 402: return "Payment Required";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 422: return "Unprocessable Content";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default:  return status < 500 ? "Client Error" : "Server Error";
    }
}


/* RFC 9457; "code" is the stable machine-readable part */
ngx_int_t
ngx_http_billing_problem(ngx_http_request_t *r, ngx_uint_t status,
    const char *code, const char *detail, size_t detail_len)
{
    size_t      esc, len;
    u_char     *p;
    ngx_str_t   body;

    esc = billing_json_escape(NULL, 0, detail, detail_len);

    len = sizeof("{\"type\":\"https://billing.scholarlink.app/problems/\","
                 "\"title\":\"\",\"status\":,\"detail\":\"\",\"code\":\"\"}")
          + 2 * ngx_strlen(code) + 32 + NGX_INT_T_LEN + esc;

    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    body.data = p;

    p = ngx_sprintf(p, "{\"type\":\"https://billing.scholarlink.app/"
                    "problems/%s\",\"title\":\"%s\",\"status\":%ui,"
                    "\"detail\":\"",
                    code, ngx_http_billing_title(status), status);
    p += billing_json_escape((char *) p, esc + 1, detail, detail_len);
    p = ngx_sprintf(p, "\",\"code\":\"%s\"}", code);

    body.len = p - body.data;

    return ngx_http_billing_send(r, status, &ngx_http_billing_problem_type,
                                 &body);
}


/* 400 invalid_request with a detail from the validator */
ngx_int_t
ngx_http_billing_invalid(ngx_http_request_t *r, const char *detail)
{
    return ngx_http_billing_problem(r, NGX_HTTP_BAD_REQUEST, "invalid_request",
                                    detail, ngx_strlen(detail));
}


/*
 * 503 for an endpoint whose directives are missing: the client learns
 * that the feature is off, the error log what to configure.
 */
ngx_int_t
ngx_http_billing_not_configured(ngx_http_request_t *r, const char *code,
    const char *detail, const char *missing)
{
    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0, "billing: %s",
                  missing);

    return ngx_http_billing_problem(r, NGX_HTTP_SERVICE_UNAVAILABLE, code,
                                    detail, ngx_strlen(detail));
}


/* a path with nothing at it: "/api/admin/users" without a user, say */
ngx_int_t
ngx_http_billing_not_found_handler(ngx_http_request_t *r)
{
    return ngx_http_billing_problem_s(r, NGX_HTTP_NOT_FOUND, "not_found",
                                      "no such resource");
}


/*
 * "billing error;" in a location named by error_page turns nginx's own
 * answers (413 from client_max_body_size, 429 from limit_req, ...) into
 * problem+json, so clients see one error format.
 */
ngx_int_t
ngx_http_billing_error_handler(ngx_http_request_t *r)
{
    ngx_uint_t   status;
    const char  *code, *detail;

    status = r->err_status ? r->err_status : r->headers_out.status;

    switch (status) {
    case NGX_HTTP_REQUEST_ENTITY_TOO_LARGE:
        code = "payload_too_large";
        detail = "the request body is larger than allowed";
        break;
    case NGX_HTTP_TOO_MANY_REQUESTS:
        code = "rate_limited";
        detail = "too many requests; retry later";
        break;
    case NGX_HTTP_NOT_FOUND:
        code = "not_found";
        detail = "no such resource";
        break;
    case NGX_HTTP_FORBIDDEN:
        code = "forbidden";
        detail = "access denied";
        break;
    case NGX_HTTP_NOT_ALLOWED:
        code = "method_not_allowed";
        detail = "this method is not allowed here";
        break;
    default:
        if (status < 400 || status > 599) {
            status = NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
        code = status < 500 ? "bad_request" : "internal_error";
        detail = ngx_http_billing_title(status);
    }

    r->err_status = 0;

    return ngx_http_billing_problem(r, status, code, detail,
                                    ngx_strlen(detail));
}
