# syntax=docker/dockerfile:1
#
# ScholarLink Billing: Debian bookworm's nginx with ngx_http_billing_module.
#
#   docker build -t ghcr.io/scholarlink/billing:$(git rev-parse --short HEAD) .
#
# The module is built against the nginx-dev sources of the SAME Debian nginx
# package that the runtime stage installs: a dynamic module only loads into the
# binary it was built for (nginx checks the version and the --with-compat
# signature). The exact package version is carried from the build stage to
# the runtime stage and checked with "nginx -t" at build time.
#
# The production nginx.conf is NOT baked in: it comes from the ConfigMap
# (deployment/billing/configmap.yaml), mounted at /etc/nginx/nginx.conf.
# Secrets come from the environment at run time, never from the image.

# ---------------------------------------------------------------------------
FROM debian:bookworm-slim AS build

RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        nginx nginx-dev build-essential \
        libpq-dev libcjson-dev libssl-dev libcurl4-openssl-dev \
        ca-certificates \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY . /src
RUN ./build.sh build \
 && test -f build/ngx_http_billing_module.so \
 && mkdir -p /out \
 && cp build/ngx_http_billing_module.so /out/ \
 && dpkg-query -W -f='${Version}' nginx > /out/nginx.version \
 && echo "built against nginx $(cat /out/nginx.version)"

# ---------------------------------------------------------------------------
FROM debian:bookworm-slim AS runtime

LABEL org.opencontainers.image.title="scholarlink-billing" \
      org.opencontainers.image.description="Prepaid-credit billing API as an nginx dynamic module" \
      org.opencontainers.image.base.name="debian:bookworm-slim"

COPY --from=build /out/nginx.version /tmp/nginx.version

# nginx pinned to the build stage's version; libpq5/libcjson1/libcurl4 are
# the module's runtime libraries, ca-certificates lets libcurl verify Stripe,
# postgresql-client gives psql to sql/migrate.sh (migration Job).
RUN v="$(cat /tmp/nginx.version)" \
 && apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        "nginx=${v}" "nginx-common=${v}" \
        libpq5 libcjson1 libcurl4 ca-certificates postgresql-client \
 && rm -rf /var/lib/apt/lists/* /tmp/nginx.version \
 && rm -f /etc/nginx/sites-enabled/default /etc/nginx/modules-enabled/* \
 && groupadd --system --gid 10001 billing \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin billing \
 && mkdir -p /var/lib/nginx /etc/nginx/tls \
 && chown -R 10001:10001 /var/lib/nginx /var/log/nginx

COPY --from=build /out/ngx_http_billing_module.so /usr/lib/nginx/modules/ngx_http_billing_module.so
COPY sql/ /opt/billing/sql/
# served at GET /api/openapi.yaml (configmap.yaml)
COPY docs/openapi.yaml /opt/billing/openapi.yaml
RUN chmod 0644 /usr/lib/nginx/modules/ngx_http_billing_module.so \
 && chmod -R a+rX /opt/billing \
 && chmod 0755 /opt/billing/sql/migrate.sh \
 && printf 'load_module /usr/lib/nginx/modules/ngx_http_billing_module.so;\nevents {}\n' > /tmp/load-test.conf \
 && nginx -t -q -e stderr -c /tmp/load-test.conf \
 && rm -f /tmp/load-test.conf

USER 10001:10001
WORKDIR /tmp
EXPOSE 8080 8443

# nginx: SIGQUIT = graceful shutdown (SIGTERM would be the fast one).
STOPSIGNAL SIGQUIT
CMD ["nginx", "-g", "daemon off;"]
