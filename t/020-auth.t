# Bearer tokens: RS256 only, claims, RFC 6750 answers, $billing_user_id.
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
    billing_jwt_leeway 60s;
};

our $Config = q{
    location = /api/balance { billing balance; }
    location = /api/usage/reconcile { billing reconcile; }
    location = /whoami { billing health; add_header X-User "[$billing_user_id]" always; }
};

# Tokens are minted when the blocks are read and sent when their block
# runs, which under shuffling may be the last one: every time-relative claim
# keeps a margin far beyond the file's run time. TEST 8 gets a leeway of an
# hour for that.
(our $HttpConfigHourLeeway = $HttpConfig) =~ s/billing_jwt_leeway 60s;/billing_jwt_leeway 3600s;/
    or die 'no leeway to replace';

sub bearer { "Authorization: Bearer " . shift }

run_tests();

__DATA__

=== TEST 1: no credentials: 401 with a bare challenge
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- request
GET /api/balance
--- error_code: 401
--- response_headers
WWW-Authenticate: Bearer realm="billing"
Content-Type: application/problem+json
--- response_body_like chomp
"code":"unauthorized"
--- no_error_log
[error]



=== TEST 2: a valid token reads the caller's balance
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- request
GET /api/balance
--- more_headers eval
main::bearer(BillingTest::mint_token(sub => 'auth-user-1'))
--- response_body_like chomp
^\{"userId":"auth-user-1","balanceMicros":0,"heldMicros":0,"availableMicros":0\}$
--- no_error_log
[error]



=== TEST 3: the scheme name is case-insensitive
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- request
GET /api/balance
--- more_headers eval
"Authorization: bEARER " . BillingTest::mint_token(sub => 'auth-user-2')
--- response_body_like chomp
"userId":"auth-user-2"



=== TEST 4: alg none is refused
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- request
GET /api/balance
--- more_headers eval
main::bearer(BillingTest::mint_token_none())
--- error_code: 401
--- response_headers
WWW-Authenticate: Bearer realm="billing", error="invalid_token"
--- response_body_like chomp
"code":"invalid_token"



=== TEST 5: HS256 signed with the public key as the secret is refused
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- request
GET /api/balance
--- more_headers eval
main::bearer(BillingTest::mint_token_hs256_with_pubkey())
--- error_code: 401
--- response_body_like chomp
"code":"invalid_token"



=== TEST 6: a token signed by another key is refused
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- request
GET /api/balance
--- more_headers eval
main::bearer(BillingTest::mint_token(_key_file => $ENV{BILLING_TEST_OTHER_PRIVATE_KEY_FILE}))
--- error_code: 401
--- response_body_like chomp
"code":"invalid_token"



=== TEST 7: expired beyond the leeway is refused and says so
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- request
GET /api/balance
--- more_headers eval
main::bearer(BillingTest::mint_token(exp => time - 120, iat => time - 700))
--- error_code: 401
--- response_headers
WWW-Authenticate: Bearer realm="billing", error="invalid_token", error_description="the token has expired"



=== TEST 8: expired within the leeway is accepted
Expired ten minutes ago, with a leeway of an hour.
--- http_config eval: $::HttpConfigHourLeeway
--- config eval: $::Config
--- request
GET /api/balance
--- more_headers eval
main::bearer(BillingTest::mint_token(sub => 'auth-user-3', exp => time - 600, iat => time - 700))
--- response_body_like chomp
"userId":"auth-user-3"



=== TEST 9: not valid before a time beyond the leeway is refused
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- request
GET /api/balance
--- more_headers eval
main::bearer(BillingTest::mint_token(nbf => time + 3600))
--- error_code: 401



=== TEST 10: a wrong issuer is refused
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- request
GET /api/balance
--- more_headers eval
main::bearer(BillingTest::mint_token(iss => 'https://evil.example'))
--- error_code: 401



=== TEST 11: a wrong audience is refused
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- request
GET /api/balance
--- more_headers eval
main::bearer(BillingTest::mint_token(aud => 'https://other.example'))
--- error_code: 401



=== TEST 12: an audience array that contains ours is accepted
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- request
GET /api/balance
--- more_headers eval
main::bearer(BillingTest::mint_token(sub => 'auth-user-4', aud => ['https://other.example', 'https://billing.scholarlink.app']))
--- response_body_like chomp
"userId":"auth-user-4"



=== TEST 13: a tampered payload is refused
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- request
GET /api/balance
--- more_headers eval
my @a = split /\./, BillingTest::mint_token(sub => 'auth-victim');
my @b = split /\./, BillingTest::mint_token(sub => 'auth-attacker');
main::bearer(CORE::join '.', $a[0], $b[1], $a[2])
--- error_code: 401



=== TEST 14: malformed tokens of every shape are 401, never a crash
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- request
GET /api/balance
--- more_headers eval
main::bearer("a.b")
--- error_code: 401
--- no_error_log
[alert]
[emerg]



=== TEST 15: bad base64url and a huge header are 401
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- request
GET /api/balance
--- more_headers eval
main::bearer(("\x{21}" x 20) . "." . ("A" x 7000) . ".x")
--- error_code: 401



=== TEST 16: wrong JSON types in the claims are 401
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- request
GET /api/balance
--- more_headers eval
main::bearer(BillingTest::mint_token(exp => "tomorrow"))
--- error_code: 401



=== TEST 17: another scheme counts as no credentials
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- request
GET /api/balance
--- more_headers
Authorization: Basic dXNlcjpwYXNz
--- error_code: 401
--- response_headers
WWW-Authenticate: Bearer realm="billing"



=== TEST 18: a user token lacks the usage scope: 403 insufficient_scope
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- request
POST /api/usage/reconcile
{"userId":"u","model":"gpt-4o","inputTokens":1,"outputTokens":1,"idempotencyKey":"k1"}
--- more_headers eval
"Content-Type: application/json\n" . main::bearer(BillingTest::mint_token(scope => 'billing:read billing:usagex'))
--- error_code: 403
--- response_headers
WWW-Authenticate: Bearer realm="billing", error="insufficient_scope", scope="billing:usage"
--- response_body_like chomp
"code":"insufficient_scope"



=== TEST 19: $billing_user_id is the verified subject
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- request
GET /whoami
--- more_headers eval
main::bearer(BillingTest::mint_token(sub => 'auth-user-5'))
--- response_headers
X-User: [auth-user-5]



=== TEST 20: $billing_user_id is empty for a bad token
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- request
GET /whoami
--- more_headers eval
main::bearer(BillingTest::mint_token(sub => 'auth-user-6', aud => 'https://other.example'))
--- response_headers
X-User: []



=== TEST 21: an exp at the end of int64_t is accepted twice (verified, then cached) without overflow
exp + leeway would pass INT64_MAX. Under the ASan/UBSan suite the overflow
is a "runtime error" line in the error log: UBSan starts in the worker, whose
environment nginx cleared, so it writes there rather than to its log_path.
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- request eval
["GET /whoami", "GET /whoami"]
--- more_headers eval
main::bearer(BillingTest::mint_token(sub => 'auth-user-max-exp', exp => 9223372036854775807))
--- response_headers eval
["X-User: [auth-user-max-exp]", "X-User: [auth-user-max-exp]"]
--- no_error_log
[error]
runtime error
