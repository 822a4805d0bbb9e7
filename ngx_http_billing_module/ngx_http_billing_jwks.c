
/*
 * ScholarLink Billing: JWKS keys fetched with libcurl and shared by all
 * workers through a shared-memory zone.
 *
 * The zone holds raw key material (kid, n, e: never pointers) with a
 * generation number that changes on every successful refresh.  Each worker
 * keeps its own parsed EVP_PKEY per kid, rebuilt when the generation moves.
 * One worker at a time refreshes (a lease in the zone); an unknown kid
 * forces a refresh at most once per cooldown, so a flood of forged kids
 * does not become a flood of JWKS fetches; a failed refresh keeps serving
 * the keys already known.  The zone lock is held only to copy a few
 * hundred bytes: no network or RSA work under it.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_billing.h"
#include "ngx_http_billing_curl.h"
#include "ngx_http_billing_jwks.h"
#include "ngx_http_billing_metrics.h"
#include "ngx_http_billing_shm.h"

#include "billing_jwk.h"


#define NGX_HTTP_BILLING_JWKS_MAGIC   0x4a574b53
#define NGX_HTTP_BILLING_JWKS_LEASE   30


typedef struct {
    ngx_uint_t                    magic;
    uint32_t                      url_crc;     /* the URL the keys came from */
    size_t                        url_len;
    uint64_t                      generation;
    time_t                        fetched_at;
    time_t                        next_refresh;
    time_t                        lease_until;
    time_t                        last_forced;
    ngx_uint_t                    nkeys;
    billing_jwk_t                 keys[BILLING_JWKS_MAX_KEYS];
} ngx_http_billing_jwks_shm_t;


typedef struct {
    char                          kid[BILLING_JWT_KID_MAX + 1];
    uint64_t                      generation;
    EVP_PKEY                     *pkey;
} ngx_http_billing_jwks_cached_t;


/* per worker */
static ngx_http_billing_jwks_cached_t
    ngx_http_billing_jwks_cache[BILLING_JWKS_MAX_KEYS];
static ngx_http_billing_http_t         *ngx_http_billing_jwks_fetch;
static ngx_event_t                      ngx_http_billing_jwks_timer;


static void ngx_http_billing_jwks_refresh(ngx_http_billing_main_conf_t *bmcf,
    ngx_uint_t force, ngx_log_t *log);
static void ngx_http_billing_jwks_done(ngx_http_billing_http_result_t *res,
    void *data);
static void ngx_http_billing_jwks_tick(ngx_event_t *ev);


/*
 * shm_zone->data is this cycle's configuration until the zone is set up
 * (ngx_http_billing_jwks_zone_conf); the zone's structure afterwards.
 */
void
ngx_http_billing_jwks_zone_conf(ngx_shm_zone_t *shm_zone,
    ngx_http_billing_main_conf_t *bmcf)
{
    shm_zone->data = bmcf;
}


ngx_int_t
ngx_http_billing_jwks_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    uint32_t                       crc;
    ngx_slab_pool_t               *shpool;
    ngx_http_billing_jwks_shm_t   *jw;
    ngx_http_billing_main_conf_t  *bmcf;

    bmcf = shm_zone->data;
    crc = ngx_crc32_long(bmcf->jwks_url.data, bmcf->jwks_url.len);

    /* a reload keeps the keys fetched so far ... */
    jw = ngx_http_billing_shm_init(shm_zone, data,
                                   sizeof(ngx_http_billing_jwks_shm_t), "JWKS");
    if (jw == NULL) {
        return NGX_ERROR;
    }

    if (jw->magic == NGX_HTTP_BILLING_JWKS_MAGIC
        && jw->url_crc == crc && jw->url_len == bmcf->jwks_url.len)
    {
        return NGX_OK;
    }

    /*
     * ... unless they came from another URL: those keys are not the new
     * issuer's, so they go now, not at the next refresh.  The old workers
     * still read the zone: the lock, as for any change.
     */
    shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    ngx_shmtx_lock(&shpool->mutex);

    if (jw->nkeys) {
        ngx_log_error(NGX_LOG_NOTICE, shm_zone->shm.log, 0,
                      "billing: the JWKS URL changed: the keys of the "
                      "previous one are dropped (%ui)", jw->nkeys);
    }

    jw->magic = NGX_HTTP_BILLING_JWKS_MAGIC;
    jw->url_crc = crc;
    jw->url_len = bmcf->jwks_url.len;
    jw->nkeys = 0;
    jw->generation++;
    jw->fetched_at = 0;
    jw->next_refresh = 0;       /* the new workers fetch at once */
    jw->lease_until = 0;
    jw->last_forced = 0;

    ngx_shmtx_unlock(&shpool->mutex);

    return NGX_OK;
}


