# The user's views beyond balance and ledger: the usage summary (docs/spec.md
# §4.6) and the purchase list (§4), end to end.
use strict;
use warnings;
use lib 't/lib';
use Test::Nginx::Socket 'no_plan';
use BillingTest;
use MIME::Base64 qw(encode_base64url);
use POSIX qw(strftime);

# Blocks run shuffled: each works on its own user, user('tN'). Usage at a
# chosen time is written as api_reconcile writes it (the API always writes
# now()); purchases are made when the blocks are read, so the requests can
# name them.
our $U = "view-" . time() . "-$$";
our $HttpConfig = qq{
    billing_database_url $ENV{TEST_NGINX_DATABASE_URL};
    billing_jwt_key file:$ENV{TEST_NGINX_JWT_PUBLIC_KEY_FILE};
    billing_jwt_issuer https://student-pilot.replit.app;
    billing_jwt_audience https://billing.scholarlink.app;
};
our $Config = q{
    error_page 404 405 @billing_error;
    location @billing_error { billing error; }
    location = /api/usage/summary { billing usage_summary; }
    location /api/purchases { billing purchases; }
};

sub user { "$U-$_[0]" }
sub as_user { "Authorization: Bearer " . mint_token(sub => user($_[0])) }
sub today { strftime('%Y-%m-%d', gmtime) }

# a usage entry of user('id') at time $at (UTC), priced as in force now
sub usage_at {
    my ($id, $at, $model, $in, $out) = @_;
    my $u = sql_quote(user($id));
    psql_admin(<<"SQL");
WITH p AS (SELECT * FROM billing.model_prices WHERE model = '$model' AND effective_from <= now()
            ORDER BY effective_from DESC LIMIT 1),
     c AS (SELECT p.id, billing._charge($in, $out, p.input_micros_per_mtok, p.output_micros_per_mtok) AS charge FROM p),
     a AS (UPDATE billing.accounts SET balance_micros = balance_micros - (SELECT charge FROM c)
            WHERE user_id = $u RETURNING balance_micros)
INSERT INTO billing.ledger_entries (user_id, type, amount_micros, balance_after_micros, idempotency_key,
                                    request_fingerprint, price_id, model, input_tokens, output_tokens, created_at)
SELECT $u, 'usage', -c.charge, a.balance_micros, 'at-' || gen_random_uuid(), 'fp', c.id, '$model', $in, $out,
       '$at'::timestamptz
  FROM c, a
SQL
}

# the id of the last usage entry of a user
sub last_usage {
    psql_admin("SELECT max(id) FROM billing.ledger_entries WHERE type = 'usage' AND user_id = "
               . sql_quote(user($_[0])));
}

# a pending purchase of user('id'), made now; its id
sub purchase {
    my ($id, $package) = @_;
    my $out = psql_admin("SELECT body FROM billing.api_purchase_create(" . sql_quote(user($id))
                         . ", '$package')");
    $out =~ /"purchaseId"\s*:\s*"([0-9a-f-]{36})"/ or die "purchase($id): $out";
    return $1;
}

sub cursor_of { encode_base64url("p1:$_[0]") }

