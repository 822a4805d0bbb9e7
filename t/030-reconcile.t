# POST /api/usage/reconcile (docs/spec.md §4.1) end to end: pricing, idempotency,
# every status, and that bad input writes nothing.
use strict;
use warnings;
use lib 't/lib';
use Test::Nginx::Socket 'no_plan';
use BillingTest;

# Blocks run shuffled: each works on its own user, user('tN'), funds it in
# --- init and checks its ledger in --- after_requests.
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

sub user { "$U-$_[0]" }
sub fund { fund_user(user($_[0]), $_[1]) }
sub ledger { ledger_is(user($_[0]), $_[1], $_[2]) }

# a reconcile request for the block's user: gpt-4o 1000/500 (7500 micros)
sub body { my $id = shift;
           my %b = (userId => user($id), model => 'gpt-4o', inputTokens => 1000,
                    outputTokens => 500, idempotencyKey => 'k-1', @_);
           return "POST /api/usage/reconcile\n" . JSON::PP->new->canonical->encode(\%b) }

add_response_body_check(\&BillingTest::after_requests_check);
run_tests();

invariants_ok('invariants hold after the reconcile tests');

__DATA__

=== TEST 1: first charge: 201 with the docs/spec.md example price (gpt-4o 1000/500 = 7500)
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- init
main::fund('t1', 1_000_000);
--- more_headers eval: $::Svc
--- request eval: main::body('t1')
--- error_code: 201
--- response_headers
!Idempotent-Replayed
Content-Type: application/json
--- response_body_like chomp
^\{"entryId":"\d+","userId":"rec-[^"]+-t1","model":"gpt-4o","inputTokens":1000,"outputTokens":500,"chargedMicros":7500,"balanceMicros":992500,"replayed":false\}$
--- no_error_log
[error]
--- after_requests
main::ledger('t1', 2, 992_500);



=== TEST 2: the same request again is a replay of the original, charged once
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- init
main::fund('t2', 1_000_000);
--- more_headers eval: $::Svc
--- request eval: [main::body('t2'), main::body('t2')]
--- error_code eval: [201, 201]
--- response_headers eval
["!Idempotent-Replayed", "Idempotent-Replayed: true"]
--- response_body_like eval
['"inputTokens":1000,"outputTokens":500,"chargedMicros":7500,"balanceMicros":992500,"replayed":false\}$',
 '"inputTokens":1000,"outputTokens":500,"chargedMicros":7500,"balanceMicros":992500,"replayed":true\}$']
--- after_requests
main::ledger('t2', 2, 992_500);



=== TEST 3: the same key with another body is 409 and writes nothing
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- init
main::fund('t3', 1_000_000);
--- more_headers eval: $::Svc
--- request eval: [main::body('t3'), main::body('t3', outputTokens => 501)]
--- error_code eval: [201, 409]
--- response_headers eval
["Content-Type: application/json", "Content-Type: application/problem+json"]
--- response_body_like eval
['"chargedMicros":7500,.*"replayed":false\}$', '"code":"idempotency_key_reused"']
--- after_requests
main::ledger('t3', 2, 992_500);



=== TEST 4: the key may come as the Idempotency-Key header
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- init
main::fund('t4', 1_000_000);
--- more_headers eval: $::Svc . "\nIdempotency-Key: k-header"
--- request eval
"POST /api/usage/reconcile\n" . qq{{"userId":"$::U-t4","model":"gpt-4o","inputTokens":1000,"outputTokens":500}}
--- error_code: 201
--- response_body_like chomp
"chargedMicros":7500,"balanceMicros":992500,"replayed":false\}$
--- after_requests
main::ledger('t4', 2, 992_500);
Test::More::is(BillingTest::psql_admin("SELECT idempotency_key FROM billing.ledger_entries WHERE user_id = '$::U-t4' AND type = 'usage'"),
               'k-header', 'the charge carries the header key');



=== TEST 5: header and body keys that differ are 400 and write nothing
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- init
main::fund('t5', 1_000_000);
--- more_headers eval: $::Svc . "\nIdempotency-Key: k-other"
--- request eval: main::body('t5', idempotencyKey => 'k-5')
--- error_code: 400
--- response_body_like chomp
"code":"invalid_request"
--- after_requests
main::ledger('t5', 1, 1_000_000);



=== TEST 6: a charge above the balance is 402 and writes nothing
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- init
main::fund('t6', 1_000);
--- more_headers eval: $::Svc
--- request eval: main::body('t6', idempotencyKey => 'k-poor')
--- error_code: 402
--- response_body_like chomp
"status":402,.*"code":"insufficient_credits"
--- after_requests
main::ledger('t6', 1, 1_000);



=== TEST 7: an unknown model is 422 and writes nothing
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- init
main::fund('t7', 1_000_000);
--- more_headers eval: $::Svc
--- request eval: main::body('t7', model => 'gpt-9-imaginary', idempotencyKey => 'k-7')
--- error_code: 422
--- response_body_like chomp
"code":"unknown_model"
--- after_requests
main::ledger('t7', 1, 1_000_000);



