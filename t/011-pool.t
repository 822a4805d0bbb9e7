# The PostgreSQL pool under faults, against one running nginx (several
# requests to the same process, so plain Test::More rather than blocks):
# a database restart is survived without reload, a stalled query does not
# hold up /health on the same worker, connections are bounded.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Time::HiRes qw(time sleep);
use POSIX ();
use IO::Socket::INET;
use BillingTest;

my $port = free_port();
my $user = "pool-" . time() . "-$$";
my $pgdir = $ENV{BILLING_PG_DIR} or plan skip_all => 'BILLING_PG_DIR not set';

fund_user($user, 10_000_000);

start_nginx('pool', qq{
    billing_database_url $ENV{TEST_NGINX_DATABASE_URL};
    billing_pool min=2 max=3 queue=4;
    billing_db_timeouts connect=2s query=8s;
    billing_jwt_key file:$ENV{TEST_NGINX_JWT_PUBLIC_KEY_FILE};
    billing_jwt_issuer https://student-pilot.replit.app;
    billing_jwt_audience https://billing.scholarlink.app;
    server {
        listen 127.0.0.1:$port;
        location = /health { billing health; }
        location = /readyz { billing readyz; }
        location = /metrics { billing metrics; }
        location = /api/balance { billing balance; }
        location = /api/usage/reconcile { billing reconcile; }
    }
}, workers => 1);

my $token = mint_token(sub => $user);
my $svc = mint_token(sub => 'ai-backend', scope => 'billing:usage');

sub get { my ($path, $tok) = @_;
          http_request($port, { method => 'GET', path => $path,
                                headers => $tok ? { Authorization => "Bearer $tok" } : {} }) }

sub wait_ready {
    my ($want, $limit) = @_;
    my $deadline = time + $limit;
    while (time < $deadline) {
        my ($s) = get('/readyz');
        return 1 if $s == $want;
        sleep 0.2;
    }
    return 0;
}

ok(wait_ready(200, 10), 'ready with the database up');

sub app_conns {
    my $n = psql_admin("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'ngx_billing'");
    chomp $n;
    return $n;
}

# the pool keeps its minimum warm
my $deadline = time + 5;
sleep 0.1 while app_conns() < 2 && time < $deadline;
is(app_conns(), 2, 'the pool keeps min=2 connections open');

# --- a database restart, no nginx reload
system("$ENV{BILLING_ROOT}/t/pgserver.sh", 'stop', $pgdir) == 0 or die 'pg stop failed';
ok(wait_ready(503, 10), 'readyz answers 503 while the database is down');
my ($s, $h, $b) = get('/readyz');
like($b, qr/"database":"unavailable"/, 'readyz names the database check');
($s, $h, $b) = get('/api/balance', $token);
is($s, 503, 'an API call answers 503 at once while the database is down');
like($b, qr/"code":"database_unavailable"/, '... with a problem body');
($s) = get('/health');
is($s, 200, '/health does not care');

system("$ENV{BILLING_ROOT}/t/pgserver.sh", 'restart', $pgdir) == 0 or die 'pg restart failed';
ok(wait_ready(200, 30), 'ready again after the restart, without reload');
($s, $h, $b) = get('/api/balance', $token);
is($s, 200, 'API calls work again');
like($b, qr/"balanceMicros":10000000/, '... with the balance intact');

# --- connections killed under the pool (failover, pg_terminate_backend):
# the next requests are served, by a live or a new connection, never 5xx
my @after_terminate;
for my $round (1 .. 5) {
    psql_admin("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
               . "WHERE application_name = 'ngx_billing'");
    push @after_terminate, (get('/api/balance', $token))[0];
}
is_deeply(\@after_terminate, [(200) x 5],
          'requests right after the pool\'s connections are terminated are answered 200');

# --- a stalled query does not hold up /health on the same (single) worker
my $lock = fork // die;
if ($lock == 0) {
    # holds the account row lock for 3 s: the reconcile below waits on it
    { exec 'psql', '-X', '-q', '-d', $ENV{BILLING_TEST_ADMIN_URL}, '-c',
         "BEGIN; SELECT 1 FROM billing.accounts WHERE user_id = '$user' FOR UPDATE; "
         . "SELECT pg_sleep(3); COMMIT;" };
    POSIX::_exit(1);
}
sleep 0.5;

