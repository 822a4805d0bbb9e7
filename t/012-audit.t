# The periodic ledger audit, seen from nginx: billing_invariant_violations
# reports what billing.audit_run() finds (sql/functions/audit.sql; the SQL
# side is t/018), an alert line is logged, a finding stays until a full pass,
# and billing_invariant_check_last_success_timestamp_seconds moves with every
# run and stops when the audit cannot run, which is what the staleness alert
# watches.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Time::HiRes qw(time sleep);
use File::Temp ();
use BillingTest;

my $port = free_port();
my $user = 'audit-' . time() . "-$$";
fund_user($user, 1_000_000);

# whatever earlier files left in the findings: start from a full pass
is(psql_admin('SELECT count(*) FROM billing.audit_full()'), 0, 'a full pass finds the test ledger consistent');
my $t0 = int time;

my $prefix = start_nginx('audit', qq{
    billing_database_url $ENV{TEST_NGINX_DATABASE_URL};
    billing_audit_interval 1s;
    server {
        listen 127.0.0.1:$port;
        location = /metrics { billing metrics; }
    }
}, workers => 2);

sub gauges {
    my (undef, undef, $b) = http_request($port, { method => 'GET', path => '/metrics' });
    my ($v) = $b =~ /^billing_invariant_violations (\d+)$/m;
    my ($t) = $b =~ /^billing_invariant_check_last_success_timestamp_seconds (\d+)$/m;
    return ($v // -1, $t // -1);
}
sub violations { (gauges())[0] }
sub last_success { (gauges())[1] }
sub wait_for {
    my ($what, $want, $limit) = @_;
    my $deadline = time + $limit;
    while (time < $deadline) {
        my $v = $what->();
        return $v if $want->($v);
        sleep 0.2;
    }
    return $what->();
}
sub error_log { do { local $/; open my $f, '<', "$prefix/logs/error.log"; <$f> } // '' }

is(wait_for(\&violations, sub { $_[0] == 0 }, 15), 0, 'a clean ledger: the audit reports 0');
my $t1 = wait_for(\&last_success, sub { $_[0] >= $t0 }, 15);
ok($t1 >= $t0, "the last success is a run of this instance's time ($t1 >= $t0)");
my $t2 = wait_for(\&last_success, sub { $_[0] > $t1 }, 15);
ok($t2 > $t1, 'and moves with every run');

# a balance that no longer matches its entries (only the owner can do this;
# the runtime role has no UPDATE on any table): the rotating sweep finds it
my $q = sql_quote($user);
psql_admin("UPDATE billing.accounts SET balance_micros = balance_micros + 1 WHERE user_id = $q");
my $n = wait_for(\&violations, sub { $_[0] >= 1 }, 20);
psql_admin("UPDATE billing.accounts SET balance_micros = balance_micros - 1 WHERE user_id = $q");
ok($n >= 1, "a broken balance is reported by the gauge ($n)");
like(error_log(), qr/\[alert\].*ledger audit found \d+ invariant violations/, 'and logged as an alert');

# repaired, the finding stays: the ledger's history had a violation
my $t3 = last_success();
wait_for(\&last_success, sub { $_[0] > $t3 + 1 }, 15);
ok(violations() >= 1, 'repaired, the finding stays after further runs');
is(psql_admin('SELECT count(*) FROM billing.audit_full()'), 0, 'until a full pass finds the ledger consistent');
is(wait_for(\&violations, sub { $_[0] == 0 }, 15), 0, 'then the gauge returns to 0');

# the audit cannot run: the gauges keep their values, the timestamp stops,
# and the staleness alert on it fires (deployment/billing/prometheusrule.yaml)
END { local $?; eval { psql_admin('GRANT EXECUTE ON FUNCTION billing.audit_run(int, int, int) TO billing_app') } }
psql_admin('REVOKE EXECUTE ON FUNCTION billing.audit_run(int, int, int) FROM billing_app');
my $failures = () = error_log() =~ /the ledger audit could not run/g;
my $deadline = time + 15;
sleep 0.2 while time < $deadline && (() = error_log() =~ /the ledger audit could not run/g) < $failures + 1;
my $stuck = last_success();
$deadline = time + 15;
sleep 0.2 while time < $deadline && (() = error_log() =~ /the ledger audit could not run/g) < $failures + 3;
my $failed = () = error_log() =~ /the ledger audit could not run/g;
ok($failed >= $failures + 3, 'runs fail while the runtime role may not call the audit');
is(last_success(), $stuck, '... and the last success stays where it was');
is(violations(), 0, '... and so does the violations gauge');
psql_admin('GRANT EXECUTE ON FUNCTION billing.audit_run(int, int, int) TO billing_app');
ok(wait_for(\&last_success, sub { $_[0] > $stuck }, 15) > $stuck, 'allowed again: it moves again');

# the whole exposition, as Prometheus would scrape it, passes promtool
SKIP: {
    skip 'promtool not installed', 1 unless grep { -x "$_/promtool" } split /:/, $ENV{PATH};
    my (undef, undef, $scrape) = http_request($port, { method => 'GET', path => '/metrics' });
    my (undef, $report) = File::Temp::tempfile('billing-promtool-XXXXXX', TMPDIR => 1, UNLINK => 1);
    open my $p, '|-', "promtool check metrics >$report 2>&1" or die;
    print $p $scrape;
    close $p;
    my $rc = $?;
    my $out = do { local $/; open my $f, '<', $report or die; <$f> } // '';
    is($rc, 0, 'promtool check metrics accepts the scrape') or diag $out;
}

stop_nginx('audit');
invariants_ok('invariants hold');
done_testing();
