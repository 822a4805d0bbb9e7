# Packages, balance, ledger pagination and ownership, holds (docs/spec.md §4.3).
use strict;
use warnings;
use lib 't/lib';
use Test::Nginx::Socket 'no_plan';
use BillingTest;

# Blocks run shuffled: each works on its own users, user('tN'), made in its
# --- init. A hold whose id a request names is made by that block's
# --- request eval (Test::Base evaluates those when the blocks are read).
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

sub user { "$U-$_[0]" }
sub as_user { "Authorization: Bearer " . mint_token(sub => user($_[0])) }
sub fund { fund_user(user($_[0]), $_[1]) }
sub ledger { ledger_is(user($_[0]), $_[1], $_[2]) }

# a charge through the database function, as the reconcile endpoint makes
# it (against a hold when one is given)
sub charge {
    my ($id, $model, $in, $out, $key, $hold) = @_;
    $hold = defined $hold ? "'$hold'" : 'NULL';
    my ($s) = psql_admin("SELECT status FROM billing.api_reconcile('" . user($id)
                         . "', '$model', $in, $out, '$key', $hold)") =~ /(\d+)/;
    die "charge $key for $id failed: $s" unless $s == 201;
}

# an active hold, as the holds endpoint makes it; returns its id
sub hold {
    my ($id, $micros, $key) = @_;
    my $o = psql_admin("SELECT body FROM billing.api_hold_create('" . user($id) . "', $micros, '$key', 600)");
    $o =~ /"holdId"\s*:\s*"([0-9a-f-]{36})"/ or die "hold $key for $id: $o";
    return $1;
}

# a hold that expired a minute ago, inserted as the owner would find it;
# its id is known before the blocks run: block number N, this process
sub expired_hold_id { sprintf '%08d-2222-4333-8444-%012d', $_[0], $$ }
sub expired_hold {
    my ($n, $micros) = @_;
    psql_admin("INSERT INTO billing.holds (id, user_id, amount_micros, idempotency_key, request_fingerprint, status, expires_at)
                VALUES ('" . expired_hold_id($n) . "', '" . user("t$n") . "', $micros, 'expired-1', 'x', 'active', now() - interval '1 minute')");
}

sub reconcile { my ($id, %b) = @_;
                my %body = (userId => user($id), model => 'gpt-4o', inputTokens => 1000,
                            outputTokens => 500, idempotencyKey => "r-$id", %b);
                "POST /api/usage/reconcile\n" . JSON::PP->new->canonical->encode(\%body) }

add_response_body_check(\&BillingTest::after_requests_check);
run_tests();

invariants_ok('invariants hold after the ledger tests');

__DATA__

=== TEST 1: packages are public and seeded as docs/spec.md §2 says
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- request
GET /api/packages
--- response_body chomp
{"packages":[{"code":"starter","name":"Starter","priceCents":500,"currency":"usd","creditsMicros":5000000},{"code":"standard","name":"Standard","priceCents":2000,"currency":"usd","creditsMicros":21000000},{"code":"pro","name":"Pro","priceCents":5000,"currency":"usd","creditsMicros":55000000}]}



=== TEST 2: balance of a funded user
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- init
main::fund('t2', 5_000_000);
--- more_headers eval: main::as_user('t2')
--- request
GET /api/balance
--- response_body_like chomp
"balanceMicros":5000000,"heldMicros":0,"availableMicros":5000000\}$



=== TEST 3: ledger: newest first, a page of one, and a cursor
Three entries (a credit, two charges of 150 micros) so there are pages.
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- init
main::fund('t3', 1_000_000);
main::charge('t3', 'gpt-4o-mini', 1000, 0, "seed-$_") for 1, 2;
--- more_headers eval: main::as_user('t3')
--- request
GET /api/ledger?limit=1
--- response_body_like chomp
^\{"balanceMicros":999700,"entries":\[\{"id":"\d+","type":"usage","amountMicros":-150,"balanceAfterMicros":999700,"createdAt":"[0-9T:.-]+Z","model":"gpt-4o-mini","inputTokens":1000,"outputTokens":0,"idempotencyKey":"seed-2"\}\],"nextCursor":"[A-Za-z0-9_-]+"\}$



=== TEST 6: another user sees none of the first user's entries
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- init
main::fund('t6-first', 1_000_000);
main::charge('t6-first', 'gpt-4o-mini', 1000, 0, 'seed-1');
main::fund('t6-second', 5_000_000);
--- more_headers eval: main::as_user('t6-second')
--- request
GET /api/ledger
--- response_body_like chomp
^\{"balanceMicros":5000000,"entries":\[\{"id":"\d+","type":"purchase",[^\]]*\}\],"nextCursor":null\}$



=== TEST 7: a bad limit or cursor is 400
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- more_headers eval: main::as_user('t7')
--- request
GET /api/ledger?limit=201
--- error_code: 400



