# Administration (docs/spec.md §4.7), end to end: adjustments, usage
# reversals, support's views of a user, price versions. Each write: success,
# replay, conflict, bad input (problem+json, nothing written) and who may
# call it (401 without a token, 403 without billing:admin).
use strict;
use warnings;
use lib 't/lib';
use Test::Nginx::Socket 'no_plan';
use BillingTest;

# Blocks run shuffled: each works on its own user, user('tN'), and its own
# admin keys, key('tN...'), unique per run (admin keys share one namespace
# across users, and the ASan suite runs this file again on the same
# database). What a request must name (a usage entry) is made when the
# blocks are read.
our $U = "adm-" . time() . "-$$";
our $HttpConfig = qq{
    billing_database_url $ENV{TEST_NGINX_DATABASE_URL};
    billing_jwt_key file:$ENV{TEST_NGINX_JWT_PUBLIC_KEY_FILE};
    billing_jwt_issuer https://student-pilot.replit.app;
    billing_jwt_audience https://billing.scholarlink.app;
};
our $Config = q{
    error_page 404 405 413 @billing_error;
    location @billing_error { billing error; }
    location = /api/models { billing models; }
    location = /api/usage/reconcile { billing reconcile; }
    location = /api/admin/adjustments { billing admin_adjustments; }
    location /api/admin/usage { billing admin_usage; }
    location /api/admin/users { billing admin_users; }
    location /api/admin/models { billing admin_models; }
};

our $J = JSON::PP->new->canonical->utf8;
our $AdminTok = mint_token(sub => 'support-alice', scope => 'billing:admin');
our $Admin = "Content-Type: application/json\nAuthorization: Bearer $AdminTok";
our $Admin2 = "Content-Type: application/json\nAuthorization: Bearer "
            . mint_token(sub => 'support-bob', scope => 'openid billing:admin');
our $Svc = "Content-Type: application/json\nAuthorization: Bearer "
         . mint_token(sub => 'ai-backend', scope => 'billing:usage');

sub user { "$U-$_[0]" }
sub key { "$U-$_[0]" }
sub as_user { "Content-Type: application/json\nAuthorization: Bearer " . mint_token(sub => user($_[0])) }
sub fund { fund_user(user($_[0]), $_[1]) }
sub ledger { ledger_is(user($_[0]), $_[1], $_[2]) }
sub uri_escape { my $s = shift; $s =~ s/([^A-Za-z0-9._~-])/sprintf '%%%02X', ord $1/ge; $s }

sub adj {
    my ($id, %b) = @_;
    my %body = (userId => user($id), amountMicros => 1_000_000, reason => 'goodwill',
                idempotencyKey => key($id), %b);
    delete $body{$_} for grep { !defined $body{$_} } keys %body;
    return "POST /api/admin/adjustments\n" . $J->encode(\%body);
}

# a funded user with one usage entry (gpt-4o 1000/500 = 7500); its id
sub usage_entry {
    my ($id) = @_;
    fund($id, 1_000_000);
    my $out = psql_admin("SELECT body FROM billing.api_reconcile('" . user($id)
                         . "', 'gpt-4o', 1000, 500, 'use-1', NULL)");
    $out =~ /"entryId"\s*:\s*"(\d+)"/ or die "usage_entry($id): $out";
    return $1;
}

sub rev {
    my ($entry, $id, %b) = @_;
    my %body = (reason => 'the model failed', idempotencyKey => key($id), %b);
    delete $body{$_} for grep { !defined $body{$_} } keys %body;
    return "POST /api/admin/usage/$entry/reversal\n" . $J->encode(\%body);
}

sub price {
    my ($model, $id, %b) = @_;
    my %body = (inputMicrosPerMTok => 1_000_000, outputMicrosPerMTok => 2_000_000,
                idempotencyKey => key($id), %b);
    delete $body{$_} for grep { !defined $body{$_} } keys %body;
    return "PUT /api/admin/models/" . uri_escape($model) . "/price\n" . $J->encode(\%body);
}

# what an admin key recorded: "operation actor reason", '' when nothing
sub admin_request {
    psql_admin("SELECT coalesce((SELECT operation || ' ' || actor || ' ' || coalesce(reason, '-')
                FROM billing.admin_requests WHERE idempotency_key = " . sql_quote(key($_[0])) . "), '')");
}

