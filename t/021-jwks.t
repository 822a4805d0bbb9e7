# Keys from a JWKS URL, shared by all workers: fetched with libcurl on the
# event loop, rotation picked up through an unknown kid, cached keys kept
# when the JWKS server is down, unknown-kid floods bounded by the cooldown.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Time::HiRes qw(time sleep);
use File::Temp qw(tempdir);
use POSIX ();
use JSON::PP;
use Crypt::PK::RSA;
use BillingTest;

my $dir = tempdir(CLEANUP => 1);
my $jwks_port = free_port();
my $port = free_port();

sub jwk_of {
    my ($file, $kid) = @_;
    my $jwk = Crypt::PK::RSA->new($file)->export_key_jwk('public', 1);
    return { %$jwk, kid => $kid, use => 'sig', alg => 'RS256' };
}

# publish(@keys) for the main JWKS server, publish_as($name, @keys) for another
sub publish_as {
    my ($name, @keys) = @_;
    open my $f, '>', "$dir/$name.tmp" or die;
    print $f encode_json({ keys => \@keys });
    close $f;
    rename "$dir/$name.tmp", "$dir/$name.json" or die;
}
sub publish { publish_as('jwks', @_) }

# a tiny JWKS server: serves $name.json and counts the fetches in $name.fetches
my %server_pid;
sub start_jwks_server {
    my ($port, $name) = @_;
    ($port, $name) = ($jwks_port, 'jwks') unless defined $port;
    my $pid = fork // die;
    if ($pid) { $server_pid{$name} = $pid; return }
    require IO::Socket::INET;
    my $l = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => $port,
                                  Listen => 16, ReuseAddr => 1) or POSIX::_exit(1);
    while (my $c = $l->accept) {
        my $req = '';
        while (defined(my $line = <$c>)) { $req .= $line; last if $line =~ /^\r?\n$/ }
        open my $cnt, '>>', "$dir/$name.fetches"; print $cnt "1\n"; close $cnt;
        my $body = do { local $/; open my $f, '<', "$dir/$name.json"; <$f> } // '{}';
        print $c "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
               . length($body) . "\r\nConnection: close\r\n\r\n$body";
        close $c;
    }
    POSIX::_exit(0);
}
sub stop_jwks_server {
    my ($name) = @_;
    $name //= 'jwks';
    my $pid = delete $server_pid{$name} or return;
    kill 'KILL', $pid;
    waitpid $pid, 0;
}
sub fetches_of { open my $f, '<', "$dir/$_[0].fetches" or return 0; my @l = <$f>; scalar @l }
sub fetches { fetches_of('jwks') }
END { local $?; stop_jwks_server($_) for keys %server_pid }

my $k1 = $ENV{BILLING_TEST_JWT_PRIVATE_KEY_FILE};
my $k2 = $ENV{BILLING_TEST_OTHER_PRIVATE_KEY_FILE};
publish(jwk_of($k1, 'k1'));
start_jwks_server();
wait_port($jwks_port, 5) or die 'jwks server did not start';

start_nginx('jwks', qq{
    billing_database_url $ENV{TEST_NGINX_DATABASE_URL};
    billing_jwt_jwks_url http://127.0.0.1:$jwks_port/.well-known/jwks.json;
    billing_jwt_jwks_allow_http on;
    billing_jwt_jwks_cooldown 2s;
    billing_jwt_issuer https://student-pilot.replit.app;
    billing_jwt_audience https://billing.scholarlink.app;
    server {
        listen 127.0.0.1:$port;
        location = /api/balance { billing balance; }
        location = /metrics { billing metrics; }
    }
}, workers => 2);

sub balance_status {
    my ($tok) = @_;
    my ($s) = http_request($port, { method => 'GET', path => '/api/balance',
                                    headers => { Authorization => "Bearer $tok" } });
    return $s;
}
sub eventually {
    my ($want, $tok, $limit) = @_;
    my $deadline = time + $limit;
    while (time < $deadline) {
        return 1 if balance_status($tok) == $want;
        sleep 0.2;
    }
    return 0;
}

my $tok1 = mint_token(sub => 'jwks-user-1', _header => { kid => 'k1' });
my $tok2 = mint_token(sub => 'jwks-user-2', _header => { kid => 'k2' }, _key_file => $k2);
my $forged = mint_token(sub => 'jwks-user-3', _header => { kid => 'k1' }, _key_file => $k2);

ok(eventually(200, $tok1, 10), 'a token signed with the published key is accepted');
is(balance_status($forged), 401, 'a token signed by another key under the same kid is refused');
is(balance_status(mint_token_none(_header => { kid => 'k1' })), 401, 'alg none is refused with JWKS too');
is(balance_status(mint_token_hs256_with_pubkey(_header => { kid => 'k1' })), 401, 'HS256 is refused with JWKS too');

