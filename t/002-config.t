# Configuration: a complete valid configuration starts and serves; every bad
# one stops nginx at startup with a message that names the problem and never
# a secret.
#
# Secrets in must_die blocks: both runners start nginx with
# `-e servroot/logs/error.log`, and nginx prints a startup error on stderr
# only after writing the same message to that log (ngx_log_error_core), so
# --- no_error_log over error.log also covers what nginx printed.
use strict;
use warnings;
use lib 't/lib';
use Test::Nginx::Socket 'no_plan';

# the runtime role's password, which must appear in no log line
our ($Password) = ($ENV{TEST_NGINX_DATABASE_URL} // '') =~ m{^[a-z]+://[^:/@]+:([^@]+)@};

run_tests();

__DATA__

=== TEST 1: a complete valid configuration starts and reaches the database
The URL carries libpq parameters and the module's own connection_limit.
--- http_config eval
"billing_database_url '$ENV{TEST_NGINX_DATABASE_URL}?sslmode=disable&connection_limit=10';
billing_pool min=1 max=4 queue=16;
billing_db_timeouts connect=2s query=500ms;
billing_metrics_zone m 256k;
billing_jwt_leeway 30s;
billing_cors_origins https://student-pilot.replit.app;"
--- config
location = /readyz { billing readyz; }
--- request
GET /readyz
--- response_body chomp
{"status":"ready","checks":{"database":"ok","migrations":"ok"}}
--- no_error_log eval
["[error]", $::Password]



=== TEST 2: an unknown endpoint is refused and named
--- config
location = /x { billing nope; }
--- must_die
--- error_log
[emerg]
unknown billing endpoint "nope"



=== TEST 3: a pool whose min is above its max is refused
--- http_config
billing_pool min=5 max=2;
--- config
location = /health { billing health; }
--- must_die
--- error_log
[emerg]
has min greater than max



=== TEST 4: a pool of no connections is refused
--- http_config
billing_pool max=0;
--- config
location = /health { billing health; }
--- must_die
--- error_log
[emerg]
invalid value "max=0"



=== TEST 5: an unknown pool parameter is refused and named
--- http_config
billing_pool size=3;
--- config
location = /health { billing health; }
--- must_die
--- error_log
[emerg]
invalid parameter "size=3"



=== TEST 6: a timeout that is not a duration is refused and named
--- http_config
billing_db_timeouts connect=soon;
--- config
location = /health { billing health; }
--- must_die
--- error_log
[emerg]
invalid timeout "connect=soon"



=== TEST 7: a URL from a missing environment variable names the variable
--- http_config
billing_database_url env:BILLING_SURELY_UNSET_VAR;
--- config
location = /health { billing health; }
--- must_die
--- error_log
[emerg]
BILLING_SURELY_UNSET_VAR



=== TEST 8: a URL from an unreadable file names the file
--- http_config
billing_database_url file:/nonexistent/secret;
--- config
location = /health { billing health; }
--- must_die
--- error_log
[emerg]
/nonexistent/secret



=== TEST 9: a bad connection_limit is refused without showing the URL's password
--- http_config
billing_database_url 'postgresql://u:topsecret-7@h/db?connection_limit=abc';
--- config
location = /health { billing health; }
--- must_die
--- error_log
[emerg]
invalid billing_database_url
--- no_error_log
topsecret
u:topsecret



=== TEST 10: a key file that holds no PEM key is refused
--- http_config
billing_jwt_key file:/etc/hostname;
--- config
location = /health { billing health; }
--- must_die
--- error_log
[emerg]
invalid billing_jwt_key



=== TEST 11: a metrics zone too small for the metrics is refused
--- http_config
billing_metrics_zone m 4k;
--- config
location = /health { billing health; }
--- must_die
--- error_log
[emerg]
invalid zone size "4k"



=== TEST 12: a second billing_database_url is refused without showing either URL
--- http_config
billing_database_url postgresql://u:dup-secret-1@h/db;
billing_database_url postgresql://u:dup-secret-2@h/db;
--- config
location = /health { billing health; }
--- must_die
--- error_log
[emerg]
is duplicate
--- no_error_log
dup-secret



=== TEST 13: a database resolver given as a name is refused
--- http_config
billing_database_url postgresql://u:topsecret-9@db.example/billing;
billing_database_resolver localhost;
--- config
location = /health { billing health; }
--- must_die
--- error_log
invalid DNS server "localhost": an IPv4 address
--- no_error_log
topsecret



=== TEST 14: a database resolver given as an IPv6 address is refused
--- http_config
billing_database_url postgresql://u:topsecret-9@db.example/billing;
billing_database_resolver [::1]:53;
--- config
location = /health { billing health; }
--- must_die
--- error_log
invalid DNS server "[::1]:53": an IPv4 address
--- no_error_log
topsecret



=== TEST 15: a JWKS URL in plain http:// is refused
Keys fetched in plain text could be replaced by anyone on the path.
--- http_config
billing_jwt_jwks_url http://idp.example/.well-known/jwks.json;
billing_jwt_issuer https://student-pilot.replit.app;
billing_jwt_audience https://billing.scholarlink.app;
--- config
location = /health { billing health; }
--- must_die
--- error_log
[emerg]
"billing_jwt_jwks_url" must be an https:// URL ("billing_jwt_jwks_allow_http on" also allows http://, for tests)



=== TEST 16: a JWKS URL of another scheme is refused even when http is allowed
--- http_config
billing_jwt_jwks_url file:///etc/passwd;
billing_jwt_jwks_allow_http on;
--- config
location = /health { billing health; }
--- must_die
--- error_log
[emerg]
"billing_jwt_jwks_url" must be an https:// URL or an http:// one



=== TEST 17: billing_jwt_jwks_allow_http on admits a plain http:// JWKS URL (tests)
--- http_config
billing_jwt_jwks_url http://127.0.0.1:9/.well-known/jwks.json;
billing_jwt_jwks_allow_http on;
billing_jwt_issuer https://student-pilot.replit.app;
billing_jwt_audience https://billing.scholarlink.app;
--- config
location = /health { billing health; }
--- request
GET /health
--- response_body chomp
{"status":"ok"}
--- no_error_log
[emerg]



=== TEST 18: an audit budget the query timeout could cut short is refused
The audit stops itself at its budget; the pool's query timeout must never be
what stops it.
--- http_config
billing_db_timeouts connect=1s query=2s;
billing_audit_budget 1500ms;
--- config
location = /health { billing health; }
--- must_die
--- error_log
[emerg]
"billing_audit_budget" must be positive and at most half the query timeout (2000 ms)



=== TEST 19: the metrics and the JWKS keys cannot share a zone
Each zone holds one structure; with one name the JWKS setup would take the
metrics' memory.
--- http_config
billing_metrics_zone shared_zone 256k;
billing_jwt_jwks_zone shared_zone 256k;
billing_jwt_jwks_url https://idp.example/.well-known/jwks.json;
billing_jwt_issuer https://student-pilot.replit.app;
billing_jwt_audience https://billing.scholarlink.app;
--- config
location = /health { billing health; }
--- must_die
--- error_log
[emerg]
duplicate zone "shared_zone"