=== TEST 8: 10^9 tokens each way with the most expensive model
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- init
main::fund('t8', 100_000_000_000);
--- more_headers eval: $::Svc
--- request eval: main::body('t8', model => 'claude-3-5-sonnet', inputTokens => 1_000_000_000, outputTokens => 1_000_000_000, idempotencyKey => 'k-big')
--- error_code: 201
--- response_body_like chomp
"chargedMicros":18000000000,"balanceMicros":\d+,"replayed":false\}$
--- after_requests
main::ledger('t8', 2, 100_000_000_000 - 18_000_000_000);



=== TEST 9: zero tokens cost nothing, but need a positive balance
docs/spec.md §3.5: usage is refused while the balance is not positive, even
a free one; once the user has money, zero tokens are charged nothing.
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- init
main::fund('t9-funded', 1_000);
--- more_headers eval: $::Svc
--- request eval
[main::body('t9', inputTokens => 0, outputTokens => 0, idempotencyKey => 'k-zero'),
 main::body('t9-funded', inputTokens => 0, outputTokens => 0, idempotencyKey => 'k-zero')]
--- error_code eval: [402, 201]
--- response_body_like eval
['"detail":"The balance is 0 micros; usage needs a positive balance","code":"insufficient_credits"',
 '"chargedMicros":0,"balanceMicros":1000,"replayed":false\}$']
--- after_requests
main::ledger('t9', 0, 0);
main::ledger('t9-funded', 2, 1_000);



=== TEST 10: more than 10^9 tokens is 400 and writes nothing
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- init
main::fund('t10', 1_000_000);
--- more_headers eval: $::Svc
--- request eval: main::body('t10', inputTokens => 1_000_000_001, idempotencyKey => 'k-10')
--- error_code: 400
--- response_body_like chomp
"code":"invalid_request"
--- after_requests
main::ledger('t10', 1, 1_000_000);



=== TEST 11: a fractional token count is 400 and writes nothing
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- init
main::fund('t11', 1_000_000);
--- more_headers eval: $::Svc
--- request eval
"POST /api/usage/reconcile\n" . qq{{"userId":"$::U-t11","model":"gpt-4o","inputTokens":1.5,"outputTokens":1,"idempotencyKey":"k-11"}}
--- error_code: 400
--- after_requests
main::ledger('t11', 1, 1_000_000);



=== TEST 12: a token count given as a string is 400 and writes nothing
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- init
main::fund('t12', 1_000_000);
--- more_headers eval: $::Svc
--- request eval
"POST /api/usage/reconcile\n" . qq{{"userId":"$::U-t12","model":"gpt-4o","inputTokens":"10","outputTokens":1,"idempotencyKey":"k-12"}}
--- error_code: 400
--- after_requests
main::ledger('t12', 1, 1_000_000);



=== TEST 13: a missing field is 400, names it, and writes nothing
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- init
main::fund('t13', 1_000_000);
--- more_headers eval: $::Svc
--- request eval
"POST /api/usage/reconcile\n" . qq{{"userId":"$::U-t13","inputTokens":1,"outputTokens":1,"idempotencyKey":"k-13"}}
--- error_code: 400
--- response_body_like chomp
model
--- after_requests
main::ledger('t13', 1, 1_000_000);



=== TEST 14: a key with a space is 400 and writes nothing
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- init
main::fund('t14', 1_000_000);
--- more_headers eval: $::Svc
--- request eval: main::body('t14', idempotencyKey => 'has space')
--- error_code: 400
--- after_requests
main::ledger('t14', 1, 1_000_000);



=== TEST 15: invalid UTF-8 is 400 and writes nothing
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- init
main::fund('t15', 1_000_000);
--- more_headers eval: $::Svc
--- request eval
"POST /api/usage/reconcile\n" . qq{{"userId":"$::U-t15\xC0\xAF","model":"gpt-4o","inputTokens":1,"outputTokens":1,"idempotencyKey":"k-15"}}
--- error_code: 400
--- after_requests
main::ledger('t15', 1, 1_000_000);



=== TEST 16: not JSON at all is 400
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- more_headers eval: $::Svc
--- request
POST /api/usage/reconcile
{"userId": 
--- error_code: 400



=== TEST 17: a non-JSON content type is 415 and writes nothing
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- init
main::fund('t17', 1_000_000);
--- more_headers eval
"Content-Type: text/plain\nAuthorization: Bearer " . BillingTest::mint_token(scope => 'billing:usage')
--- request eval: main::body('t17', idempotencyKey => 'k-17')
--- error_code: 415
--- response_body_like chomp
"code":"unsupported_media_type"
--- after_requests
main::ledger('t17', 1, 1_000_000);



=== TEST 18: a body over client_max_body_size is 413 problem+json and writes nothing
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- init
main::fund('t18', 1_000_000);
--- more_headers eval: $::Svc
--- request eval: main::body('t18', idempotencyKey => 'k-18', padding => ('x' x 70000))
--- error_code: 413
--- response_headers
Content-Type: application/problem+json
--- response_body_like chomp
"code":"payload_too_large"
--- after_requests
main::ledger('t18', 1, 1_000_000);



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
(funded: usage needs a positive balance, docs/spec.md §3.5)
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- init
main::fund('t20', 1_000);
--- more_headers eval: $::Svc
--- request eval: main::body('t20', inputTokens => 0, outputTokens => 0, idempotencyKey => 'k-extra', traceId => 'abc', extra => { nested => [1, 2, { deep => JSON::PP::true }] })
--- error_code: 201
--- response_body_like chomp
"chargedMicros":0,"balanceMicros":\d+,"replayed":false\}$
