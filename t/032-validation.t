# One rule per field (docs/api.md, "Validation rules"): the database's rule
# decides (sql/functions/_rules.sql), the module refuses early only what the
# database refuses too, with the same status, code and detail. Each block
# uses its own user; what a refused request must not have written is checked
# after the blocks, per user.
use strict;
use warnings;
use lib 't/lib';
use Test::Nginx::Socket 'no_plan';
use BillingTest;
use JSON::PP ();

our $U = "val-" . time() . "-$$";
our $HttpConfig = qq{
    billing_database_url $ENV{TEST_NGINX_DATABASE_URL};
    billing_jwt_key file:$ENV{TEST_NGINX_JWT_PUBLIC_KEY_FILE};
    billing_jwt_issuer https://student-pilot.replit.app;
    billing_jwt_audience https://billing.scholarlink.app;
    billing_stripe_secret_key sk_test_never_called;
    billing_stripe_api_url http://127.0.0.1:9/;
    billing_checkout_urls success=https://example.test/ok cancel=https://example.test/no;
};
our $Config = q{
    location = /api/ledger { billing ledger; }
    location = /api/usage/reconcile { billing reconcile; }
    location /api/usage/holds { billing holds; }
    location /api/purchases { billing purchases; }
};

our $Json = JSON::PP->new->utf8->canonical;
our $Svc = "Content-Type: application/json\nAuthorization: Bearer "
         . mint_token(sub => 'ai-backend', scope => 'billing:usage');
sub user_auth { "Content-Type: application/json\nAuthorization: Bearer " . mint_token(sub => $_[0]) }

# a reconcile for user "$U-$tag"; fields override the defaults
sub reconcile {
    my ($tag, %f) = @_;
    my %b = (userId => "$U-$tag", model => 'gpt-4o', inputTokens => 1000,
             outputTokens => 500, idempotencyKey => "k-$tag", %f);
    delete $b{$_} for grep { !defined $b{$_} } keys %b;
    return "POST /api/usage/reconcile\n" . $Json->encode(\%b);
}

sub hold {
    my ($tag, %f) = @_;
    my %b = (userId => "$U-$tag", amountMicros => 1000, idempotencyKey => "h-$tag", %f);
    return "POST /api/usage/holds\n" . $Json->encode(\%b);
}

# the problem a refusal answers: status, code and the rule's exact detail
sub problem {
    my ($status, $code, $detail) = @_;
    my $d = $Json->encode([$detail]);
    $d =~ s/^\[|\]$//g;
    return '^\{.*"status":' . $status . ',"detail":' . quotemeta($d) . ',"code":"' . $code . '"\}$';
}

# user ids of two-byte characters: 255 bytes (fewer characters), and 256
our $Id255 = "$U-" . ("\xc3\xa9" x int((255 - length "$U-") / 2));
$Id255 .= 'u' x (255 - length $Id255);
our $Id256 = $Id255 . 'x';

fund_user("$U-$_", 10_000_000) for qw(space chars long long-utf8 empty ctrl tokens tokstr key keyhdr
                                      amount ttl ttlnull holdid holdnone);
fund_user($Id255, 10_000_000);

run_tests();

# what the refused requests must not have written
is(entries_of("$U-$_"), 1, "$_: the refused request wrote nothing")
    for qw(space chars long long-utf8 empty ctrl tokens tokstr key keyhdr amount ttl holdid holdnone);
is(entries_of($Id255), 2, 'a 255-byte user id: charged once');
is(psql_admin("SELECT count(*) FROM billing.holds WHERE user_id IN ('$U-amount', '$U-ttl')"), 0,
   'refused holds wrote no hold');
is(psql_admin("SELECT count(*) FROM billing.holds WHERE user_id = '$U-ttlnull'"
              . " AND expires_at - created_at = interval '600 seconds'"), 1,
   'a null ttlSeconds is the default, 600 s');