ngx_int_t
ngx_http_billing_jwks_init_process(ngx_cycle_t *cycle,
    ngx_http_billing_main_conf_t *bmcf)
{
    if (bmcf->jwks_url.len == 0) {
        return NGX_OK;
    }

    ngx_http_billing_jwks_timer.handler = ngx_http_billing_jwks_tick;
    ngx_http_billing_jwks_timer.data = bmcf;
    ngx_http_billing_jwks_timer.log = cycle->log;
    ngx_http_billing_jwks_timer.cancelable = 1;

    ngx_add_timer(&ngx_http_billing_jwks_timer, 1);

    return NGX_OK;
}


static void
ngx_http_billing_jwks_cache_clear(void)
{
    ngx_uint_t  i;

    for (i = 0; i < BILLING_JWKS_MAX_KEYS; i++) {
        if (ngx_http_billing_jwks_cache[i].pkey) {
            EVP_PKEY_free(ngx_http_billing_jwks_cache[i].pkey);
            ngx_http_billing_jwks_cache[i].pkey = NULL;
        }
    }
}


void
ngx_http_billing_jwks_exit_process(void)
{
    if (ngx_http_billing_jwks_fetch) {
        ngx_http_billing_http_cancel(ngx_http_billing_jwks_fetch);
        ngx_http_billing_jwks_fetch = NULL;
    }

    if (ngx_http_billing_jwks_timer.timer_set) {
        ngx_del_timer(&ngx_http_billing_jwks_timer);
    }

    ngx_http_billing_jwks_cache_clear();
}


/*
 * The key for a token's kid (or the only key when the token has no kid).
 * NULL when it is not known: a refresh is then requested.  The key belongs
 * to the worker's cache; the caller must not free it.
 */
EVP_PKEY *
ngx_http_billing_jwks_key(ngx_http_billing_main_conf_t *bmcf, const char *kid,
    ngx_uint_t has_kid, ngx_log_t *log)
{
    uint64_t                         generation;
    ngx_uint_t                       i, found, slot;
    billing_jwk_t                    jwk;
    ngx_slab_pool_t                 *shpool;
    ngx_http_billing_jwks_shm_t     *jw;
    ngx_http_billing_jwks_cached_t  *c;

    shpool = (ngx_slab_pool_t *) bmcf->jwks_zone->shm.addr;
    jw = bmcf->jwks_zone->data;

    found = 0;

    ngx_shmtx_lock(&shpool->mutex);

    generation = jw->generation;

    if (!has_kid) {
        /* without a kid only an unambiguous key set will do */
        if (jw->nkeys == 1) {
            jwk = jw->keys[0];
            found = 1;
        }

    } else {
        for (i = 0; i < jw->nkeys; i++) {
            if (jw->keys[i].has_kid && ngx_strcmp(jw->keys[i].kid, kid) == 0) {
                jwk = jw->keys[i];
                found = 1;
                break;
            }
        }
    }

    ngx_shmtx_unlock(&shpool->mutex);

    if (!found) {
        ngx_log_debug2(NGX_LOG_DEBUG_HTTP, log, 0,
                       "billing jwks: no key \"%s\" in generation %uL",
                       has_kid ? kid : "(none)", generation);
        ngx_http_billing_jwks_refresh(bmcf, 1, log);
        return NULL;
    }

    /* the worker's parsed key, if it is of this generation */
    slot = BILLING_JWKS_MAX_KEYS;

    for (i = 0; i < BILLING_JWKS_MAX_KEYS; i++) {
        c = &ngx_http_billing_jwks_cache[i];

        if (c->pkey && ngx_strcmp(c->kid, jwk.kid) == 0) {
            if (c->generation == generation) {
                return c->pkey;
            }

            slot = i;
            break;
        }

        if (c->pkey == NULL && slot == BILLING_JWKS_MAX_KEYS) {
            slot = i;
        }
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, log, 0,
                   "billing jwks: key \"%s\" built for generation %uL",
                   jwk.kid, generation);

    if (slot == BILLING_JWKS_MAX_KEYS) {
        /* full of keys from older key sets: start over */
        ngx_http_billing_jwks_cache_clear();
        slot = 0;
    }

    c = &ngx_http_billing_jwks_cache[slot];

    if (c->pkey) {
        EVP_PKEY_free(c->pkey);
        c->pkey = NULL;
    }

    c->pkey = billing_jwk_to_pkey(&jwk);
    if (c->pkey == NULL) {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "billing: JWKS key \"%s\" cannot be used", jwk.kid);
        return NULL;
    }

    ngx_cpystrn((u_char *) c->kid, (u_char *) jwk.kid, sizeof(c->kid));
    c->generation = generation;

    return c->pkey;
}


