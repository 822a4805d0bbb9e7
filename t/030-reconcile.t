# POST /api/usage/reconcile (docs/spec.md §4.1) end to end: pricing, idempotency,
# every status, and that bad input writes nothing.
use strict;
use warnings;
use lib 't/lib';
use Test::Nginx::Socket 'no_plan';
use BillingTest;

our $U = "rec-" . time() . "-$$";
our $HttpConfig = qq{
    billing_database_url $ENV{TEST_NGINX_DATABASE_URL};
    billing_jwt_key file:$ENV{TEST_NGINX_JWT_PUBLIC_KEY_FILE};
    billing_jwt_issuer https://student-pilot.replit.app;
    billing_jwt_audience https://billing.scholarlink.app;
};
our $Config = q{
    location @billing_error { billing error; }
    location = /api/usage/reconcile {
        client_max_body_size 64k;
        error_page 413 @billing_error;
        billing reconcile;
    }
};

# one service token for the file; the user is in the body
our $Svc = "Content-Type: application/json\nAuthorization: Bearer "
         . mint_token(sub => 'ai-backend', scope => 'billing:usage');

sub body { my %b = (userId => "$U-a", model => 'gpt-4o', inputTokens => 1000,
                    outputTokens => 500, idempotencyKey => 'k-1', @_);
           return "POST /api/usage/reconcile\n" . JSON::PP->new->canonical->encode(\%b) }

fund_user("$U-a", 1_000_000);
fund_user("$U-poor", 1_000);
fund_user("$U-rich", 100_000_000_000);

no_shuffle();
run_tests();

is(entries_of("$U-a"), 3, 'user a: one credit and two charges, nothing from bad requests');
is(balance_of("$U-a"), 1_000_000 - 7_500 - 7_500, 'user a balance');
is(entries_of("$U-poor"), 1, 'the refused charge wrote nothing');
is(balance_of("$U-rich"), 100_000_000_000 - 18_000_000_000, 'the largest charge');
invariants_ok('invariants hold after the reconcile tests');

__DATA__

=== TEST 1: first charge: 201 with the docs/spec.md example price (gpt-4o 1000/500 = 7500)
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- more_headers eval: $::Svc
--- request eval: main::body()
--- error_code: 201
--- response_headers
!Idempotent-Replayed
Content-Type: application/json
--- response_body_like chomp
^\{"model": "gpt-4o", "userId": "rec-[^"]+-a", "entryId": "\d+", "replayed": false, "inputTokens": 1000, "outputTokens": 500, "balanceMicros": 992500, "chargedMicros": 7500\}$
--- no_error_log
[error]



=== TEST 2: the same request again is a replay of the original
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- more_headers eval: $::Svc
--- request eval: main::body()
--- error_code: 201
--- response_headers
Idempotent-Replayed: true
--- response_body_like chomp
"replayed": true, "inputTokens": 1000, "outputTokens": 500, "balanceMicros": 992500, "chargedMicros": 7500\}$



=== TEST 3: the same key with another body is 409 and writes nothing
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- more_headers eval: $::Svc
--- request eval: main::body(outputTokens => 501)
--- error_code: 409
--- response_headers
Content-Type: application/problem+json
--- response_body_like chomp
"code":"idempotency_key_reused"



=== TEST 4: the key may come as the Idempotency-Key header
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- more_headers eval: $::Svc . "\nIdempotency-Key: k-header"
--- request eval
"POST /api/usage/reconcile\n" . qq{{"userId":"$::U-a","model":"gpt-4o","inputTokens":1000,"outputTokens":500}}
--- error_code: 201
--- response_body_like chomp
"balanceMicros": 985000, "chargedMicros": 7500\}$



=== TEST 5: header and body keys that differ are 400
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- more_headers eval: $::Svc . "\nIdempotency-Key: k-other"
--- request eval: main::body(idempotencyKey => 'k-5')
--- error_code: 400
--- response_body_like chomp
"code":"invalid_request"



=== TEST 6: a charge above the balance is 402 and writes nothing
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- more_headers eval: $::Svc
--- request eval: main::body(userId => "$::U-poor", idempotencyKey => 'k-poor')
--- error_code: 402
--- response_body_like chomp
"status":402,.*"code":"insufficient_credits"



