
/*
 * ScholarLink Billing: request plumbing: the module's request context,
 * request headers, the path after a location's prefix and request bodies.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_billing.h"
#include "ngx_http_billing_request.h"
#include "ngx_http_billing_response.h"

#include "billing_json.h"


static ngx_int_t ngx_http_billing_is_json(ngx_http_request_t *r);
static void ngx_http_billing_body_read(ngx_http_request_t *r);
static ngx_int_t ngx_http_billing_body(ngx_http_request_t *r,
    ngx_str_t *body);


ngx_http_billing_ctx_t *
ngx_http_billing_get_ctx(ngx_http_request_t *r)
{
    ngx_http_billing_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_billing_module);

    if (ctx == NULL) {
        ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_billing_ctx_t));
        if (ctx == NULL) {
            return NULL;
        }

        ngx_http_set_ctx(r, ctx, ngx_http_billing_module);
    }

    return ctx;
}


ngx_table_elt_t *
ngx_http_billing_find_header(ngx_http_request_t *r, const char *name,
    size_t len)
{
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len == len
            && ngx_strncasecmp(h[i].key.data, (u_char *) name, len) == 0)
        {
            return &h[i];
        }
    }

    return NULL;
}


/* the first such header's value, or an empty string with data NULL */
void
ngx_http_billing_header_value(ngx_http_request_t *r, const char *name,
    ngx_str_t *value)
{
    ngx_table_elt_t  *h;

    h = ngx_http_billing_find_header(r, name, ngx_strlen(name));

    if (h) {
        *value = h->value;

    } else {
        value->len = 0;
        value->data = NULL;
    }
}


/*
 * The part of the URI after the location's prefix: "" or "/{id}", id in
 * *id.  NGX_DECLINED when the caller may go on; otherwise the 404 answer.
 */
ngx_int_t
ngx_http_billing_path_id(ngx_http_request_t *r, ngx_str_t *id)
{
    u_char                    *p;
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

    id->len = 0;
    id->data = NULL;

    if (clcf->regex == NULL && r->uri.len >= clcf->name.len
        && ngx_strncmp(r->uri.data, clcf->name.data, clcf->name.len) == 0)
    {
        p = r->uri.data + clcf->name.len;

    } else {
        p = r->uri.data + r->uri.len;

        while (p > r->uri.data && p[-1] != '/') {
            p--;
        }

        p--;
    }

    if (p >= r->uri.data + r->uri.len) {
        return NGX_DECLINED;
    }

    if (*p != '/') {
        return ngx_http_billing_problem_s(r, NGX_HTTP_NOT_FOUND, "not_found",
                                          "no such resource");
    }

    id->data = p + 1;
    id->len = r->uri.data + r->uri.len - id->data;

    return NGX_DECLINED;
}


/*
 * The id of a "/{id}" path as a canonical UUID in the request's pool.
 * NGX_DECLINED when the caller may go on; otherwise the answer to give:
 * 404 with the detail, since a malformed id names nothing.
 */
ngx_int_t
ngx_http_billing_path_uuid(ngx_http_request_t *r, ngx_str_t *path,
    const char *detail, const char **uuid)
{
    char  *id;

    id = ngx_pnalloc(r->pool, BILLING_UUID_LEN + 1);
    if (id == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (billing_uuid_normalize((const char *) path->data, path->len, id)
        != 0)
    {
        return ngx_http_billing_problem(r, NGX_HTTP_NOT_FOUND, "not_found",
                                        detail, ngx_strlen(detail));
    }

    *uuid = id;

    return NGX_DECLINED;
}


static ngx_int_t
ngx_http_billing_is_json(ngx_http_request_t *r)
{
    u_char     *p, *last;
    ngx_str_t  *ct;

    if (r->headers_in.content_type == NULL) {
        return 0;
    }

    ct = &r->headers_in.content_type->value;
    p = ct->data;
    last = p + ct->len;

    if (ct->len < sizeof("application/json") - 1
        || ngx_strncasecmp(p, (u_char *) "application/json",
                           sizeof("application/json") - 1) != 0)
    {
        return 0;
    }

    p += sizeof("application/json") - 1;

    /* parameters (charset) may follow, nothing else */
    while (p < last && *p == ' ') {
        p++;
    }

    return p == last || *p == ';';
}


/*
 * Reads the whole body, then hands it to handler (with data), whose
 * return value finalizes the request as a content handler's would.
 */
ngx_int_t
ngx_http_billing_read_body(ngx_http_request_t *r,
    ngx_http_billing_body_pt handler, void *data)
{
    ngx_int_t                rc;
    ngx_http_billing_ctx_t  *ctx;

    ctx = ngx_http_billing_get_ctx(r);
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->body_handler = handler;
    ctx->body_data = data;

    rc = ngx_http_read_client_request_body(r, ngx_http_billing_body_read);

    if (rc == NGX_HTTP_REQUEST_ENTITY_TOO_LARGE) {
        return ngx_http_billing_problem_s(r, rc, "payload_too_large",
                                          "the request body is larger than "
                                          "allowed");
    }

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    return NGX_DONE;
}


/* the same for a body that must be application/json */
ngx_int_t
ngx_http_billing_read_json_body(ngx_http_request_t *r,
    ngx_http_billing_body_pt handler, void *data)
{
    if (!ngx_http_billing_is_json(r)) {
        return ngx_http_billing_problem_s(r, NGX_HTTP_UNSUPPORTED_MEDIA_TYPE,
                                          "unsupported_media_type",
                                          "send the body as application/json");
    }

    return ngx_http_billing_read_body(r, handler, data);
}


static void
ngx_http_billing_body_read(ngx_http_request_t *r)
{
    ngx_str_t                body;
    ngx_http_billing_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_billing_module);

    if (ngx_http_billing_body(r, &body) != NGX_OK) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    ngx_http_finalize_request(r, ctx->body_handler(r, &body, ctx->body_data));
}


/* the whole body as one string; bodies may have been buffered to a file */
static ngx_int_t
ngx_http_billing_body(ngx_http_request_t *r, ngx_str_t *body)
{
    size_t        len;
    u_char       *p;
    ssize_t       n;
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    body->len = 0;
    body->data = (u_char *) "";

    if (r->request_body == NULL || r->request_body->bufs == NULL) {
        return NGX_OK;
    }

    len = 0;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        b = cl->buf;
        len += b->in_file ? (size_t) (b->file_last - b->file_pos)
                          : (size_t) (b->last - b->pos);
    }

    p = ngx_pnalloc(r->pool, len + 1);
    if (p == NULL) {
        return NGX_ERROR;
    }

    body->data = p;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        b = cl->buf;

        if (b->in_file) {
            n = ngx_read_file(b->file, p, b->file_last - b->file_pos,
                              b->file_pos);
            if (n != b->file_last - b->file_pos) {
                return NGX_ERROR;
            }

            p += n;

        } else {
            p = ngx_cpymem(p, b->pos, b->last - b->pos);
        }
    }

    *p = '\0';
    body->len = len;

    return NGX_OK;
}