sub prices_of {
    psql_admin("SELECT count(*) FROM billing.model_prices WHERE model = " . sql_quote($_[0]));
}

add_response_body_check(\&BillingTest::after_requests_check);
run_tests();

invariants_ok('invariants hold after the admin tests');

__DATA__

=== TEST 1: an adjustment credits, records the actor and the reason, answers in order
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- more_headers eval: $::Admin
--- request eval: main::adj('t1', amountMicros => 2_500_000, reason => 'goodwill credit after the outage')
--- error_code: 201
--- response_headers
!Idempotent-Replayed
Content-Type: application/json
--- response_body_like chomp
^\{"entryId":"\d+","userId":"adm-[^"]+-t1","type":"adjustment","amountMicros":2500000,"reason":"goodwill credit after the outage","actor":"support-alice","createdAt":"[0-9T:.-]+Z","balanceMicros":2500000\}$
--- no_error_log
[error]
--- after_requests
main::ledger('t1', 1, 2_500_000);
Test::More::is(main::admin_request('t1'), 'adjustment support-alice goodwill credit after the outage',
               'the admin request records the operation, the actor and the reason');



=== TEST 2: the same adjustment again, from a colleague, is a replay of the original
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- more_headers eval: [$::Admin, $::Admin2]
--- request eval: [main::adj('t2'), main::adj('t2')]
--- error_code eval: [201, 201]
--- response_headers eval
["!Idempotent-Replayed", "Idempotent-Replayed: true"]
--- response_body_like eval
['"actor":"support-alice","createdAt":"[^"]+","balanceMicros":1000000\}$',
 '"actor":"support-alice","createdAt":"[^"]+","balanceMicros":1000000\}$']
--- after_requests
main::ledger('t2', 1, 1_000_000);



=== TEST 3: the same key with another body is 409 and writes nothing
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- more_headers eval: $::Admin
--- request eval: [main::adj('t3'), main::adj('t3', amountMicros => 1_000_001), main::adj('t3', userId => main::user('t3-other'))]
--- error_code eval: [201, 409, 409]
--- response_headers eval
["Content-Type: application/json", "Content-Type: application/problem+json", "Content-Type: application/problem+json"]
--- response_body_like eval
['"amountMicros":1000000', '"code":"idempotency_key_reused"', '"code":"idempotency_key_reused"']
--- after_requests
main::ledger('t3', 1, 1_000_000);
main::ledger('t3-other', 0, 0);



=== TEST 4: the key may come as the Idempotency-Key header; both and different is 400
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- more_headers eval
[$::Admin . "\nIdempotency-Key: " . main::key('t4-h'),
 $::Admin . "\nIdempotency-Key: " . main::key('t4-other')]
--- request eval: [main::adj('t4', idempotencyKey => undef), main::adj('t4', idempotencyKey => main::key('t4-body'))]
--- error_code eval: [201, 400]
--- response_body_like eval
['"type":"adjustment"', '"detail":"idempotencyKey: differs from the Idempotency-Key header","code":"invalid_request"']
--- after_requests
main::ledger('t4', 1, 1_000_000);
Test::More::like(main::admin_request('t4-h'), qr/^adjustment /, 'the header key was recorded');



=== TEST 5: a debit beyond the available balance (balance minus holds) is 402 and writes nothing
1,000,000 funded, 300,000 held: 700,000 available.
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- init
main::fund('t5', 1_000_000);
BillingTest::psql_admin("SELECT billing.api_hold_create('$::U-t5', 300000, 'h-1', 600)");
--- more_headers eval: $::Admin
--- request eval: [main::adj('t5', amountMicros => -700_001, reason => 'clawback'), main::adj('t5', amountMicros => -700_000, reason => 'clawback', idempotencyKey => main::key('t5-b'))]
--- error_code eval: [402, 201]
--- response_body_like eval
['"detail":"Debit of 700001 micros exceeds the available balance of 700000 micros","code":"insufficient_credits"',
 '"type":"adjustment","amountMicros":-700000,"reason":"clawback","actor":"support-alice","createdAt":"[^"]+","balanceMicros":300000\}$']
--- after_requests
main::ledger('t5', 2, 300_000);
Test::More::is(main::admin_request('t5'), '', 'the refused debit recorded no key');