static void
ngx_http_billing_jwks_refresh(ngx_http_billing_main_conf_t *bmcf,
    ngx_uint_t force, ngx_log_t *log)
{
    time_t                        now;
    ngx_uint_t                    go;
    ngx_slab_pool_t              *shpool;
    ngx_http_billing_jwks_shm_t  *jw;

    if (ngx_http_billing_jwks_fetch || ngx_exiting || ngx_terminate) {
        return;
    }

    shpool = (ngx_slab_pool_t *) bmcf->jwks_zone->shm.addr;
    jw = bmcf->jwks_zone->data;
    now = ngx_time();
    go = 0;

    ngx_shmtx_lock(&shpool->mutex);

    if (jw->lease_until <= now) {
        if (force) {
            if (now - jw->last_forced >= bmcf->jwks_cooldown) {
                jw->last_forced = now;
                go = 1;
            }

        } else if (now >= jw->next_refresh) {
            go = 1;
        }

        if (go) {
            jw->lease_until = now + NGX_HTTP_BILLING_JWKS_LEASE;
        }
    }

    ngx_shmtx_unlock(&shpool->mutex);

    if (!go) {
        if (force) {
            ngx_log_debug0(NGX_LOG_DEBUG_HTTP, log, 0,
                           "billing jwks: no forced refresh yet: cooldown, "
                           "or another worker fetches");
        }

        return;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, log, 0,
                   "billing jwks: refresh lease taken%s",
                   force ? " for an unknown kid" : "");

    ngx_log_error(NGX_LOG_INFO, log, 0,
                  "billing: refreshing JWKS from \"%V\"%s",
                  &bmcf->jwks_url, force ? " (unknown kid)" : "");

    ngx_http_billing_jwks_fetch = ngx_http_billing_http_get(&bmcf->jwks_url,
                                                NULL, 5000, 10000,
                                                ngx_http_billing_jwks_done,
                                                bmcf, ngx_cycle->log);

    if (ngx_http_billing_jwks_fetch == NULL) {
        ngx_http_billing_jwks_done(NULL, bmcf);
    }
}


static void
ngx_http_billing_jwks_done(ngx_http_billing_http_result_t *res, void *data)
{
    ngx_http_billing_main_conf_t *bmcf = data;

    char                          err[128];
    size_t                        nkeys;
    time_t                        now;
    billing_jwk_t                *keys;
    ngx_slab_pool_t              *shpool;
    ngx_http_billing_jwks_shm_t  *jw;

    ngx_http_billing_jwks_fetch = NULL;

    shpool = (ngx_slab_pool_t *) bmcf->jwks_zone->shm.addr;
    jw = bmcf->jwks_zone->data;
    now = ngx_time();
    keys = NULL;
    nkeys = 0;
    err[0] = '\0';

    if (res == NULL) {
        ngx_cpystrn((u_char *) err, (u_char *) "cannot start the request",
                    sizeof(err));

    } else if (res->status != 200) {
        ngx_snprintf((u_char *) err, sizeof(err) - 1, "status %l, %s%Z",
                     res->status, res->error);

    } else if (billing_jwks_parse((const char *) res->body, res->len, &keys,
                                  &nkeys, err, sizeof(err)) != 0
               || nkeys == 0)
    {
        if (err[0] == '\0') {
            ngx_cpystrn((u_char *) err, (u_char *) "no usable RS256 keys",
                        sizeof(err));
        }
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "billing jwks: fetch done, %uz keys%s", nkeys,
                   res ? "" : ", never started");

    ngx_shmtx_lock(&shpool->mutex);

    if (jw->url_crc != ngx_crc32_long(bmcf->jwks_url.data, bmcf->jwks_url.len)
        || jw->url_len != bmcf->jwks_url.len)
    {
        /* a worker of the previous configuration: its URL is not the zone's */
        ngx_shmtx_unlock(&shpool->mutex);

        ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                      "billing: JWKS keys from a previous configuration's URL "
                      "are not kept");

        if (keys) {
            billing_jwks_free(keys);
        }

        return;
    }

    if (keys && nkeys) {
        ngx_memcpy(jw->keys, keys, nkeys * sizeof(billing_jwk_t));
        jw->nkeys = nkeys;
        jw->generation++;
        jw->fetched_at = now;
        jw->next_refresh = now + bmcf->jwks_refresh;

    } else {
        /* keep serving the keys we have; try again after the cooldown */
        jw->next_refresh = now + bmcf->jwks_cooldown;
    }

    jw->lease_until = 0;

    ngx_shmtx_unlock(&shpool->mutex);

    if (keys && nkeys) {
        ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                      "billing: JWKS refreshed, %uz keys", nkeys);
        ngx_http_billing_metrics_inc(NGX_HTTP_BILLING_M_JWKS_OK, 1);

    } else {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "billing: JWKS refresh from \"%V\" failed: %s",
                      &bmcf->jwks_url, err);
        ngx_http_billing_metrics_inc(NGX_HTTP_BILLING_M_JWKS_ERROR, 1);
    }

    if (keys) {
        billing_jwks_free(keys);
    }
}


static void
ngx_http_billing_jwks_tick(ngx_event_t *ev)
{
    if (ngx_exiting || ngx_terminate) {
        return;
    }

    ngx_http_billing_jwks_refresh(ev->data, 0, ev->log);

    ngx_add_timer(ev, 1000);
}
