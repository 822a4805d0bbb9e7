# docs/openapi.yaml and the check every other test relies on: answers are
# compared with the document (t/lib/BillingTest/OpenAPI.pm). First the
# check itself, on answers made up here, each mismatch it must catch; then
# Test::Nginx blocks showing that the hook BillingTest registers sees real
# answers, and the document as nginx serves it.
use strict;
use warnings;
use lib 't/lib';
use Test::Nginx::Socket 'no_plan';
use BillingTest;
use Cwd ();
use HTTP::Response ();

add_response_body_check(\&BillingTest::after_requests_check);

$ENV{TEST_NGINX_DOCS_DIR} = Cwd::abs_path('docs');

my $check = \&BillingTest::OpenAPI::response_errors;

sub problem {
    my ($status, $title, $code, %over) = @_;
    return JSON::PP->new->canonical->encode({
        type => "https://billing.scholarlink.app/problems/$code",
        title => $title, status => $status + 0, detail => 'x', code => $code, %over });
}

my %json = ('Content-Type' => 'application/json');
my %problem = ('Content-Type' => 'application/problem+json');
my $balance = '{"userId":"u1","balanceMicros":10,"heldMicros":0,"availableMicros":10}';

# what matches
is_deeply($check->(method => 'GET', target => '/api/balance?x=1', status => 200,
                   headers => \%json, body => $balance), [], 'a documented answer matches');
is_deeply($check->(method => 'HEAD', target => '/api/balance', status => 200,
                   headers => \%json, body => ''), [], 'HEAD: the GET answer without a body');
is_deeply($check->(method => 'GET', target => '/api/balance', status => 401,
                   headers => { %problem, 'WWW-Authenticate' => 'Bearer realm="billing"' },
                   body => problem(401, 'Unauthorized', 'unauthorized')), [],
          'a documented problem with its required header');
is_deeply($check->(method => 'GET', target => '/api/ledger', status => 200, headers => \%json,
                   body => '{"balanceMicros":0,"entries":[{"id":"7","type":"refund",'
                         . '"amountMicros":-5,"balanceAfterMicros":-5,'
                         . '"createdAt":"2026-11-28T12:04:43.214344Z",'
                         . '"purchaseId":"0d5c2a8e-6c1f-4f0e-9d55-2b6f3f1a7c10"}],"nextCursor":null}'),
          [], 'nullable and oneOf (a ledger entry that is not usage)');
is($check->(method => 'GET', target => '/t', status => 200,
            headers => { 'Content-Type' => 'text/plain' }, body => 'hi'), undef,
   'a path the document does not describe is not judged');
is($check->(method => 'GET', target => '/api/admin/users/%00/balance', status => 400,
            headers => { 'Content-Type' => 'text/html' }, body => '<html>'), undef,
   '... nor a request nginx refuses before any location (%00 in the path)');