is(psql_admin("SELECT count(*) FROM billing.accounts WHERE user_id LIKE "
              . sql_quote("$U-%") . " AND user_id NOT IN ("
              . join(', ', map { sql_quote("$U-$_") } qw(space chars long long-utf8 empty ctrl
                 tokens tokstr key keyhdr amount ttl ttlnull holdid holdnone)) . ', '
              . sql_quote($Id255) . ')'), 0,
   'no account was opened by a refused request');
is(psql_admin("SELECT count(*) FROM billing.purchases WHERE user_id IN ('$U-pkg', '$U-pkg2')"), 0,
   'refused purchases wrote no purchase');
invariants_ok('invariants hold after the validation tests');

__DATA__

=== TEST 1: model: a trailing space makes another name, unknown to the price list (422)
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- more_headers eval: $::Svc
--- request eval: main::reconcile('space', model => 'gpt-4o ')
--- error_code: 422
--- response_body_like chomp
"status":422,"detail":"Unknown model gpt-4o ","code":"unknown_model"\}$



=== TEST 2: model: any characters are a name; the database says it is unknown (422)
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- more_headers eval: $::Svc
--- request eval: main::reconcile('chars', model => "GPT-4o/preview?x=1 mod\x{e8}le")
--- error_code: 422
--- response_body_like chomp
"code":"unknown_model"



=== TEST 3: model: 129 characters is longer than any model can be (400, the database's detail)
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- more_headers eval: $::Svc
--- request eval: main::reconcile('long', model => 'm' x 129)
--- error_code: 400
--- response_body_like eval: main::problem(400, 'invalid_request', 'model: must be 1 to 128 characters')



=== TEST 4: model: 128 characters of 4 bytes still reach the database (422)
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- more_headers eval: $::Svc
--- request eval: main::reconcile('long-utf8', model => "\x{1F600}" x 128)
--- error_code: 422
--- response_body_like chomp
"code":"unknown_model"



=== TEST 5: model: empty is 400 with the database's detail
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- more_headers eval: $::Svc
--- request eval: main::reconcile('empty', model => '')
--- error_code: 400
--- response_body_like eval: main::problem(400, 'invalid_request', 'model: must be 1 to 128 characters')



=== TEST 6: userId: a control character is 400 with the database's detail
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- more_headers eval: $::Svc
--- request eval: main::reconcile('ctrl', userId => "$::U-ctrl\x{85}")
--- error_code: 400
--- response_body_like eval: main::problem(400, 'invalid_request', 'userId: must be 1 to 255 bytes without control characters')



=== TEST 7: userId: 256 bytes is 400 even when it is fewer characters (bytes count, as in the database)
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- more_headers eval: $::Svc
--- request eval
"POST /api/usage/reconcile\n" . qq({"userId":"$::Id256","model":"gpt-4o","inputTokens":1,"outputTokens":1,"idempotencyKey":"k-256"})
--- error_code: 400
--- response_body_like eval: main::problem(400, 'invalid_request', 'userId: must be 1 to 255 bytes without control characters')



=== TEST 8: userId: 255 bytes of UTF-8 is a user
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- more_headers eval: $::Svc
--- request eval
"POST /api/usage/reconcile\n" . qq({"userId":"$::Id255","model":"gpt-4o","inputTokens":1000,"outputTokens":500,"idempotencyKey":"k-255"})
--- error_code: 201
--- response_body_like chomp
"chargedMicros":7500,"balanceMicros":9992500,"replayed":false\}$



=== TEST 9: inputTokens above 10^9 is 400 with the database's detail
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- more_headers eval: $::Svc
--- request eval: main::reconcile('tokens', inputTokens => 1_000_000_001)
--- error_code: 400
--- response_body_like eval: main::problem(400, 'invalid_request', 'inputTokens: must be an integer between 0 and 1000000000')



