
/*
 * ScholarLink Billing: the one structure each shared zone of this module
 * holds (the metrics, the JWKS keys), kept in the slab pool's data so
 * that a zone that outlives a reload finds it again.
 */


#include <ngx_config.h>
#include <ngx_core.h>

#include "ngx_http_billing_shm.h"


/*
 * The zone's structure, also set as shm_zone->data: the old cycle's (data)
 * on a reload, the one the slab pool holds, or a new zeroed one; NULL when
 * the zone is too small.
 */
void *
ngx_http_billing_shm_init(ngx_shm_zone_t *shm_zone, void *data, size_t size,
    const char *what)
{
    ngx_slab_pool_t  *shpool;

    shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (data == NULL && shm_zone->shm.exists) {
        data = shpool->data;
    }

    if (data == NULL) {
        data = ngx_slab_calloc(shpool, size);
        if (data == NULL) {
            ngx_log_error(NGX_LOG_EMERG, shm_zone->shm.log, 0,
                          "billing: %s zone \"%V\" is too small", what,
                          &shm_zone->shm.name);
            return NULL;
        }

        shpool->data = data;
    }

    shm_zone->data = data;

    return data;
}
