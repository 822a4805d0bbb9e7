# The hot statements are prepared once on every pooled connection (its
# setup, after SET ROLE) and then sent by name (ngx_http_billing_pg.c); a
# migration that re-creates the functions meanwhile (CREATE OR REPLACE, as
# every sql/migrate.sh run does) leaves them working: the server
# re-plans them (sql/README.md, "Canaries").
use strict;
use warnings;
use lib 't/lib';
use Test::Nginx::Socket 'no_plan';
use BillingTest;

our $U = "prep-" . time() . "-$$";
our $HttpConfig = block_http_config(pool => 'min=1 max=1');
our $Config = q{
    location = /api/usage/reconcile { billing reconcile; }
};
our $Svc = service_token();

sub user { "$U-$_[0]" }
sub rec { my ($id, $key) = @_; return gpt4o_reconcile_req($::Svc, user($id), $key) }
sub body { my ($id, $key) = @_; my $r = rec($id, $key); return "POST /api/usage/reconcile\n$r->{body}" }

add_response_body_check(\&BillingTest::after_requests_check);
run_tests();

invariants_ok('invariants hold after the prepared statement tests');

__DATA__

=== TEST 1: reconciles go as the prepared statement, before and after a migration run re-creates the functions
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- init
main::fund_user(main::user('t1'), 1_000_000);
--- more_headers eval
"Content-Type: application/json\nAuthorization: Bearer $::Svc"
--- request eval: main::body('t1', 'k-1')
--- error_code: 201
--- after_requests
my $root = $ENV{BILLING_ROOT} // '.';
my $out = `DATABASE_URL='$ENV{TEST_NGINX_DATABASE_URL}' bash '$root/sql/migrate.sh' '$ENV{BILLING_TEST_ADMIN_URL}' 2>&1`;
is($?, 0, 'sql/migrate.sh re-created every function') or diag $out;
my ($s, undef, $b) = http_request($ENV{TEST_NGINX_SERVER_PORT}, main::rec('t1', 'k-2'));
is($s, 201, 'the same connection, its prepared statement, after the migration') or diag $b;
ledger_is(main::user('t1'), 3, 985_000, 'two charges');
--- error_log eval
[qr/billing pg: connection \d+: setup "SELECT status, code, body, meta FROM billing.api_reconcile\(/,
 qr/billing pg: query on connection \d+: "SELECT status, code, body, meta FROM billing.api_reconcile\(.*", prepared/]
--- no_error_log
[error]
cannot prepare
