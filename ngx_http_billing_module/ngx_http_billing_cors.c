
/*
 * ScholarLink Billing: CORS.  Origins are matched exactly against
 * billing_cors_origins.  A preflight (OPTIONS) is answered before the
 * endpoint sees the request; the allow-origin and Vary headers come from
 * a header filter, so that the answers nginx gives by itself (429, 413)
 * carry them too and browsers can read them.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_billing.h"
#include "ngx_http_billing_cors.h"
#include "ngx_http_billing_request.h"
#include "ngx_http_billing_response.h"


static ngx_str_t *ngx_http_billing_allowed_origin(ngx_http_request_t *r,
    ngx_array_t *origins);
static ngx_int_t ngx_http_billing_cors_filter(ngx_http_request_t *r);


static ngx_http_output_header_filter_pt  ngx_http_next_header_filter;


/* the configured origin the request comes from, or NULL */
static ngx_str_t *
ngx_http_billing_allowed_origin(ngx_http_request_t *r, ngx_array_t *origins)
{
    ngx_str_t        *allowed;
    ngx_uint_t        i;
    ngx_table_elt_t  *h;

    h = ngx_http_billing_find_header(r, "Origin", sizeof("Origin") - 1);
    if (h == NULL) {
        return NULL;
    }

    allowed = origins->elts;

    /* exact, case-sensitive match: no wildcards, no suffix tricks */
    for (i = 0; i < origins->nelts; i++) {
        if (allowed[i].len == h->value.len
            && ngx_strncmp(allowed[i].data, h->value.data, h->value.len) == 0)
        {
            return &allowed[i];
        }
    }

    return NULL;
}


/* the answer to OPTIONS in a location with billing_cors_origins */
ngx_int_t
ngx_http_billing_cors_preflight(ngx_http_request_t *r)
{
    ngx_str_t                    *origin;
    ngx_http_billing_loc_conf_t  *blcf;

    blcf = ngx_http_get_module_loc_conf(r, ngx_http_billing_module);

    origin = ngx_http_billing_allowed_origin(r, blcf->cors_origins);

    if (origin) {
        if (ngx_http_billing_add_header_s(r, "Access-Control-Allow-Methods",
                                          "GET, POST, PUT, DELETE, OPTIONS")
            != NGX_OK
            || ngx_http_billing_add_header_s(r, "Access-Control-Allow-Headers",
                                             "Authorization, Content-Type, "
                                             "Idempotency-Key")
               != NGX_OK
            || ngx_http_billing_add_header_s(r, "Access-Control-Max-Age",
                                             "600")
               != NGX_OK)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    /* the allow-origin and Vary headers come from the header filter */
    return ngx_http_billing_send_json(r, NGX_HTTP_NO_CONTENT,
                                      (u_char *) "", 0);
}


static ngx_int_t
ngx_http_billing_cors_filter(ngx_http_request_t *r)
{
    ngx_str_t                    *origin;
    ngx_http_billing_loc_conf_t  *blcf;

    if (r != r->main) {
        return ngx_http_next_header_filter(r);
    }

    blcf = ngx_http_get_module_loc_conf(r, ngx_http_billing_module);

    if (blcf->cors_origins == NULL || blcf->endpoint == NULL) {
        return ngx_http_next_header_filter(r);
    }

    if (ngx_http_billing_add_header_s(r, "Vary", "Origin") != NGX_OK) {
        return NGX_ERROR;
    }

    origin = ngx_http_billing_allowed_origin(r, blcf->cors_origins);

    if (origin) {
        if (ngx_http_billing_add_header(r, "Access-Control-Allow-Origin",
                                        origin->data, origin->len)
            != NGX_OK
            || ngx_http_billing_add_header_s(r,
                                             "Access-Control-Expose-Headers",
                                             "Idempotent-Replayed")
               != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    return ngx_http_next_header_filter(r);
}


ngx_int_t
ngx_http_billing_cors_init(ngx_conf_t *cf)
{
    ngx_http_next_header_filter = ngx_http_top_header_filter;
    ngx_http_top_header_filter = ngx_http_billing_cors_filter;

    return NGX_OK;
}
