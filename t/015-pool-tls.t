# A connect in which libpq replaces its socket: a PostgreSQL of this test's
# own with TLS on and pg_hba accepting TCP only without TLS (hostnossl). The
# pool connects with libpq's default sslmode=prefer: libpq tries TLS, the
# server refuses it after the handshake, libpq closes that socket and
# connects again in plain text, on a new socket that usually gets the old
# one's number. The pool must watch the new socket (the kernel dropped the
# old one's epoll registration) or the connect hangs until it times out.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use File::Temp qw(tempdir);
use Time::HiRes qw(time sleep);
use BillingTest;

my $root = $ENV{BILLING_ROOT} // '.';
my $pgserver = "$root/t/pgserver.sh";
$ENV{BILLING_PG_DIR} or plan skip_all => 'BILLING_PG_DIR not set';

# the server of this test only, stopped at the end whatever happens
my $dir = tempdir('billing-tls-XXXXXX', TMPDIR => 1, CLEANUP => 1);
chmod 0755, $dir;
my $Main = $$;
END { system("$pgserver stop $dir/pg >/dev/null 2>&1") if $$ == $Main }

sub env_of {
    my %e;
    open my $fh, '<', "$dir/pg/env" or die "no $dir/pg/env";
    while (<$fh>) { $e{$1} = $2 if /^export (\w+)=(.*)$/ }
    return \%e;
}

system("$pgserver start $dir/pg >/dev/null") == 0 or die 'pgserver start failed';
system("$pgserver tls-nossl $dir/pg >/dev/null") == 0 or die 'pgserver tls-nossl failed';
my $env = env_of();
{
    local $ENV{DATABASE_URL} = $env->{TEST_NGINX_DATABASE_URL};
    system("$root/sql/migrate.sh --grant-runtime '$env->{BILLING_TEST_ADMIN_URL}' >/dev/null") == 0
        or die 'migrations failed';
}

my $url = $env->{TEST_NGINX_DATABASE_URL};
unlike($url, qr/sslmode/, 'the URL leaves sslmode to libpq (prefer)');

sub pg_log { my $l = do { local $/; open my $fh, '<', "$dir/pg/postgres.log"; <$fh> } // ''; $l }
my $seen = length pg_log();

# min=0: the first request opens the connection, and holds the lowest free
# descriptor meanwhile, so the socket libpq opens after the refusal gets the
# number of the one it closed, as it usually does in a busy worker
my $port = free_port();
{
    local $ENV{TEST_NGINX_DATABASE_URL} = $url;
    start_billing_nginx('tls', port => $port, workers => 1, pool => 'min=0 max=2 queue=8',
                        timeouts => 'connect=3s query=3s');
}

# a hung connect would answer 503 after the 3 s connect timeout, every time
my ($s, $h, $b) = http_request($port, 'GET /readyz', 10);
is($s, 200, 'ready: the pool connected after the TLS attempt was refused');
is($b, '{"status":"ready","checks":{"database":"ok","migrations":"ok"}}', '... with the contract\'s body');

my $log = substr(pg_log(), $seen);
like($log, qr/no pg_hba\.conf entry for host "127\.0\.0\.1", user "billing_rt", database "billing", SSL encryption/,
     'the server refused the TLS attempt (so libpq replaced the socket)');

my $ssl = psql_url($env->{BILLING_TEST_ADMIN_URL},
                   "SELECT string_agg(s.ssl::text, ',') FROM pg_stat_ssl s "
                   . "JOIN pg_stat_activity a USING (pid) WHERE a.application_name = 'ngx_billing'");
like($ssl, qr/^false(,false)*$/, 'the pool\'s connections are the plain-text ones');

my $errors = do { local $/; open my $fh, '<', nginx_prefix('tls') . '/logs/error.log'; <$fh> } // '';
ok($errors !~ /connect timed out/, 'no connect timed out');
ok($errors !~ /\[alert\]/, 'no alert (an epoll registration lost with its socket)');

stop_nginx('tls');
done_testing();