# rotation: k2 is published; the first k2 token meets an unknown kid and
# makes a worker refresh; k2 tokens work from then on, k1 still works
my $before = fetches();
publish(jwk_of($k1, 'k1'), jwk_of($k2, 'k2'));
ok(eventually(200, $tok2, 10), 'a rotated-in key is picked up through its unknown kid');
ok(fetches() > $before, '... by fetching the JWKS again');
is(balance_status($tok1), 200, 'the old key still works while it is published');

# the JWKS server goes away: what was fetched keeps serving
stop_jwks_server();
is(balance_status($tok1), 200, 'JWKS server down: cached k1 still accepted');
is(balance_status($tok2), 200, 'JWKS server down: cached k2 still accepted');
my $tok3 = mint_token(sub => 'jwks-user-4', _header => { kid => 'k3' });
sleep 2.1;      # past the cooldown, so k3 forces a refresh, which fails
is(balance_status($tok3), 401, 'an unknown kid is refused while the server is down');
sleep 0.5;
is(balance_status($tok2), 200, 'the failed refresh kept the cached keys');

# a flood of unknown kids: at most one fetch per cooldown (2 s) for all workers
publish(jwk_of($k1, 'k1'), jwk_of($k2, 'k2'));
start_jwks_server();
wait_port($jwks_port, 5);
sleep 2.1;      # past the cooldown of the refresh above
$before = fetches();
my $t0 = time;
my @flood = map { { method => 'GET', path => '/api/balance',
                    headers => { Authorization => 'Bearer ' . mint_token(_header => { kid => "bogus-$_" }) } } } 1 .. 40;
my @r = parallel_requests($port, \@flood, 20);
is(scalar(grep { $_->[0] == 401 } @r), 40, 'forty tokens with unknown kids are all refused');
my $elapsed = time - $t0;
my $allowed = 1 + int($elapsed / 2) + 1;
ok(fetches() - $before <= $allowed, "... and caused at most $allowed JWKS fetches, not 40")
    or diag('fetches: ' . (fetches() - $before));

my (undef, undef, $m) = http_request($port, { method => 'GET', path => '/metrics' });
like($m, qr/billing_jwks_refreshes_total\{outcome="ok"\} [2-9]/, 'refreshes are counted');
like($m, qr/billing_jwks_refreshes_total\{outcome="error"\} [1-9]/, 'the failed refresh is counted');

stop_nginx('jwks');

# ---- a reload that changes the JWKS URL drops the keys of the old one at once
# (the refresh interval is an hour: nothing else would replace them). URL A
# publishes k1 only, URL B k2 only.
my $b_port = free_port();
publish_as('jwks_b', jwk_of($k2, 'k2'));
start_jwks_server($b_port, 'jwks_b');
wait_port($b_port, 5) or die 'second jwks server did not start';
publish(jwk_of($k1, 'k1'));

my $reload_conf = sub {
    my ($url) = @_;
    return qq{
    billing_database_url $ENV{TEST_NGINX_DATABASE_URL};
    billing_jwt_jwks_url $url;
    billing_jwt_jwks_allow_http on;
    billing_jwt_jwks_refresh 1h;
    billing_jwt_jwks_cooldown 1h;
    billing_jwt_issuer https://student-pilot.replit.app;
    billing_jwt_audience https://billing.scholarlink.app;
    server {
        listen 127.0.0.1:$port;
        location = /api/balance { billing balance; }
    }
};
};
my $prefix = start_nginx('jwks_reload', $reload_conf->("http://127.0.0.1:$jwks_port/a/jwks.json"),
                         workers => 2);
ok(eventually(200, $tok1, 10), 'reload: URL A serves k1');

my ($master, @old) = nginx_pids('jwks_reload');
{
    # the same configuration but URL B, as start_nginx wrote it
    my $file = "$prefix/conf/nginx.conf";
    my $text = do { local $/; open my $f, '<', $file or die; <$f> };
    $text =~ s{http://127\.0\.0\.1:$jwks_port/a/jwks\.json}{http://127.0.0.1:$b_port/b/jwks.json}
        or die 'no URL A in the configuration';
    open my $f, '>', $file or die;
    print $f $text;
    close $f;
}
kill 'HUP', $master;
my $deadline = time + 15;
while (time < $deadline) {
    my %now = map { $_ => 1 } nginx_pids('jwks_reload');
    last if !grep { $now{$_} } @old;    # every old worker has exited
    sleep 0.1;
}
my %now = map { $_ => 1 } nginx_pids('jwks_reload');
ok(!grep({ $now{$_} } @old), 'reload: the old workers are gone');

is(balance_status($tok1), 401, 'reload to URL B: a k1 token (URL A\'s key) is refused at once');
ok(eventually(200, $tok2, 10), 'reload to URL B: its key k2 is fetched and accepted');
is(balance_status($tok1), 401, 'and k1 stays refused');
ok(fetches_of('jwks_b') >= 1, 'URL B was fetched');

my $log = do { local $/; open my $f, '<', "$prefix/logs/error.log"; <$f> } // '';
like($log, qr/the JWKS URL changed: the keys of the previous one are dropped \(1\)/,
     'the drop is logged');
stop_nginx('jwks_reload');
done_testing();
