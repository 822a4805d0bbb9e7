
/*
 * ScholarLink Billing: bearer-token authentication (RS256 JWT) and the
 * $billing_user_id variable.
 *
 * The variable verifies the token itself: limit_req evaluates its key in
 * the preaccess phase, before any access-phase handler could have run, and
 * skips requests whose key is empty.  The outcome is kept in the request
 * context so the content handler does not verify twice.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <openssl/sha.h>

#include "ngx_http_billing.h"
#include "ngx_http_billing_auth.h"
#include "ngx_http_billing_jwks.h"
#include "ngx_http_billing_metrics.h"
#include "ngx_http_billing_request.h"
#include "ngx_http_billing_response.h"

#include "billing_jwt.h"


static ngx_int_t ngx_http_billing_user_id_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_http_billing_auth_e ngx_http_billing_authenticated(
    ngx_http_request_t *r, ngx_http_billing_ctx_t *ctx, const char *sub,
    const char *scope);


/*
 * Tokens that verified, per worker: the RSA check dominated the worker's
 * CPU in the benchmark, and the AI backend sends one service token with
 * every call.  Two ways per set, chosen by the token's SHA-256, so that a
 * few hundred active users' tokens stay (one way per set thrashed when two
 * tokens alternated on one slot); an entry lives until the token expires
 * or for 60 s, whichever is sooner, so a key removed from the JWKS stops
 * working within a minute.  1024 entries of 1.3 KB, touched only as used.
 */
#define NGX_HTTP_BILLING_TOKEN_SETS    512
#define NGX_HTTP_BILLING_TOKEN_WAYS    2
#define NGX_HTTP_BILLING_TOKEN_TTL     60

typedef struct {
    u_char                        digest[SHA256_DIGEST_LENGTH];
    time_t                        expires;
    char                          sub[256];
    char                          scope[1024];
} ngx_http_billing_token_t;

static ngx_http_billing_token_t
    ngx_http_billing_tokens[NGX_HTTP_BILLING_TOKEN_SETS]
                           [NGX_HTTP_BILLING_TOKEN_WAYS];

/*
 * SHA-256 fetched once per worker: EVP_sha256() makes OpenSSL 3 look the
 * algorithm up in its provider tables (locks, string compares) on every
 * digest, which cost as much as the digest of a token itself.
 */
static EVP_MD  *ngx_http_billing_sha256;


static ngx_http_variable_t  ngx_http_billing_vars[] = {

    { ngx_string("billing_user_id"), NULL,
      ngx_http_billing_user_id_variable, 0, 0, 0 },

      ngx_http_null_variable
};