=== TEST 6: bad input is 400 with the rule's words and writes nothing
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- more_headers eval: $::Admin
--- request eval
[main::adj('t6', amountMicros => 0),
 main::adj('t6', amountMicros => 1_000_000_000_000_001),
 main::adj('t6', amountMicros => 1.5),
 main::adj('t6', reason => undef),
 main::adj('t6', reason => ''),
 main::adj('t6', reason => 'x' x 501),
 main::adj('t6', userId => ''),
 main::adj('t6', idempotencyKey => 'has space'),
 "POST /api/admin/adjustments\n{\"userId\":",
 "POST /api/admin/adjustments\n[1]"]
--- error_code eval: [(400) x 10]
--- response_body_like eval
['"detail":"amountMicros: must not be 0"',
 '"detail":"amountMicros: must be an integer between -1000000000000000 and 1000000000000000"',
 '"detail":"amountMicros: must be an integer"',
 '"detail":"reason: field is required"',
 '"detail":"reason: must be 1 to 500 characters"',
 '"detail":"reason: must be 1 to 500 characters"',
 '"detail":"userId: must be 1 to 255 bytes without control characters"',
 '"detail":"idempotencyKey: must be 1 to 255 printable ASCII characters without spaces"',
 '"detail":"request body must be a JSON object"',
 '"detail":"request body must be a JSON object"']
--- after_requests
main::ledger('t6', 0, 0);
Test::More::is(main::admin_request('t6'), '', 'no admin request recorded');



=== TEST 7: 500 characters of reason are enough, not bytes: é is one
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- more_headers eval: $::Admin
--- request eval: main::adj('t7', reason => "\x{e9}" x 500)
--- error_code: 201
--- after_requests
main::ledger('t7', 1, 1_000_000);



=== TEST 8: who may adjust: no token 401, a user 403, the AI backend 403; nothing written
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- more_headers eval
["Content-Type: application/json", main::as_user('t8'), $::Svc]
--- request eval: [main::adj('t8'), main::adj('t8'), main::adj('t8')]
--- error_code eval: [401, 403, 403]
--- response_headers eval
['WWW-Authenticate: Bearer realm="billing"',
 'WWW-Authenticate: Bearer realm="billing", error="insufficient_scope", scope="billing:admin"',
 'WWW-Authenticate: Bearer realm="billing", error="insufficient_scope", scope="billing:admin"']
--- response_body_like eval
['"code":"unauthorized"', '"code":"insufficient_scope"', '"code":"insufficient_scope"']
--- after_requests
main::ledger('t8', 0, 0);



=== TEST 9: an adjustment is a POST; a body that is not JSON is 415
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- more_headers eval: [$::Admin, "Content-Type: text/plain\nAuthorization: Bearer $::AdminTok"]
--- request eval: ["GET /api/admin/adjustments", main::adj('t9')]
--- error_code eval: [405, 415]
--- response_headers eval
["Allow: POST", "Content-Type: application/problem+json"]
--- response_body_like eval
['"code":"method_not_allowed"', '"code":"unsupported_media_type"']
--- after_requests
main::ledger('t9', 0, 0);



=== TEST 10: a usage reversal credits back exactly the charge, once; a replay answers the original
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- more_headers eval: [$::Admin, $::Admin2, $::Admin]
--- request eval
my $e = main::usage_entry('t10');
[main::rev($e, 't10'), main::rev($e, 't10'), main::rev($e, 't10-again', reason => 'again')]
--- error_code eval: [201, 201, 409]
--- response_headers eval
["!Idempotent-Replayed", "Idempotent-Replayed: true", "Content-Type: application/problem+json"]
--- response_body_like eval
['^\{"entryId":"\d+","userId":"adm-[^"]+-t10","type":"usage_reversal","reversedEntryId":"\d+","amountMicros":7500,"reason":"the model failed","actor":"support-alice","createdAt":"[^"]+","balanceMicros":1000000\}$',
 '"type":"usage_reversal".*"actor":"support-alice"',
 '"detail":"Usage entry \d+ was already reversed by entry \d+","code":"already_reversed"']
--- after_requests
main::ledger('t10', 3, 1_000_000);
Test::More::like(main::admin_request('t10'), qr/^usage_reversal support-alice the model failed$/, 'recorded');



=== TEST 11: the reversal key with another entry or reason is 409
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- more_headers eval: $::Admin
--- request eval
my $e = main::usage_entry('t11');
[main::rev($e, 't11'), main::rev($e, 't11', reason => 'other words')]
--- error_code eval: [201, 409]
--- response_body_like eval
['"amountMicros":7500', '"code":"idempotency_key_reused"']
--- after_requests
main::ledger('t11', 3, 1_000_000);