# what must not match: one answer per way of drifting
my @bad = (
    ['an undocumented status',
     [method => 'GET', target => '/api/balance', status => 418, headers => \%json, body => '{}'],
     qr/status 418 is not documented/],
    ['a content type the status does not list',
     [method => 'GET', target => '/api/balance', status => 401,
      headers => { %json, 'WWW-Authenticate' => 'Bearer realm="billing"' },
      body => problem(401, 'Unauthorized', 'unauthorized')],
     qr/content type 'application\/json' is not one of application\/problem\+json/],
    ['a required header missing',
     [method => 'GET', target => '/api/balance', status => 401, headers => \%problem,
      body => problem(401, 'Unauthorized', 'unauthorized')],
     qr/header WWW-Authenticate is required but missing/],
    ['a string where the schema says integer',
     [method => 'GET', target => '/api/balance', status => 200, headers => \%json,
      body => '{"userId":"u1","balanceMicros":"10","heldMicros":0,"availableMicros":10}'],
     qr/balanceMicros: Expected integer - got string/],
    ['a field the schema does not have',
     [method => 'GET', target => '/api/balance', status => 200, headers => \%json,
      body => '{"userId":"u1","balanceMicros":10,"heldMicros":0,"availableMicros":10,"x":1}'],
     qr/Properties not allowed: x/],
    ['a required field missing',
     [method => 'GET', target => '/api/balance', status => 200, headers => \%json,
      body => '{"userId":"u1","balanceMicros":10,"heldMicros":0}'],
     qr/availableMicros: Missing property/],
    ['a body that is not JSON',
     [method => 'GET', target => '/api/balance', status => 200, headers => \%json,
      body => '{"userId":'],
     qr/the body is not JSON/],
    ['a problem code its status does not carry',
     [method => 'POST', target => '/api/usage/reconcile', status => 409, headers => \%problem,
      body => problem(409, 'Conflict', 'insufficient_credits')],
     qr/code: .*Not in enum list/],
    ['a problem whose body status differs from the answer\'s',
     [method => 'POST', target => '/api/usage/reconcile', status => 402, headers => \%problem,
      body => problem(402, 'Payment Required', 'insufficient_credits', status => 400)],
     qr/status: .*Not in enum list: 402/],
    ['a problem type that does not name its code',
     [method => 'POST', target => '/api/usage/reconcile', status => 402, headers => \%problem,
      body => problem(402, 'Payment Required', 'insufficient_credits',
                      type => 'https://billing.scholarlink.app/problems/other')],
     qr/type is '.*other', not '.*insufficient_credits'/],
    ['a 405 whose Allow is not the methods the document lists',
     [method => 'PUT', target => '/api/balance', status => 405,
      headers => { %problem, Allow => 'GET, HEAD, POST' },
      body => problem(405, 'Method Not Allowed', 'method_not_allowed')],
     qr/Allow is 'GET, HEAD, POST', the document lists GET, HEAD/],
    ['a method the path does not list, answered other than 405',
     [method => 'PUT', target => '/api/balance', status => 200, headers => \%json, body => $balance],
     qr/any other method must be answered 405/],
    ['a body where the document describes none',
     [method => 'OPTIONS', target => '/api/balance', status => 204, headers => \%json, body => '{}'],
     qr/describes no body, but one came/],
    ['a problem on an undescribed path with a code its status does not carry',
     [method => 'GET', target => '/nowhere', status => 404, headers => \%problem,
      body => problem(404, 'Not Found', 'rate_limited')],
     qr/problem 404: body\/code/],
);
for my $case (@bad) {
    my ($what, $res, $want) = @$case;
    my $errors = $check->(@$res);
    ok($errors && @$errors && grep({ $_ =~ $want } @$errors), "caught: $what")
        or diag(Test::More::explain($errors));
}

# the hook finds the response the runner hands to the sub that calls it
sub runner_calls_hook {
    my ($block, $res) = @_;
    return BillingTest::OpenAPI::_runner_response($res->content);
}
my $res = HTTP::Response->new(201, 'Created', [], '{"a":1}');
is(runner_calls_hook(undef, $res), $res, 'the runner\'s response is found through caller');
is(BillingTest::OpenAPI::_runner_response('{"a":2}'), undef,
   '... and only a response whose body is the one checked');

run_tests();

__DATA__

=== TEST 1: the hook checks a described answer of every block
--- config
location = /health { billing health; }
--- init
$main::checked = $BillingTest::OpenAPI::Checked{operation} // 0;
--- request
GET /health
--- response_body chomp
{"status":"ok"}
--- after_requests
Test::More::is($BillingTest::OpenAPI::Checked{operation}, $main::checked + 1,
               'the answer was checked against docs/openapi.yaml');



=== TEST 2: a method the path does not list: checked against MethodNotAllowed
--- config
location = /health { billing health; }
--- init
$main::checked = $BillingTest::OpenAPI::Checked{MethodNotAllowed} // 0;
--- request
DELETE /health
--- error_code: 405
--- after_requests
Test::More::is($BillingTest::OpenAPI::Checked{MethodNotAllowed}, $main::checked + 1,
               'the 405 was checked against MethodNotAllowed');



=== TEST 3: a test's own location is not judged
--- config
location = /t { return 200 "x"; }
--- init
$main::checked = join ',', map { "$_=$BillingTest::OpenAPI::Checked{$_}" }
                          sort keys %BillingTest::OpenAPI::Checked;
--- request
GET /t
--- response_body chomp
x
--- after_requests
Test::More::is(join(',', map { "$_=$BillingTest::OpenAPI::Checked{$_}" }
                         sort keys %BillingTest::OpenAPI::Checked), $main::checked,
               'nothing was checked');



=== TEST 4: the document as the shipped configurations serve it
--- config
location = /api/openapi.yaml {
    types { }
    default_type application/yaml;
    alias $TEST_NGINX_DOCS_DIR/openapi.yaml;
}
--- request
GET /api/openapi.yaml
--- response_headers
Content-Type: application/yaml
--- response_body_like chomp
\Aopenapi: 3\.0\.\d+\n
--- after_requests
my (undef, undef, $body) = BillingTest::http_request($ENV{TEST_NGINX_SERVER_PORT},
    { method => 'GET', path => '/api/openapi.yaml' });
my $file = do { local $/; open my $fh, '<', "$ENV{TEST_NGINX_DOCS_DIR}/openapi.yaml" or die; <$fh> };
Test::More::ok($body eq $file, 'the whole file, byte for byte');