ngx_int_t
ngx_http_billing_add_variables(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var, *v;

    for (v = ngx_http_billing_vars; v->name.len; v++) {
        var = ngx_http_add_variable(cf, &v->name, v->flags);
        if (var == NULL) {
            return NGX_ERROR;
        }

        var->get_handler = v->get_handler;
        var->data = v->data;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_billing_bearer(ngx_http_request_t *r, ngx_str_t *token)
{
    u_char     *p, *last;
    ngx_str_t  *h;

    if (r->headers_in.authorization == NULL) {
        return NGX_DECLINED;
    }

    h = &r->headers_in.authorization->value;
    p = h->data;
    last = p + h->len;

    /* RFC 6750: the scheme name is case-insensitive */
    if (h->len < sizeof("Bearer ") - 1
        || ngx_strncasecmp(p, (u_char *) "Bearer ", sizeof("Bearer ") - 1)
           != 0)
    {
        return NGX_DECLINED;
    }

    p += sizeof("Bearer ") - 1;

    while (p < last && *p == ' ') {
        p++;
    }

    while (last > p && last[-1] == ' ') {
        last--;
    }

    token->data = p;
    token->len = last - p;

    return token->len ? NGX_OK : NGX_ERROR;
}


ngx_http_billing_auth_e
ngx_http_billing_authenticate(ngx_http_request_t *r)
{
    int                            rc;
    char                           err[128];
    u_char                         digest[SHA256_DIGEST_LENGTH];
    time_t                         now;
    EVP_PKEY                      *key;
    ngx_str_t                      token;
    billing_jwt_t                  jwt;
    billing_jwt_claims_t           claims;
    ngx_http_billing_ctx_t        *ctx;
    ngx_uint_t                     way;
    ngx_http_billing_token_t      *cached, *set;
    ngx_http_billing_main_conf_t  *bmcf;

    ctx = ngx_http_billing_get_ctx(r);
    if (ctx == NULL) {
        return NGX_HTTP_BILLING_AUTH_INVALID;
    }

    if (ctx->auth != NGX_HTTP_BILLING_AUTH_UNKNOWN) {
        return ctx->auth;
    }

    bmcf = ngx_http_get_module_main_conf(r, ngx_http_billing_module);

    switch (ngx_http_billing_bearer(r, &token)) {

    case NGX_DECLINED:
        ctx->auth = NGX_HTTP_BILLING_AUTH_MISSING;
        ngx_http_billing_metrics_inc(NGX_HTTP_BILLING_M_JWT_MISSING, 1);
        return ctx->auth;

    case NGX_ERROR:
        ctx->auth = NGX_HTTP_BILLING_AUTH_INVALID;
        ngx_http_billing_metrics_inc(NGX_HTTP_BILLING_M_JWT_INVALID, 1);
        return ctx->auth;
    }

    if ((bmcf->jwt_key == NULL && bmcf->jwks_url.len == 0)
        || bmcf->jwt_issuer.len == 0 || bmcf->jwt_audience.len == 0)
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "billing: a bearer token arrived but no key "
                      "(billing_jwt_key or billing_jwt_jwks_url), "
                      "billing_jwt_issuer or billing_jwt_audience is set");
        ctx->auth = NGX_HTTP_BILLING_AUTH_INVALID;
        ngx_http_billing_metrics_inc(NGX_HTTP_BILLING_M_JWT_INVALID, 1);
        return ctx->auth;
    }

    now = ngx_time();

    /* a token that verified a moment ago needs no second RSA check */
    if (ngx_http_billing_sha256 == NULL) {
        ngx_http_billing_sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
    }

    (void) EVP_Digest(token.data, token.len, digest, NULL,
                      ngx_http_billing_sha256 ? ngx_http_billing_sha256
                                              : EVP_sha256(), NULL);

    set = ngx_http_billing_tokens[(digest[0] | digest[1] << 8)
                                  % NGX_HTTP_BILLING_TOKEN_SETS];

    for (way = 0; way < NGX_HTTP_BILLING_TOKEN_WAYS; way++) {
        cached = &set[way];

        if (cached->expires > now
            && CRYPTO_memcmp(cached->digest, digest, sizeof(digest)) == 0)
        {
            return ngx_http_billing_authenticated(r, ctx, cached->sub,
                                                  cached->scope);
        }
    }

    rc = billing_jwt_parse((const char *) token.data, token.len, &jwt,
                           err, sizeof(err));

    if (rc == BILLING_JWT_OK) {
        key = bmcf->jwt_key;

        if (key == NULL) {
            /* NULL for an unknown kid: a refresh is on its way */
            key = ngx_http_billing_jwks_key(bmcf, jwt.kid, jwt.has_kid,
                                            r->connection->log);
        }

        rc = key ? billing_jwt_verify_signature(&jwt, key)
                 : BILLING_JWT_BAD_SIGNATURE;

        if (rc == BILLING_JWT_OK) {
            rc = billing_jwt_check_claims(&jwt,
                                     (const char *) bmcf->jwt_issuer.data,
                                     (const char *) bmcf->jwt_audience.data,
                                     (int64_t) now,
                                     (int64_t) bmcf->jwt_leeway,
                                     &claims, err, sizeof(err));
        }

        billing_jwt_free(&jwt);
    }

    if (rc != BILLING_JWT_OK) {
        /* the reason goes to the log at info level, never the token */
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "billing: bearer token rejected: %s",
                      billing_jwt_strerror(rc));

        if (rc == BILLING_JWT_EXPIRED) {
            ctx->auth = NGX_HTTP_BILLING_AUTH_EXPIRED;
            ngx_http_billing_metrics_inc(NGX_HTTP_BILLING_M_JWT_EXPIRED, 1);

        } else {
            ctx->auth = NGX_HTTP_BILLING_AUTH_INVALID;
            ngx_http_billing_metrics_inc(NGX_HTTP_BILLING_M_JWT_INVALID, 1);
        }

        return ctx->auth;
    }

    /* the way that expires first makes room */
    cached = &set[0];

    for (way = 1; way < NGX_HTTP_BILLING_TOKEN_WAYS; way++) {
        if (set[way].expires < cached->expires) {
            cached = &set[way];
        }
    }

    ngx_memcpy(cached->digest, digest, sizeof(digest));
    ngx_cpystrn((u_char *) cached->sub, (u_char *) claims.sub,
                sizeof(cached->sub));
    ngx_cpystrn((u_char *) cached->scope, (u_char *) claims.scope,
                sizeof(cached->scope));
    cached->expires = ngx_min(claims.valid_until,
                              now + NGX_HTTP_BILLING_TOKEN_TTL);

    return ngx_http_billing_authenticated(r, ctx, claims.sub, claims.scope);
}


