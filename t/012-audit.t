# The periodic ledger audit: billing_invariant_violations reports what
# billing.invariant_violations() finds, and an alert line is logged.
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

my $prefix = start_nginx('audit', qq{
    billing_database_url $ENV{TEST_NGINX_DATABASE_URL};
    billing_audit_interval 1s;
    server {
        listen 127.0.0.1:$port;
        location = /metrics { billing metrics; }
    }
}, workers => 2);

sub violations {
    my (undef, undef, $b) = http_request($port, { method => 'GET', path => '/metrics' });
    return $b =~ /^billing_invariant_violations (\d+)$/m ? $1 : -1;
}
sub wait_for {
    my ($want, $limit) = @_;
    my $deadline = time + $limit;
    while (time < $deadline) {
        my $v = violations();
        return $v if $want->($v);
        sleep 0.2;
    }
    return violations();
}

is(wait_for(sub { $_[0] == 0 }, 10), 0, 'a clean ledger: the audit reports 0');

# a balance that no longer matches its entries (only the owner can do this;
# the runtime role has no UPDATE on any table)
my $q = sql_quote($user);
psql_admin("UPDATE billing.accounts SET balance_micros = balance_micros + 1 WHERE user_id = $q");
my $n = eval {
    my $v = wait_for(sub { $_[0] >= 1 }, 10);
    $v;
};
psql_admin("UPDATE billing.accounts SET balance_micros = balance_micros - 1 WHERE user_id = $q");
ok($n >= 1, "a broken balance is reported by the gauge ($n)");

my $log = do { local $/; open my $f, '<', "$prefix/logs/error.log"; <$f> } // '';
like($log, qr/\[alert\].*ledger audit found \d+ invariant violations/, 'and logged as an alert');

is(wait_for(sub { $_[0] == 0 }, 10), 0, 'the gauge returns to 0 once the ledger is consistent again');

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
