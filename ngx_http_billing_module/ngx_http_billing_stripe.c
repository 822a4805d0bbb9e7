
/*
 * ScholarLink Billing: Stripe purchases and webhooks.
 */


#include "ngx_http_billing_module.h"


ngx_int_t
ngx_http_billing_extra_handler(ngx_http_request_t *r, ngx_uint_t endpoint)
{
    return ngx_http_billing_problem(r, NGX_HTTP_NOT_FOUND, "not_found",
                                    "no such resource", 16);
}
