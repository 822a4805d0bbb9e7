# Per-user limit_req through $billing_user_id, and CORS.
use strict;
use warnings;
use lib 't/lib';
use Test::Nginx::Socket 'no_plan';
use BillingTest;

our $HttpConfig = qq{
    billing_database_url $ENV{TEST_NGINX_DATABASE_URL};
    billing_jwt_key file:$ENV{TEST_NGINX_JWT_PUBLIC_KEY_FILE};
    billing_jwt_issuer https://student-pilot.replit.app;
    billing_jwt_audience https://billing.scholarlink.app;
    billing_cors_origins https://student-pilot.replit.app;
    limit_req_zone \$billing_user_id zone=billing_user:1m rate=1r/m;
    limit_req_status 429;
};
our $Config = q{
    error_page 429 @billing_error;
    location @billing_error { billing error; }
    location = /api/balance { limit_req zone=billing_user burst=2 nodelay; billing balance; }
};

# Blocks run shuffled; each uses its own users, user('tN'), and nginx
# starts afresh for every block, so no block inherits another's limit.
our $U = "lim-" . time() . "-$$";
sub bearer { "Bearer " . mint_token(sub => "$U-$_[0]") }

# spends the burst of a user: three requests that are all let through
sub exhaust {
    my ($id) = @_;
    for (1 .. 3) {
        my ($s) = http_request($ENV{TEST_NGINX_SERVER_PORT},
            { method => 'GET', path => '/api/balance', headers => { Authorization => bearer($id) } });
        die "request $_ for $id answered $s" unless $s == 200;
    }
}

run_tests();

__DATA__

=== TEST 1: past the per-user burst the answer is 429 problem+json
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- init
main::exhaust('t1');
--- more_headers eval
"Authorization: " . main::bearer('t1') . "\nOrigin: https://student-pilot.replit.app"
--- request
GET /api/balance
--- error_code: 429
--- response_headers
Content-Type: application/problem+json
Access-Control-Allow-Origin: https://student-pilot.replit.app
--- response_body_like chomp
"status":429,.*"code":"rate_limited"
--- error_log
limiting requests



=== TEST 2: another user is not limited by the first user's requests
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- init
main::exhaust('t2-first');
--- more_headers eval
"Authorization: " . main::bearer('t2-second')
--- request
GET /api/balance
--- error_code: 200



=== TEST 3: an allowed origin gets Access-Control-Allow-Origin and Vary
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- more_headers eval
"Authorization: " . main::bearer('t3') . "\nOrigin: https://student-pilot.replit.app"
--- request
GET /api/balance
--- response_headers
Access-Control-Allow-Origin: https://student-pilot.replit.app
Vary: Origin
Access-Control-Expose-Headers: Idempotent-Replayed



=== TEST 4: an origin not in the list gets no Access-Control-Allow-Origin
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- more_headers eval
"Authorization: " . main::bearer('t4') . "\nOrigin: https://student-pilot.replit.app.evil.example"
--- request
GET /api/balance
--- response_headers
!Access-Control-Allow-Origin
Vary: Origin



=== TEST 5: a preflight from an allowed origin is answered 204
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- more_headers
Origin: https://student-pilot.replit.app
Access-Control-Request-Method: GET
Access-Control-Request-Headers: authorization
--- request
OPTIONS /api/balance
--- error_code: 204
--- response_headers
Access-Control-Allow-Origin: https://student-pilot.replit.app
Access-Control-Allow-Methods: GET, POST, DELETE, OPTIONS
Access-Control-Allow-Headers: Authorization, Content-Type, Idempotency-Key



=== TEST 6: a preflight from another origin gets no CORS grant
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- more_headers
Origin: https://evil.example
Access-Control-Request-Method: GET
--- request
OPTIONS /api/balance
--- error_code: 204
--- response_headers
!Access-Control-Allow-Origin
!Access-Control-Allow-Methods