=== TEST 8: a forged cursor is 400
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- more_headers eval: main::as_user('t8')
--- request
GET /api/ledger?cursor=not-a-cursor
--- error_code: 400
--- response_body_like chomp
"code":"invalid_request"



=== TEST 9: a hold larger than the available balance is 402; one of exactly that size is not
100000 funded, 70000 held: 30000 available.
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- init
main::fund('t9', 100_000);
main::hold('t9', 70_000, 'h-1');
--- more_headers eval: $::Svc
--- request eval
["POST /api/usage/holds\n" . qq{{"userId":"$::U-t9","amountMicros":30001,"idempotencyKey":"h-big","ttlSeconds":60}},
 "POST /api/usage/holds\n" . qq{{"userId":"$::U-t9","amountMicros":30000,"idempotencyKey":"h-all","ttlSeconds":60}}]
--- error_code eval: [402, 201]
--- response_body_like eval
['"code":"insufficient_credits"', '"heldMicros":30000,"expiresAt":"[0-9T:.-]+Z","availableMicros":0\}$']



=== TEST 10: a hold is created and lowers the available balance
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- init
main::fund('t10', 30_000);
--- more_headers eval: $::Svc
--- request eval
"POST /api/usage/holds\n" . qq{{"userId":"$::U-t10","amountMicros":20000,"idempotencyKey":"h-3","ttlSeconds":600}}
--- error_code: 201
--- response_body_like chomp
^\{"holdId":"[0-9a-f-]{36}","userId":"led-[^"]+-t10","heldMicros":20000,"expiresAt":"[0-9T:.-]+Z","availableMicros":10000\}$



=== TEST 11: while held, a charge above what is left is 402 and writes nothing
30000 funded, 20000 held: 10000 left, the charge is 12500.
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- init
main::fund('t11', 30_000);
main::hold('t11', 20_000, 'h-1');
--- more_headers eval: $::Svc
--- request eval
"POST /api/usage/reconcile\n" . qq{{"userId":"$::U-t11","model":"gpt-4o","inputTokens":5000,"outputTokens":0,"idempotencyKey":"r-over"}}
--- error_code: 402
--- after_requests
main::ledger('t11', 1, 30_000);



=== TEST 12: a reconcile against a hold may use the held amount and captures it
Everything is held; the charge against the hold goes through and costs the
actual usage only.
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- more_headers eval: $::Svc
--- request eval
main::fund('t12', 60_000);
main::reconcile('t12', holdId => main::hold('t12', 60_000, 'h-1'))
--- error_code: 201
--- response_body_like chomp
"chargedMicros":7500,"balanceMicros":52500,"replayed":false\}$
--- after_requests
main::ledger('t12', 2, 52_500);
Test::More::is(BillingTest::psql_admin("SELECT status FROM billing.holds WHERE user_id = '" . main::user('t12') . "'"),
               'captured', 'the hold is captured');



=== TEST 13: a captured hold cannot be released
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- more_headers eval: $::Svc
--- request eval
main::fund('t13', 100_000);
my $hold = main::hold('t13', 60_000, 'h-1');
[main::reconcile('t13', holdId => $hold), "DELETE /api/usage/holds/$hold"]
--- error_code eval: [201, 409]
--- response_body_like eval
['"chargedMicros":7500,"balanceMicros":92500,"replayed":false\}$', '"code":"hold_not_active"']



=== TEST 14: an active hold is released by DELETE, whatever the case of its id
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- more_headers eval: $::Svc
--- request eval
main::fund('t14', 100_000);
"DELETE /api/usage/holds/" . uc main::hold('t14', 10_000, 'h-2')
--- response_body_like chomp
^\{"holdId":"[0-9a-f-]{36}","status":"released"\}$



=== TEST 15: an expired hold no longer counts and cannot be captured
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- init
main::fund('t15', 100_000);
main::expired_hold(15, 50_000);
--- more_headers eval: $::Svc
--- request eval
main::reconcile('t15', inputTokens => 1, outputTokens => 0, idempotencyKey => 'r-exp',
                holdId => main::expired_hold_id(15))
--- error_code: 409
--- response_body_like chomp
"code":"hold_not_active"
--- after_requests
main::ledger('t15', 1, 100_000);



=== TEST 16: the balance shows only the hold still active
Active 20000; released 10000, captured 60000 (charged 7500) and expired
50000 no longer count.
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- init
main::fund('t16', 100_000);
main::hold('t16', 20_000, 'h-active');
my $released = main::hold('t16', 10_000, 'h-released');
BillingTest::psql_admin("SELECT billing.api_hold_release('$released')");
main::charge('t16', 'gpt-4o', 1000, 500, 'r-hold', main::hold('t16', 60_000, 'h-captured'));
main::expired_hold(16, 50_000);
--- more_headers eval: main::as_user('t16')
--- request
GET /api/balance
--- response_body_like chomp
"balanceMicros":92500,"heldMicros":20000,"availableMicros":72500\}$



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