# a purchase with a chosen id, made $ago before now
sub purchase_at {
    my ($id, $uuid, $ago) = @_;
    psql_admin("INSERT INTO billing.purchases (id, user_id, package_code, amount_cents, credits_micros, created_at)
                VALUES ('$uuid', " . sql_quote(user($id)) . ", 'starter', 500, 5000000, now() - interval '$ago')");
}

our @P7 = (uuid_v4(), uuid_v4());

add_response_body_check(\&BillingTest::after_requests_check);
run_tests();

invariants_ok('invariants hold after the view tests');

__DATA__

=== TEST 1: the summary by UTC day: both ends included, midnight in UTC, net of reversals
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- init
BillingTest::fund_user(main::user('t1'), 100_000_000);
main::usage_at('t1', '2025-02-28T23:59:59.999999Z', 'gpt-4o', 1000, 500);      # 7500
main::usage_at('t1', '2025-03-01T00:00:00Z', 'gpt-4o', 2000, 0);              # 5000
main::usage_at('t1', '2025-03-01T12:00:00+05:00', 'gpt-4o-mini', 1000000, 0); # 150000
main::usage_at('t1', '2025-03-01T23:00:00Z', 'gpt-4o', 4000, 0);              # 10000, reversed
BillingTest::psql_admin("SELECT billing.api_admin_usage_reversal('support', " . main::last_usage('t1')
                        . ", 'outage', '$::U-t1')");
main::usage_at('t1', '2025-03-02T00:00:00Z', 'o3-mini', 1000, 1000);          # 5500
main::usage_at('t1', '2025-03-03T00:00:00Z', 'o3-mini', 1000, 1000);          # after the range
--- more_headers eval: main::as_user('t1')
--- request
GET /api/usage/summary?from=2025-02-28&to=2025-03-02&groupBy=day
--- error_code: 200
--- response_headers
Content-Type: application/json
--- response_body chomp
{"from":"2025-02-28","to":"2025-03-02","groupBy":"day","groups":[{"key":"2025-02-28","requests":1,"inputTokens":1000,"outputTokens":500,"chargedMicros":7500},{"key":"2025-03-01","requests":2,"inputTokens":1002000,"outputTokens":0,"chargedMicros":155000},{"key":"2025-03-02","requests":1,"inputTokens":1000,"outputTokens":1000,"chargedMicros":5500}]}



=== TEST 2: the summary by model; groupBy defaults to day; only the caller's usage
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- init
BillingTest::fund_user(main::user('t2'), 100_000_000);
BillingTest::fund_user(main::user('t2-other'), 100_000_000);
main::usage_at('t2', '2025-06-01T10:00:00Z', 'gpt-4o', 1000, 500);
main::usage_at('t2', '2025-06-20T10:00:00Z', 'gpt-4o', 1000, 500);
main::usage_at('t2', '2025-06-20T11:00:00Z', 'claude-3-5-haiku', 10000, 1000);
main::usage_at('t2-other', '2025-06-20T10:00:00Z', 'gpt-4o', 1000, 500);
--- more_headers eval: main::as_user('t2')
--- request eval
["GET /api/usage/summary?from=2025-06-01&to=2025-06-30&groupBy=model",
 "GET /api/usage/summary?from=2025-06-20&to=2025-06-20",
 "GET /api/usage/summary?from=2025-07-01&to=2025-07-31"]
--- error_code eval: [200, 200, 200]
--- response_body eval
['{"from":"2025-06-01","to":"2025-06-30","groupBy":"model","groups":[{"key":"claude-3-5-haiku","requests":1,"inputTokens":10000,"outputTokens":1000,"chargedMicros":12000},{"key":"gpt-4o","requests":2,"inputTokens":2000,"outputTokens":1000,"chargedMicros":15000}]}',
 '{"from":"2025-06-20","to":"2025-06-20","groupBy":"day","groups":[{"key":"2025-06-20","requests":2,"inputTokens":11000,"outputTokens":1500,"chargedMicros":19500}]}',
 '{"from":"2025-07-01","to":"2025-07-31","groupBy":"day","groups":[]}']



=== TEST 3: today's usage through the API shows up today
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- init
BillingTest::fund_user(main::user('t3'), 1_000_000);
BillingTest::psql_admin("SELECT billing.api_reconcile('$::U-t3', 'gpt-4o', 1000, 500, 'k1', NULL)");
--- more_headers eval: main::as_user('t3')
--- request eval: "GET /api/usage/summary?from=" . main::today() . "&to=" . main::today() . "&groupBy=model"
--- error_code: 200
--- response_body_like chomp
"groups":\[\{"key":"gpt-4o","requests":1,"inputTokens":1000,"outputTokens":500,"chargedMicros":7500\}\]\}$



=== TEST 4: bad ranges and values are 400 with the rule's words
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- more_headers eval: main::as_user('t4')
--- request eval
["GET /api/usage/summary?to=2025-01-01",
 "GET /api/usage/summary?from=2025-01-01",
 "GET /api/usage/summary?from=2025-02-29&to=2025-03-01",
 "GET /api/usage/summary?from=2025-01-01&to=2025-1-2",
 "GET /api/usage/summary?from=2025-01-02&to=2025-01-01",
 "GET /api/usage/summary?from=2025-01-01&to=2026-01-02",
 "GET /api/usage/summary?from=2025-01-01&to=2025-01-02&groupBy=week",
 "GET /api/usage/summary?from=&to=2025-01-02",
 "GET /api/usage/summary?from=2024-01-01&to=2024-12-31&groupBy=model"]