=== TEST 12: what is no usage entry is 404: unknown, a purchase credit, not a number
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- init
main::fund('t12', 1_000_000);
--- more_headers eval: $::Admin
--- request eval
my $credit = BillingTest::psql_admin("SELECT min(id) FROM billing.ledger_entries WHERE type = 'purchase'");
[main::rev('9223372036854775807', 't12'), main::rev($credit, 't12'), main::rev('12ab', 't12'),
 main::rev('012', 't12'), "POST /api/admin/usage/1/undo\n{}", "POST /api/admin/usage/1/reversal/x\n{}",
 "POST /api/admin/usage\n{}"]
--- error_code eval: [(404) x 7]
--- response_headers eval
[("Content-Type: application/problem+json") x 7]
--- response_body_like eval
['"detail":"No usage entry 9223372036854775807","code":"not_found"', '"code":"not_found"',
 '"detail":"no such usage entry"', '"detail":"no such usage entry"',
 '"detail":"no such resource"', '"detail":"no such resource"', '"code":"not_found"']
--- after_requests
main::ledger('t12', 1, 1_000_000);
Test::More::is(main::admin_request('t12'), '', 'no admin request recorded');



=== TEST 13: a reversal needs a reason and billing:admin
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- more_headers eval: [$::Admin, main::as_user('t13'), "Content-Type: application/json"]
--- request eval
my $e = main::usage_entry('t13');
[main::rev($e, 't13', reason => undef), main::rev($e, 't13'), main::rev($e, 't13')]
--- error_code eval: [400, 403, 401]
--- response_body_like eval
['"detail":"reason: field is required"', '"code":"insufficient_scope"', '"code":"unauthorized"']
--- after_requests
main::ledger('t13', 2, 992_500);



=== TEST 14: support reads a user's balance and ledger, as the user would
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- init
main::fund('t14', 1_000_000);
BillingTest::psql_admin("SELECT billing.api_reconcile('$::U-t14', 'gpt-4o', 1000, 500, 'use-1', NULL)");
--- more_headers eval: $::Admin
--- request eval
["GET /api/admin/users/" . main::user('t14') . "/balance",
 "GET /api/admin/users/" . main::user('t14') . "/ledger?limit=1",
 "GET /api/admin/users/" . main::user('t14') . "/ledger?limit=0"]
--- error_code eval: [200, 200, 400]
--- response_body_like eval
['^\{"userId":"adm-[^"]+-t14","balanceMicros":992500,"heldMicros":0,"availableMicros":992500\}$',
 '^\{"balanceMicros":992500,"entries":\[\{"id":"\d+","type":"usage","amountMicros":-7500,[^\]]*\}\],"nextCursor":"[A-Za-z0-9_-]+"\}$',
 '"detail":"limit must be an integer from 1 to 200"']



=== TEST 15: a user id with a slash, sent as %2F, is one id
Decoded from the path as sent: %2F%2E%2E stays part of the id (nginx's URI
would have resolved it); nginx itself refuses %00 (400) before any location.
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- init
BillingTest::fund_user("$::U-t15/a b", 3_000_000);
BillingTest::fund_user("$::U-t15", 1_000_000);
--- more_headers eval: $::Admin
--- request eval
["GET /api/admin/users/" . main::uri_escape("$::U-t15/a b") . "/balance",
 "GET /api/admin/users/" . main::uri_escape("$::U-t15") . "/x/balance",
 "GET /api/admin/users/" . main::uri_escape("$::U-t15") . "%2F%2E%2E/balance",
 "GET /api/admin/users/%00/balance",
 "GET /api/admin/users/%C3/balance",
 "GET /api/admin/users/" . main::uri_escape("$::U-t15") . "/holds",
 "GET /api/admin/users//balance",
 "GET /api/admin/users"]
--- error_code eval: [200, 404, 200, 400, 404, 404, 404, 404]
--- response_body_like eval
['^\{"userId":"adm-[^"]+-t15/a b","balanceMicros":3000000,',
 '"detail":"no such resource"', '"userId":"adm-[^"]+-t15/\.\.","balanceMicros":0,', '400',
 '"code":"not_found"', '"detail":"no such resource"', '"code":"not_found"', '"code":"not_found"']