=== TEST 10: outputTokens as a string is 400 (the JSON form is the module's to check)
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- more_headers eval: $::Svc
--- request eval: main::reconcile('tokstr', outputTokens => '500')
--- error_code: 400
--- response_body_like eval: main::problem(400, 'invalid_request', 'outputTokens: must be an integer')



=== TEST 11: idempotencyKey with a space is 400 with the database's detail
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- more_headers eval: $::Svc
--- request eval: main::reconcile('key', idempotencyKey => 'a b')
--- error_code: 400
--- response_body_like eval: main::problem(400, 'invalid_request', 'idempotencyKey: must be 1 to 255 printable ASCII characters without spaces')



=== TEST 12: an Idempotency-Key header of 256 characters is 400
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- more_headers eval: $::Svc . "\nIdempotency-Key: " . ('k' x 256)
--- request eval: main::reconcile('keyhdr', idempotencyKey => undef)
--- error_code: 400
--- response_body_like chomp
"code":"invalid_request"



=== TEST 13: holdId that is not a UUID is 400
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- more_headers eval: $::Svc
--- request eval: main::reconcile('holdid', holdId => 'hold-1')
--- error_code: 400
--- response_body_like eval: main::problem(400, 'invalid_request', 'holdId: must be a UUID')



=== TEST 14: holdId of no hold of this user is the database's 404 hold_not_found
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- more_headers eval: $::Svc
--- request eval: main::reconcile('holdnone', holdId => '00000000-0000-4000-8000-00000000abcd')
--- error_code: 404
--- response_body_like chomp
"code":"hold_not_found"



=== TEST 15: amountMicros of 0 is 400 with the database's detail
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- more_headers eval: $::Svc
--- request eval: main::hold('amount', amountMicros => 0)
--- error_code: 400
--- response_body_like eval: main::problem(400, 'invalid_request', 'amountMicros: must be an integer between 1 and 1000000000000000')



=== TEST 16: ttlSeconds of 3601 is 400 with the database's detail
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- more_headers eval: $::Svc
--- request eval: main::hold('ttl', ttlSeconds => 3601)
--- error_code: 400
--- response_body_like eval: main::problem(400, 'invalid_request', 'ttlSeconds: must be an integer between 1 and 3600')



=== TEST 17: ttlSeconds null means the default
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- more_headers eval: $::Svc
--- request eval: main::hold('ttlnull', ttlSeconds => undef)
--- error_code: 201
--- response_body_like chomp
"heldMicros":1000,



=== TEST 18: a hold id in the path that is not a UUID names no hold (404, as an unknown id)
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- more_headers eval: $::Svc
--- request
DELETE /api/usage/holds/not-a-uuid
--- error_code: 404
--- response_body_like chomp
"code":"not_found"



=== TEST 19: packageCode outside a-z 0-9 _ - is 400 with the database's detail, and Stripe is not asked
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- more_headers eval: main::user_auth("$::U-pkg")
--- request
POST /api/purchases
{"packageCode":"Starter"}
--- error_code: 400
--- response_body_like eval: main::problem(400, 'invalid_request', 'packageCode: must be 1 to 64 characters of a-z 0-9 _ -')



=== TEST 20: a well-formed packageCode of no package is the database's 422
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- more_headers eval: main::user_auth("$::U-pkg2")
--- request
POST /api/purchases
{"packageCode":"gold_2"}
--- error_code: 422
--- response_body_like chomp
"code":"unknown_package"



=== TEST 21: a purchase id in the path that is not a UUID names no purchase (404)
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- more_headers eval: main::user_auth("$::U-pkg3")
--- request
GET /api/purchases/not-a-uuid
--- error_code: 404
--- response_body_like chomp
"code":"not_found"



=== TEST 22: ledger limit 0 is 400 with the database's detail
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- more_headers eval: main::user_auth("$::U-ledger")
--- request
GET /api/ledger?limit=0
--- error_code: 400
--- response_body_like eval: main::problem(400, 'invalid_request', 'limit must be an integer from 1 to 200')



=== TEST 23: ledger limit 200 is the largest page
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- more_headers eval: main::user_auth("$::U-ledger2")
--- request
GET /api/ledger?limit=200
--- error_code: 200
--- response_body_like chomp
"entries":\[\]



=== TEST 24: a cursor this API did not give is 400 with the database's detail
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- more_headers eval: main::user_auth("$::U-ledger3")
--- request
GET /api/ledger?cursor=Yz:0
--- error_code: 400
--- response_body_like eval: main::problem(400, 'invalid_request', 'cursor is not valid')
