# Packages, balance, ledger pagination and ownership, holds (docs/spec.md §4.3).
use strict;
use warnings;
use lib 't/lib';
use Test::Nginx::Socket 'no_plan';
use BillingTest;

our $U = "led-" . time() . "-$$";
our $HttpConfig = qq{
    billing_database_url $ENV{TEST_NGINX_DATABASE_URL};
    billing_jwt_key file:$ENV{TEST_NGINX_JWT_PUBLIC_KEY_FILE};
    billing_jwt_issuer https://student-pilot.replit.app;
    billing_jwt_audience https://billing.scholarlink.app;
};
our $Config = q{
    location = /api/packages { billing packages; }
    location = /api/balance { billing balance; }
    location = /api/ledger { billing ledger; }
    location = /api/usage/reconcile { billing reconcile; }
    location /api/usage/holds { billing holds; }
};

our $Svc = "Content-Type: application/json\nAuthorization: Bearer "
         . mint_token(sub => 'ai-backend', scope => 'billing:usage');
sub user { "Authorization: Bearer " . mint_token(sub => "$U-" . shift) }

# user a: three entries (credit, two charges) so pagination has pages
fund_user("$U-a", 1_000_000);
for my $k (1, 2) {
    my ($s) = (psql_admin("SELECT status FROM billing.api_reconcile('$U-a', 'gpt-4o-mini', 1000, 0, 'seed-$k', NULL)") =~ /(\d+)/);
    die "seed charge failed: $s" unless $s == 201;
}
fund_user("$U-b", 5_000_000);
fund_user("$U-h", 100_000);

# an expired hold for user h, inserted as the owner would find it later
psql_admin("INSERT INTO billing.holds (id, user_id, amount_micros, idempotency_key, request_fingerprint, status, expires_at)
            VALUES ('11111111-2222-4333-8444-" . sprintf('%012d', $$) . "', '$U-h', 50000, 'expired-1', 'x', 'active', now() - interval '1 minute')");
our $Expired = '11111111-2222-4333-8444-' . sprintf('%012d', $$);

# holds made before the blocks run (block sections are read up front)
sub hold_id { my $o = psql_admin("SELECT body FROM billing.api_hold_create('$U-h', $_[0], '$_[1]', 600)");
              $o =~ /"holdId": "([0-9a-f-]{36})"/ or die "hold: $o"; $1 }
our $Hold1 = hold_id(60_000, 'h-1');
our $Hold2 = hold_id(10_000, 'h-2');

no_shuffle();
run_tests();

is(balance_of("$U-h"), 100_000 - 7_500, 'user h: the hold capture charged the actual usage only');
invariants_ok('invariants hold after the ledger tests');

__DATA__

=== TEST 1: packages are public and seeded as docs/spec.md §2 says
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- request
GET /api/packages
--- response_body chomp
{"packages": [{"code": "starter", "name": "Starter", "currency": "usd", "priceCents": 500, "creditsMicros": 5000000}, {"code": "standard", "name": "Standard", "currency": "usd", "priceCents": 2000, "creditsMicros": 21000000}, {"code": "pro", "name": "Pro", "currency": "usd", "priceCents": 5000, "creditsMicros": 55000000}]}



=== TEST 2: balance of a funded user
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- more_headers eval: main::user('b')
--- request
GET /api/balance
--- response_body_like chomp
"balanceMicros": 5000000, "availableMicros": 5000000\}$



=== TEST 3: ledger: newest first, a page of one, and a cursor
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- more_headers eval: main::user('a')
--- request
GET /api/ledger?limit=1
--- response_body_like chomp
^\{"entries": \[\{"id": "\d+", "type": "usage", .*"idempotencyKey": "seed-2".*\], "balanceMicros": 999700, "nextCursor": "[A-Za-z0-9_-]+"\}$



=== TEST 6: another user sees none of a's entries
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- more_headers eval: main::user('b')
--- request
GET /api/ledger
--- response_body_like chomp
^\{"entries": \[\{"id": "\d+", "type": "purchase", [^\]]*\}\], "balanceMicros": 5000000, "nextCursor": null\}$



=== TEST 7: a bad limit or cursor is 400
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- more_headers eval: main::user('a')
--- request
GET /api/ledger?limit=201
--- error_code: 400



=== TEST 8: a forged cursor is 400
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- more_headers eval: main::user('a')
--- request
GET /api/ledger?cursor=not-a-cursor
--- error_code: 400
--- response_body_like chomp
"code":"invalid_request"



=== TEST 9: a hold larger than the available balance is 402
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- more_headers eval: $::Svc
--- request eval
"POST /api/usage/holds\n" . qq{{"userId":"$::U-h","amountMicros":30001,"idempotencyKey":"h-big","ttlSeconds":60}}
--- error_code: 402
--- response_body_like chomp
"code":"insufficient_credits"



=== TEST 10: a hold is created and lowers the available balance
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- more_headers eval: $::Svc
--- request eval
"POST /api/usage/holds\n" . qq{{"userId":"$::U-h","amountMicros":20000,"idempotencyKey":"h-3","ttlSeconds":600}}
--- error_code: 201
--- response_body_like chomp
^\{"holdId": "[0-9a-f-]{36}", "userId": "led-[^"]+-h", "expiresAt": "[0-9T:.-]+Z", "heldMicros": 20000, "availableMicros": 10000\}$



=== TEST 11: while held, a charge above what is left is 402
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- more_headers eval: $::Svc
--- request eval
"POST /api/usage/reconcile\n" . qq{{"userId":"$::U-h","model":"gpt-4o","inputTokens":5000,"outputTokens":0,"idempotencyKey":"r-over"}}
--- error_code: 402



=== TEST 12: a reconcile against a hold may use the held amount and captures it
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- more_headers eval: $::Svc
--- request eval
"POST /api/usage/reconcile\n" . qq{{"userId":"$::U-h","model":"gpt-4o","inputTokens":1000,"outputTokens":500,"idempotencyKey":"r-hold","holdId":"$::Hold1"}}
--- error_code: 201
--- response_body_like chomp
"balanceMicros": 92500, "chargedMicros": 7500\}$



=== TEST 13: a captured hold cannot be released
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- more_headers eval: $::Svc
--- request eval
"DELETE /api/usage/holds/$::Hold1"
--- error_code: 409
--- response_body_like chomp
"code":"hold_not_active"



=== TEST 14: an active hold is released by DELETE
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- more_headers eval: $::Svc
--- request eval
"DELETE /api/usage/holds/" . uc $::Hold2
--- response_body_like chomp
"status": "released"



=== TEST 15: an expired hold no longer counts and cannot be captured
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- more_headers eval: $::Svc
--- request eval
"POST /api/usage/reconcile\n" . qq{{"userId":"$::U-h","model":"gpt-4o","inputTokens":1,"outputTokens":0,"idempotencyKey":"r-exp","holdId":"$::Expired"}}
--- error_code: 409
--- response_body_like chomp
"code":"hold_not_active"



=== TEST 16: the balance shows only the hold still active
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- more_headers eval: main::user('h')
--- request
GET /api/balance
--- response_body_like chomp
"heldMicros": 20000, "balanceMicros": 92500, "availableMicros": 72500\}$



=== TEST 17: an unknown hold id is 404
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- more_headers eval: $::Svc
--- request
DELETE /api/usage/holds/00000000-0000-4000-8000-000000000000
--- error_code: 404



=== TEST 18: a malformed hold id is 404
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- more_headers eval: $::Svc
--- request
DELETE /api/usage/holds/not-a-uuid
--- error_code: 404
