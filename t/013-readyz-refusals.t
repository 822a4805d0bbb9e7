# /readyz answers exactly once, with the contract's body (docs/spec.md
# §4), when the pool refuses at once: no database URL, a full wait queue,
# a host that does not resolve. A second answer after the first ends in
# "header already sent" and a dropped connection.
use strict;
use warnings;
use lib 't/lib';
use Test::Nginx::Socket 'no_plan';
use BillingTest;
use DnsStandIn;

# a DNS server that knows no name: every lookup is NXDOMAIN, at once
my $dns = DnsStandIn->start(names => {});
$ENV{TEST_NGINX_DNS_PORT} = $dns->port;

run_tests();

__DATA__

=== TEST 1: readyz without a database URL answers not_ready once
--- config
location = /readyz { billing readyz; }
--- request
GET /readyz
--- error_code: 503
--- response_headers
Content-Type: application/json
--- response_body chomp
{"status":"not_ready","checks":{"database":"unavailable","migrations":"unknown"}}
--- no_error_log
[alert]
header already sent



=== TEST 2: readyz with a full wait queue answers not_ready once
--- http_config
billing_database_url $TEST_NGINX_DATABASE_URL;
billing_pool min=0 max=1 queue=0;
--- config
location = /readyz { billing readyz; }
--- request
GET /readyz
--- error_code: 503
--- response_headers
Content-Type: application/json
--- response_body chomp
{"status":"not_ready","checks":{"database":"unavailable","migrations":"unknown"}}
--- no_error_log
[alert]
header already sent



=== TEST 3: readyz when the database host does not resolve answers not_ready once
--- http_config
billing_database_url postgresql://nobody:secret-pw-3@db.billing.test:5432/billing;
billing_database_resolver 127.0.0.1:$TEST_NGINX_DNS_PORT;
billing_db_timeouts connect=2s query=2s;
--- config
location = /readyz { billing readyz; }
--- request
GET /readyz
--- error_code: 503
--- response_headers
Content-Type: application/json
--- response_body chomp
{"status":"not_ready","checks":{"database":"unavailable","migrations":"unknown"}}
--- error_log
billing: database host lookup: cannot resolve "db.billing.test"
--- no_error_log
[alert]
header already sent
secret-pw-3



=== TEST 4: an API call refused at once gets one problem answer
--- http_config
billing_database_url $TEST_NGINX_DATABASE_URL;
billing_pool min=0 max=1 queue=0;
--- config
location = /api/packages { billing packages; }
--- request
GET /api/packages
--- error_code: 503
--- response_headers
Content-Type: application/problem+json
--- response_body_like chomp
"code":"database_busy"
--- no_error_log
[alert]
header already sent
