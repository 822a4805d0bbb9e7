# /health, /readyz, /metrics against a real PostgreSQL.
use strict;
use warnings;
use lib 't/lib';
use Test::Nginx::Socket 'no_plan';
use BillingTest;

our $HttpConfig = qq{
    billing_database_url $ENV{TEST_NGINX_DATABASE_URL};
    billing_pool min=1 max=4 queue=8;
    billing_db_timeouts connect=2s query=3s;
};

run_tests();

__DATA__

=== TEST 1: health answers without a database
--- config
location = /health { billing health; }
--- request
GET /health
--- response_headers
Content-Type: application/json
--- response_body chomp
{"status":"ok"}
--- no_error_log
[error]



=== TEST 2: health refuses POST with 405 and a problem body
--- config
location = /health { billing health; }
--- request
POST /health
x
--- error_code: 405
--- response_headers
Allow: GET, HEAD
Content-Type: application/problem+json
--- response_body_like chomp
^\{"type":"https://billing\.scholarlink\.app/problems/method_not_allowed","title":"Method Not Allowed","status":405,.*"code":"method_not_allowed"\}$



=== TEST 3: readyz is ready with a migrated database
--- http_config eval: $::HttpConfig
--- config
location = /readyz { billing readyz; }
--- request
GET /readyz
--- response_body chomp
{"status":"ready","checks":{"database":"ok","migrations":"ok"}}
--- no_error_log
[error]



=== TEST 4: readyz is not ready when the database cannot be reached
--- http_config
billing_database_url postgresql://nobody:secret-pw-1@127.0.0.1:9/billing;
billing_db_timeouts connect=1s query=1s;
--- config
location = /readyz { billing readyz; }
--- request
GET /readyz
--- error_code: 503
--- response_body chomp
{"status":"not_ready","checks":{"database":"unavailable","migrations":"unknown"}}
--- error_log
database connection failed
--- no_error_log
secret-pw-1



=== TEST 5: readyz names the migrations when the schema is missing
--- http_config eval
my $url = $ENV{TEST_NGINX_DATABASE_URL};
$url =~ s{/billing(\?|$)}{/postgres$1};
"billing_database_url $url;"
--- config
location = /readyz { billing readyz; }
--- request
GET /readyz
--- error_code: 503
--- response_body chomp
{"status":"not_ready","checks":{"database":"ok","migrations":"missing"}}



=== TEST 6: metrics are Prometheus text and count requests across the scrape
--- http_config eval: $::HttpConfig
--- config
location = /health { billing health; }
location = /metrics { billing metrics; }
--- init
BillingTest::http_request($ENV{TEST_NGINX_SERVER_PORT}, "GET /health") for 1 .. 3;
--- request
GET /metrics
--- response_headers
Content-Type: text/plain; version=0.0.4; charset=utf-8
--- response_body_like
# TYPE billing_http_requests_total counter
billing_http_requests_total\{endpoint="health",status="200"\} 3
.*# TYPE billing_http_request_duration_seconds histogram
.*billing_http_request_duration_seconds_bucket\{endpoint="health",le="\+Inf"\} 3
.*billing_http_request_duration_seconds_count\{endpoint="health"\} 3
.*billing_db_pool_connections\{state="idle"\} \d+
--- no_error_log
[error]