my $rec = fork // die;
if ($rec == 0) {
    my ($st) = http_request($port, {
        method => 'POST', path => '/api/usage/reconcile',
        headers => { Authorization => "Bearer $svc", 'Content-Type' => 'application/json' },
        body => qq{{"userId":"$user","model":"gpt-4o","inputTokens":1000,"outputTokens":500,"idempotencyKey":"stall-1"}},
    }, 20);
    POSIX::_exit($st == 201 ? 0 : 1);
}
sleep 0.3;

my $t0 = time;
($s) = get('/health');
my $health_done = time;
is($s, 200, '/health answers while a query waits on a lock');
ok(!(waitpid($rec, POSIX::WNOHANG()) == $rec), '... and the reconcile was still pending when it did');
waitpid($rec, 0);
is($? >> 8, 0, 'the stalled reconcile completed with 201 once the lock was released');
waitpid($lock, 0);
diag(sprintf '/health took %.1f ms during the stall', ($health_done - $t0) * 1000);

# --- a client that goes away while its query waits: the request ends
# (499), the query finishes on the server, the connection returns to the
# pool; a retry with the same key learns the outcome
$lock = fork // die;
if ($lock == 0) {
    { exec 'psql', '-X', '-q', '-d', $ENV{BILLING_TEST_ADMIN_URL}, '-c',
           "BEGIN; SELECT 1 FROM billing.accounts WHERE user_id = '$user' FOR UPDATE; "
           . "SELECT pg_sleep(2); COMMIT;" };
    POSIX::_exit(1);
}
sleep 0.5;
{
    my $body = qq{{"userId":"$user","model":"gpt-4o","inputTokens":1000,"outputTokens":500,"idempotencyKey":"gone-1"}};
    my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port) or die;
    print $sock "POST /api/usage/reconcile HTTP/1.1\r\nHost: localhost\r\n"
              . "Authorization: Bearer $svc\r\nContent-Type: application/json\r\n"
              . "Content-Length: " . length($body) . "\r\n\r\n$body";
    sleep 0.3;
    close $sock;        # gone before the answer
}
waitpid($lock, 0);
sleep 0.5;
my (undef, undef, $m) = get('/metrics');
like($m, qr/billing_http_requests_total\{endpoint="reconcile",status="499"\} 1/,
     'the abandoned request ended as 499');
my $gone = psql_admin("SELECT count(*) FROM billing.ledger_entries WHERE user_id = '$user' AND idempotency_key = 'gone-1'");
chomp $gone;
is($gone, 1, 'its query still completed on the server, once');
my ($st, $hd) = http_request($port, {
    method => 'POST', path => '/api/usage/reconcile',
    headers => { Authorization => "Bearer $svc", 'Content-Type' => 'application/json' },
    body => qq{{"userId":"$user","model":"gpt-4o","inputTokens":1000,"outputTokens":500,"idempotencyKey":"gone-1"}},
});
is("$st $hd->{'idempotent-replayed'}", '201 true', 'a retry with the same key is a replay');
ok(app_conns() <= 3, 'no connection leaked by the abandoned request');
(undef, undef, $b) = get('/api/balance', $token);
like($b, qr/"balanceMicros":\d+/, 'the pool still serves requests');

# --- bounded: connections never exceed the pool maximum
my @reqs = map { { method => 'GET', path => '/api/balance',
                   headers => { Authorization => "Bearer $token" } } } 1 .. 30;
my @res = parallel_requests($port, \@reqs, 30);
my %by; $by{$_->[0]}++ for @res;
ok(($by{200} // 0) + ($by{503} // 0) == 30, 'a burst is answered 200 or 503 (queue full), nothing else')
    or diag(explain \%by);
ok(app_conns() <= 3, 'connections stay within max=3');
(undef, undef, $b) = get('/metrics');
like($b, qr/billing_db_errors_total\{kind="connect"\} [1-9]/, 'connect errors were counted');

stop_nginx('pool');
invariants_ok('invariants hold');
done_testing();