=== TEST 16: a user's views need billing:admin; a user may not read another's this way
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- init
main::fund('t16', 1_000_000);
--- more_headers eval: [main::as_user('t16-other'), main::as_user('t16'), ""]
--- request eval
["GET /api/admin/users/" . main::user('t16') . "/balance",
 "GET /api/admin/users/" . main::user('t16') . "/ledger",
 "GET /api/admin/users/" . main::user('t16') . "/balance"]
--- error_code eval: [403, 403, 401]
--- response_body_like eval
['"code":"insufficient_scope"', '"code":"insufficient_scope"', '"code":"unauthorized"']



=== TEST 17: a new price version creates a model (a slash in its name is %2F); in force now, it prices usage
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- init
main::fund('t17', 1_000_000);
--- more_headers eval: [$::Admin, "", $::Svc]
--- request eval
["PUT /api/admin/models/" . main::uri_escape("$::U/t17-model") . "/price\n"
     . $::J->encode({ inputMicrosPerMTok => 3_000_000, outputMicrosPerMTok => 4_000_000,
                      idempotencyKey => main::key('t17'), reason => 'launch' }),
 "GET /api/models",
 "POST /api/usage/reconcile\n" . $::J->encode({ userId => main::user('t17'), model => "$::U/t17-model",
     inputTokens => 100_000, outputTokens => 100_000, idempotencyKey => 'use-1' })]
--- error_code eval: [201, 200, 201]
--- response_body_like eval
['^\{"model":"adm-[^"]+/t17-model","inputMicrosPerMTok":3000000,"outputMicrosPerMTok":4000000,"effectiveFrom":"[0-9T:.-]+Z"\}$',
 '\{"model":"adm-[^"]+/t17-model","inputMicrosPerMTok":3000000,"outputMicrosPerMTok":4000000,"effectiveFrom":"[0-9T:.-]+Z"\}',
 '"model":"adm-[^"]+/t17-model","inputTokens":100000,"outputTokens":100000,"chargedMicros":700000,']
--- after_requests
Test::More::is(main::prices_of("$::U/t17-model"), 1, 'one price version');
Test::More::is(main::admin_request('t17'), 'model_price support-alice launch', 'recorded');



=== TEST 18: a future version is not in force yet; the same key again is a replay, another body 409
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- more_headers eval: $::Admin
--- request eval
[main::price("$::U-t18", 't18', effectiveFrom => '2999-01-01T00:00:00+02:00'),
 main::price("$::U-t18", 't18', effectiveFrom => '2999-01-01T00:00:00+02:00'),
 main::price("$::U-t18", 't18', effectiveFrom => '2999-01-01T00:00:01+02:00'),
 "GET /api/models"]
--- error_code eval: [201, 201, 409, 200]
--- response_headers eval
["!Idempotent-Replayed", "Idempotent-Replayed: true", "Content-Type: application/problem+json", "!Idempotent-Replayed"]
--- response_body_like eval
['"effectiveFrom":"2998-12-31T22:00:00.000000Z"\}$', '"effectiveFrom":"2998-12-31T22:00:00.000000Z"\}$',
 '"code":"idempotency_key_reused"', '^\{"models":\[(?!.*adm-[^"]+-t18).*\]\}$']
--- after_requests
Test::More::is(main::prices_of("$::U-t18"), 1, 'one price version');



=== TEST 19: no retroactive pricing (422); one version per instant (409); nothing written
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- init
BillingTest::psql_admin("SELECT billing.api_admin_model_price('x', '$::U-t19', 1, 1, '2999-01-01T00:00:00Z', NULL, '$::U-t19-seed')");
--- more_headers eval: $::Admin
--- request eval
[main::price("$::U-t19", 't19', effectiveFrom => '2020-01-01T00:00:00Z'),
 main::price("$::U-t19", 't19', effectiveFrom => '2999-01-01T00:00:00Z')]
--- error_code eval: [422, 409]
--- response_body_like eval
['"detail":"effectiveFrom 2020-01-01T00:00:00.000000Z is in the past; a price never changes retroactively","code":"retroactive_price"',
 '"code":"price_version_exists"']
--- after_requests
Test::More::is(main::prices_of("$::U-t19"), 1, 'only the seeded version');
Test::More::is(main::admin_request('t19'), '', 'no admin request recorded');



