# The database host is looked up without blocking the event loop: a DNS
# server of this test's own on 127.0.0.1 (billing_database_resolver points
# the lookup at it) answers after 3 s, never, or with NXDOMAIN at once.
# Throughout, /health on the single worker answers at once (< 50 ms: a bound
# on blocking, as t/011 puts on a row lock, not a benchmark), database calls
# wait for the lookup or answer 503, and nothing looks the host up in a
# tight loop: one lookup at a time for the pool, the next one paced by the
# back-off timer, none started by requests.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use POSIX ();
use Time::HiRes qw(time sleep);
use BillingTest;
use DnsStandIn;

my $name = 'db.billing.test';
my $dns = DnsStandIn->start(names => { $name => '127.0.0.1' });
(my $url = $ENV{TEST_NGINX_DATABASE_URL}) =~ s{\@127\.0\.0\.1:}{\@$name:}
    or BAIL_OUT('TEST_NGINX_DATABASE_URL names no 127.0.0.1');
my $user = unique_id('dns');
my $token = mint_token(sub => $user);
fund_user($user, 1_000_000);

sub start {
    my ($tag, %o) = @_;
    my $port = free_port();
    local $ENV{TEST_NGINX_DATABASE_URL} = $url;
    start_billing_nginx($tag, port => $port, workers => 1, pool => 'min=2 max=4 queue=16',
                        timeouts => $o{timeouts},
                        extra => "    billing_database_resolver 127.0.0.1:" . $dns->port . ";\n");
    return $port;
}

sub timed_get {
    my ($port, $path, $tok) = @_;
    my $t0 = time;
    my ($s, $h, $b) = http_request($port, { method => 'GET', path => $path,
                                            headers => $tok ? { Authorization => "Bearer $tok" } : {} }, 20);
    return ($s, $b, time - $t0);
}

sub log_of { my $l = do { local $/; open my $fh, '<', nginx_prefix($_[0]) . '/logs/error.log'; <$fh> }; $l // '' }

# ---------------------------------------------------------------- slow DNS
# answers after 3 s: the worker serves /health meanwhile, the waiting call
# gets its answer once the lookup's addresses connect
$dns->control(delay => 3);
my $port = start('dns_slow', timeouts => 'connect=5s query=5s');

my $t0 = time;
my $waiter = fork // die "fork: $!";
if ($waiter == 0) {
    my ($s, $b) = timed_get($port, '/api/balance', $token);
    POSIX::_exit($s == 200 && $b =~ /"balanceMicros":1000000/ ? 0 : 1);
}

my ($worst, $n, $pending) = (0, 0, 1);
while (time - $t0 < 2.5) {
    my ($s, undef, $took) = timed_get($port, '/health');
    $n++;
    $worst = $took if $s == 200 && $took > $worst;
    $worst = 99 if $s != 200;
    sleep 0.05;
}
$pending = waitpid($waiter, POSIX::WNOHANG()) == 0;
my $waited = $pending ? (waitpid($waiter, 0) && $?) : $?;
cmp_ok($worst * 1000, '<', 50, "/health answered at once ($n times) while the lookup took 3 s");
ok($pending, '... and the balance request was still waiting for the database');
is($waited >> 8, 0, 'the waiting balance request was answered 200 once the host was found');
is($dns->lookups($name), 1, 'one lookup for the pool\'s connections and the waiting request');

# a failover keeps the name and moves the address: the next connection
# looks the host up again. Here the name first points where nothing listens
# (127.0.0.2), then at the server again.
$dns->control(delay => 0, names => { $name => '127.0.0.2' });
psql_admin("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'ngx_billing'");
my $lookups = $dns->lookups($name);
ok(wait_http_status($port, '/readyz', 503, 5), 'the address the name moved to is down: 503');
ok($dns->lookups($name) > $lookups, '... found by a new lookup');
$dns->control(names => { $name => '127.0.0.1' });
ok(wait_http_status($port, '/readyz', 200, 10), 'the name points at the server again: ready, without reload');
stop_nginx('dns_slow');

# ---------------------------------------------------------------- dead DNS
# never answers: database calls answer 503 (the lookup has the connect
# timeout), /health stays fast, and the pool asks once, not per attempt
$dns->control(delay => 'never', names => { $name => '127.0.0.1' });
my $before = $dns->lookups($name);
$port = start('dns_dead', timeouts => 'connect=1s query=1s');

$t0 = time;
my (%status, $answered);
($worst, $n) = (0, 0);
while (time - $t0 < 6) {
    my ($s, undef, $took) = timed_get($port, '/health');
    $n++;
    $worst = $took if $s == 200 && $took > $worst;
    $worst = 99 if $s != 200;
    my ($bs, $bb) = timed_get($port, '/api/balance', $token);
    $status{$bs}++;
    $answered++ if $bs == 503 && $bb =~ /"code":"database_unavailable"/;
    sleep 0.05;
}
cmp_ok($worst * 1000, '<', 50, "/health answered at once ($n times) while the DNS did not answer");
is_deeply([keys %status], [503], 'every balance request was answered 503') or diag explain \%status;
is($answered, $status{503}, '... database_unavailable');
is($dns->lookups($name) - $before, 1,
   "one lookup in 6 s: neither $n requests nor the refills asked again while it was out");
ok(log_of('dns_dead') =~ /billing: database host lookup timed out/, 'the log says the lookup timed out');

# a reload while the lookup is still out: the old worker's pool cancels it
# and the worker exits once the thread returns; nothing crashes
my @old = nginx_pids('dns_dead');
kill 'HUP', $old[0];
my $end = time + 10;
sleep 0.1 while time < $end && !grep { my $p = $_; !grep { $_ == $p } @old } nginx_pids('dns_dead');
ok((grep { my $p = $_; !grep { $_ == $p } @old } nginx_pids('dns_dead')), 'reloaded during the lookup');

# the DNS answers again: the next lookup connects
$dns->control(delay => 0);
ok(wait_http_status($port, '/readyz', 200, 20), 'ready again once the DNS answers');
$end = time + 15;
sleep 0.1 while time < $end && kill 0, $old[1];
ok(!kill(0, $old[1]), 'the old worker exited once its lookup returned');
ok(log_of('dns_dead') !~ /exited on signal|\[alert\]/, 'no worker crashed, no alert');
stop_nginx('dns_dead');

# ---------------------------------------------------------------- NXDOMAIN
# the name does not exist: each lookup fails at once; requests do not
# start lookups, the back-off timer paces them
$dns->control(delay => 0, names => {});
$before = $dns->lookups($name);
$port = start('dns_none', timeouts => 'connect=1s query=1s');

$t0 = time;
%status = ();
my $requests = 0;
while (time - $t0 < 4) {
    my ($bs) = timed_get($port, '/api/balance', $token);
    $status{$bs}++;
    $requests++;
    sleep 0.02;
}
is_deeply([keys %status], [503], "all $requests balance requests were answered 503") or diag explain \%status;
my $asked = $dns->lookups($name) - $before;
cmp_ok($asked, '<=', 7, "$asked lookups in 4 s for $requests requests: paced by the back-off (250 ms, doubling)");
ok(log_of('dns_none') =~ /\[error\].*billing: database host lookup: cannot resolve "db\.billing\.test"/,
   'the log names the host that does not resolve');
stop_nginx('dns_none');

done_testing();