--- error_code eval: [400, 400, 400, 400, 400, 400, 400, 400, 200]
--- response_body_like eval
['"detail":"from: field is required","code":"invalid_request"',
 '"detail":"to: field is required"',
 '"detail":"from: must be a date YYYY-MM-DD"',
 '"detail":"to: must be a date YYYY-MM-DD"',
 '"detail":"to: must not be before from"',
 '"detail":"from..to: must span at most 366 days"',
 '"detail":"groupBy: must be day or model"',
 '"detail":"from: must be a date YYYY-MM-DD"',
 '"groups":\[\]']



=== TEST 5: the summary needs a user token, and a GET
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- more_headers eval: ["", main::as_user('t5')]
--- request eval
["GET /api/usage/summary?from=2025-01-01&to=2025-01-01", "POST /api/usage/summary\n{}"]
--- error_code eval: [401, 405]
--- response_headers eval
['WWW-Authenticate: Bearer realm="billing"', "Allow: GET, HEAD"]



=== TEST 6: the purchase list, newest first, in pages with an opaque cursor
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- more_headers eval: main::as_user('t6')
--- request eval
my @p = map { main::purchase('t6', $_) } qw(starter standard pro);
["GET /api/purchases?limit=2", "GET /api/purchases?limit=2&cursor=" . main::cursor_of($p[1]),
 "GET /api/purchases"]
--- error_code eval: [200, 200, 200]
--- response_body_like eval
['^\{"purchases":\[\{"purchaseId":"[0-9a-f-]{36}","packageCode":"pro","amountCents":5000,"currency":"usd","creditsMicros":55000000,"status":"pending","checkoutSessionId":null,"checkoutUrl":null,"refundedMicros":0,"createdAt":"[0-9T:.-]+Z","updatedAt":"[0-9T:.-]+Z"\},\{"purchaseId":"[0-9a-f-]{36}","packageCode":"standard",[^\]]*\}\],"nextCursor":"[A-Za-z0-9_-]{52}"\}$',
 '^\{"purchases":\[\{"purchaseId":"[0-9a-f-]{36}","packageCode":"starter",[^\]]*\}\],"nextCursor":null\}$',
 '^\{"purchases":\[\{[^\]]*"packageCode":"pro".*"packageCode":"standard".*"packageCode":"starter"[^\]]*\}\],"nextCursor":null\}$']



=== TEST 7: the first page's cursor names the last purchase it shows
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- init
main::purchase_at('t7', $::P7[0], '1 minute');
main::purchase_at('t7', $::P7[1], '0 minutes');
--- more_headers eval: main::as_user('t7')
--- request
GET /api/purchases?limit=1
--- error_code: 200
--- response_body_like eval
'^\{"purchases":\[\{"purchaseId":"' . $::P7[1] . '",[^\]]*\}\],"nextCursor":"' . main::cursor_of($::P7[1]) . '"\}$'



=== TEST 8: a cursor of someone else's purchase, a forged one, a bad limit: 400, a user sees only theirs
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- more_headers eval: main::as_user('t8')
--- request eval
my $other = main::purchase('t8-other', 'starter');
["GET /api/purchases?cursor=" . main::cursor_of($other), "GET /api/purchases?cursor=YzE6MQ",
 "GET /api/purchases?limit=0", "GET /api/purchases?limit=201", "GET /api/purchases"]
--- error_code eval: [400, 400, 400, 400, 200]
--- response_body_like eval
['"detail":"cursor is not valid"', '"detail":"cursor is not valid"',
 '"detail":"limit must be an integer from 1 to 200"', '"detail":"limit must be an integer from 1 to 200"',
 '^\{"purchases":\[\],"nextCursor":null\}$']



=== TEST 9: the list needs a token; the collection takes GET, HEAD and POST
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- more_headers eval: ["", main::as_user('t9')]
--- request eval: ["GET /api/purchases", "DELETE /api/purchases"]
--- error_code eval: [401, 405]
--- response_headers eval
['WWW-Authenticate: Bearer realm="billing"', "Allow: GET, HEAD, POST"]