=== TEST 20: bad prices are 400, nothing written
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- more_headers eval: $::Admin
--- request eval
[main::price("$::U-t20", 't20', inputMicrosPerMTok => -1),
 main::price("$::U-t20", 't20', outputMicrosPerMTok => 1_000_000_000_001),
 main::price("$::U-t20", 't20', outputMicrosPerMTok => undef),
 main::price("$::U-t20", 't20', effectiveFrom => 'tomorrow'),
 main::price("$::U-t20", 't20', effectiveFrom => '2999-02-30T00:00:00Z'),
 main::price("$::U-t20", 't20', effectiveFrom => 'x' x 65),
 main::price("$::U-t20", 't20', reason => ''),
 main::price('m' x 129, 't20'),
 main::price("$::U-t20", 't20', idempotencyKey => undef)]
--- error_code eval: [(400) x 9]
--- response_body_like eval
['"detail":"inputMicrosPerMTok: must be an integer between 0 and 1000000000000"',
 '"detail":"outputMicrosPerMTok: must be an integer between 0 and 1000000000000"',
 '"detail":"outputMicrosPerMTok: field is required"',
 '"detail":"effectiveFrom: must be an RFC 3339 date-time with a time zone, such as 2026-01-01T00:00:00Z"',
 '"detail":"effectiveFrom: must be an RFC 3339 date-time with a time zone, such as 2026-01-01T00:00:00Z"',
 '"detail":"effectiveFrom: must be an RFC 3339 date-time with a time zone, such as 2026-01-01T00:00:00Z"',
 '"detail":"reason: must be 1 to 500 characters"',
 '"detail":"model: must be 1 to 128 characters"',
 '"detail":"idempotencyKey: field or Idempotency-Key header is required"']
--- after_requests
Test::More::is(main::prices_of("$::U-t20"), 0, 'no price version');
Test::More::is(main::admin_request('t20'), '', 'no admin request recorded');



=== TEST 21: prices need billing:admin and a PUT; the collection names nothing
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- more_headers eval: [main::as_user('t21'), $::Svc, $::Admin, $::Admin, $::Admin]
--- request eval
[main::price("$::U-t21", 't21'), main::price("$::U-t21", 't21'),
 "POST /api/admin/models/$::U-t21/price\n{}", "PUT /api/admin/models/$::U-t21/cost\n{}",
 "GET /api/admin/models"]
--- error_code eval: [403, 403, 405, 404, 404]
--- response_headers eval
['WWW-Authenticate: Bearer realm="billing", error="insufficient_scope", scope="billing:admin"',
 'Content-Type: application/problem+json', 'Allow: PUT', 'Content-Type: application/problem+json',
 'Content-Type: application/problem+json']
--- response_body_like eval
['"code":"insufficient_scope"', '"code":"insufficient_scope"', '"code":"method_not_allowed"',
 '"detail":"no such resource"', '"code":"not_found"']
--- after_requests
Test::More::is(main::prices_of("$::U-t21"), 0, 'no price version');



=== TEST 22: the models are public: the seeded prices of docs/spec.md §2 are in force
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- request
GET /api/models
--- error_code: 200
--- response_headers
Content-Type: application/json
--- response_body_like chomp
^\{"models":\[.*\{"model":"gpt-4o","inputMicrosPerMTok":2500000,"outputMicrosPerMTok":10000000,"effectiveFrom":"2024-01-01T00:00:00\.000000Z"\},\{"model":"gpt-4o-mini","inputMicrosPerMTok":150000,"outputMicrosPerMTok":600000,"effectiveFrom":"2024-01-01T00:00:00\.000000Z"\}.*\]\}$



=== TEST 23: the shipped exposure: an allow-list in front of admin answers 403 problem+json, whatever the token
The production config lets /api/admin/ answer loopback only
(deployment/billing/configmap.yaml); here no address is allowed.
--- http_config eval: $::HttpConfig
--- config
error_page 403 404 405 @billing_error;
location @billing_error { billing error; }
location = /api/admin/adjustments { allow 192.0.2.1; deny all; billing admin_adjustments; }
--- more_headers eval: $::Admin
--- request eval: main::adj('t23')
--- error_code: 403
--- response_headers
Content-Type: application/problem+json
--- response_body_like chomp
"status":403,"detail":"access denied","code":"forbidden"\}$
--- after_requests
main::ledger('t23', 0, 0);