static ngx_http_billing_auth_e
ngx_http_billing_authenticated(ngx_http_request_t *r,
    ngx_http_billing_ctx_t *ctx, const char *sub, const char *scope)
{
    ctx->user_id.len = ngx_strlen(sub);
    ctx->user_id.data = ngx_pnalloc(r->pool, ctx->user_id.len + 1);
    ctx->scope.len = ngx_strlen(scope);
    ctx->scope.data = ngx_pnalloc(r->pool, ctx->scope.len + 1);

    if (ctx->user_id.data == NULL || ctx->scope.data == NULL) {
        ctx->auth = NGX_HTTP_BILLING_AUTH_INVALID;
        return ctx->auth;
    }

    ngx_memcpy(ctx->user_id.data, sub, ctx->user_id.len + 1);
    ngx_memcpy(ctx->scope.data, scope, ctx->scope.len + 1);

    ctx->auth = NGX_HTTP_BILLING_AUTH_OK;
    ngx_http_billing_metrics_inc(NGX_HTTP_BILLING_M_JWT_OK, 1);

    return ctx->auth;
}


/*
 * NGX_DECLINED when a valid bearer token, with the scope when one is
 * named, came with the request; otherwise the RFC 6750 answer to return
 * (401 with WWW-Authenticate, or 403 insufficient_scope).
 */
ngx_int_t
ngx_http_billing_require_auth(ngx_http_request_t *r, const char *scope)
{
    u_char                   *value, *last;
    const char               *challenge, *code, *detail;
    ngx_http_billing_ctx_t   *ctx;

    switch (ngx_http_billing_authenticate(r)) {

    case NGX_HTTP_BILLING_AUTH_OK:
        ctx = ngx_http_get_module_ctx(r, ngx_http_billing_module);

        if (scope == NULL
            || billing_jwt_has_scope((const char *) ctx->scope.data,
                                     ctx->scope.len, scope))
        {
            return NGX_DECLINED;
        }

        ngx_http_billing_metrics_inc(NGX_HTTP_BILLING_M_JWT_FORBIDDEN, 1);

        /* RFC 6750 §3: the scope this endpoint needs */
        challenge = "Bearer realm=\"billing\", error=\"insufficient_scope\", "
                    "scope=\"";
        value = ngx_pnalloc(r->pool, ngx_strlen(challenge)
                                     + ngx_strlen(scope) + 1);
        if (value == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        last = ngx_sprintf(value, "%s%s\"", challenge, scope);

        if (ngx_http_billing_add_header(r, "WWW-Authenticate", value,
                                        last - value)
            != NGX_OK)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        detail = "the token lacks the scope this endpoint needs";

        return ngx_http_billing_problem(r, NGX_HTTP_FORBIDDEN,
                                        "insufficient_scope", detail,
                                        ngx_strlen(detail));

    case NGX_HTTP_BILLING_AUTH_MISSING:
        challenge = "Bearer realm=\"billing\"";
        code = "unauthorized";
        detail = "a bearer token is required";
        break;

    case NGX_HTTP_BILLING_AUTH_EXPIRED:
        challenge = "Bearer realm=\"billing\", error=\"invalid_token\", "
                    "error_description=\"the token has expired\"";
        code = "invalid_token";
        detail = "the token has expired";
        break;

    default:
        challenge = "Bearer realm=\"billing\", error=\"invalid_token\"";
        code = "invalid_token";
        detail = "the bearer token is not valid";
        break;
    }

    if (ngx_http_billing_add_header(r, "WWW-Authenticate", (u_char *) challenge,
                                    ngx_strlen(challenge))
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_billing_problem(r, NGX_HTTP_UNAUTHORIZED, code, detail,
                                    ngx_strlen(detail));
}


static ngx_int_t
ngx_http_billing_user_id_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_http_billing_ctx_t  *ctx;

    if (ngx_http_billing_authenticate(r) != NGX_HTTP_BILLING_AUTH_OK) {
        v->not_found = 1;
        return NGX_OK;
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_billing_module);

    v->data = ctx->user_id.data;
    v->len = ctx->user_id.len;
    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;

    return NGX_OK;
}


void
ngx_http_billing_auth_exit_process(void)
{
    EVP_MD_free(ngx_http_billing_sha256);
    ngx_http_billing_sha256 = NULL;
}