=== TEST 7: an unknown model is 422
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- more_headers eval: $::Svc
--- request eval: main::body(model => 'gpt-9-imaginary', idempotencyKey => 'k-7')
--- error_code: 422
--- response_body_like chomp
"code":"unknown_model"



=== TEST 8: 10^9 tokens each way with the most expensive model
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- more_headers eval: $::Svc
--- request eval: main::body(userId => "$::U-rich", model => 'claude-3-5-sonnet', inputTokens => 1_000_000_000, outputTokens => 1_000_000_000, idempotencyKey => 'k-big')
--- error_code: 201
--- response_body_like chomp
"chargedMicros": 18000000000\}$



=== TEST 9: zero tokens cost nothing
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- more_headers eval: $::Svc
--- request eval: main::body(userId => "$::U-zero", inputTokens => 0, outputTokens => 0, idempotencyKey => 'k-zero')
--- error_code: 201
--- response_body_like chomp
"balanceMicros": 0, "chargedMicros": 0\}$



=== TEST 10: more than 10^9 tokens is 400
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- more_headers eval: $::Svc
--- request eval: main::body(inputTokens => 1_000_000_001, idempotencyKey => 'k-10')
--- error_code: 400
--- response_body_like chomp
"code":"invalid_request"



=== TEST 11: a fractional token count is 400
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- more_headers eval: $::Svc
--- request eval
"POST /api/usage/reconcile\n" . qq{{"userId":"$::U-a","model":"gpt-4o","inputTokens":1.5,"outputTokens":1,"idempotencyKey":"k-11"}}
--- error_code: 400



=== TEST 12: a token count given as a string is 400
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- more_headers eval: $::Svc
--- request eval
"POST /api/usage/reconcile\n" . qq{{"userId":"$::U-a","model":"gpt-4o","inputTokens":"10","outputTokens":1,"idempotencyKey":"k-12"}}
--- error_code: 400



=== TEST 13: a missing field is 400 and names it
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- more_headers eval: $::Svc
--- request eval
"POST /api/usage/reconcile\n" . qq{{"userId":"$::U-a","inputTokens":1,"outputTokens":1,"idempotencyKey":"k-13"}}
--- error_code: 400
--- response_body_like chomp
model



=== TEST 14: a key with a space is 400
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- more_headers eval: $::Svc
--- request eval: main::body(idempotencyKey => 'has space')
--- error_code: 400



=== TEST 15: invalid UTF-8 is 400
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- more_headers eval: $::Svc
--- request eval
"POST /api/usage/reconcile\n" . qq{{"userId":"$::U-a\xC0\xAF","model":"gpt-4o","inputTokens":1,"outputTokens":1,"idempotencyKey":"k-15"}}
--- error_code: 400



=== TEST 16: not JSON at all is 400
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- more_headers eval: $::Svc
--- request
POST /api/usage/reconcile
{"userId": 
--- error_code: 400



=== TEST 17: a non-JSON content type is 415
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- more_headers eval
"Content-Type: text/plain\nAuthorization: Bearer " . BillingTest::mint_token(scope => 'billing:usage')
--- request eval: main::body(idempotencyKey => 'k-17')
--- error_code: 415
--- response_body_like chomp
"code":"unsupported_media_type"



=== TEST 18: a body over client_max_body_size is 413 problem+json
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- more_headers eval: $::Svc
--- request eval: main::body(idempotencyKey => 'k-18', padding => ('x' x 70000))
--- error_code: 413
--- response_headers
Content-Type: application/problem+json
--- response_body_like chomp
"code":"payload_too_large"



=== TEST 19: GET is 405
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- more_headers eval: $::Svc
--- request
GET /api/usage/reconcile
--- error_code: 405
--- response_headers
Allow: POST



=== TEST 20: unknown fields are ignored
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- more_headers eval: $::Svc
--- request eval: main::body(userId => "$::U-zero", inputTokens => 0, outputTokens => 0, idempotencyKey => 'k-extra', traceId => 'abc', extra => { nested => [1, 2, { deep => JSON::PP::true }] })
--- error_code: 201
--- response_body_like chomp
"chargedMicros": 0\}$
