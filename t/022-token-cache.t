# The per-worker cache of verified tokens never extends a token's life,
# and a cached token is still exactly that token (no cross-user mix-up).
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use BillingTest;

my $port = free_port();
start_nginx('tokcache', qq{
    billing_database_url $ENV{TEST_NGINX_DATABASE_URL};
    billing_jwt_key file:$ENV{TEST_NGINX_JWT_PUBLIC_KEY_FILE};
    billing_jwt_issuer https://student-pilot.replit.app;
    billing_jwt_audience https://billing.scholarlink.app;
    billing_jwt_leeway 0s;
    server {
        listen 127.0.0.1:$port;
        location = /api/balance { billing balance; }
    }
}, workers => 1);

sub balance {
    my ($tok) = @_;
    my ($s, $h, $b) = http_request($port, { method => 'GET', path => '/api/balance',
                                            headers => { Authorization => "Bearer $tok" } });
    return ($s, $b);
}

my $short = mint_token(sub => 'cache-user-1', exp => time + 2);
my $other = mint_token(sub => 'cache-user-2');

my ($s, $b) = balance($short);
is($s, 200, 'a fresh token is accepted');
($s, $b) = balance($short);
is($s, 200, '... again (now from the cache)');
like($b, qr/"userId":"cache-user-1"/, '... as its own subject');
($s, $b) = balance($other);
like($b, qr/"userId":"cache-user-2"/, 'another token is another subject');

# More tokens than ways in some sets (300 tokens, 512 sets of 2: some sets
# get three, so entries are replaced): each token, first and again, is
# always its own subject.
my @many = map { mint_token(sub => "cache-many-$_") } 1 .. 300;
my $wrong = 0;
for my $round (1, 2) {
    for my $i (0 .. $#many) {
        my ($ms, $mb) = balance($many[$i]);
        $wrong++ unless $ms == 200 && $mb =~ /"userId":"cache-many-@{[$i + 1]}"/;
    }
}
is($wrong, 0, '300 tokens, twice each: every answer for its own subject');

my $tampered = $short;
$tampered =~ s/.$/ substr($short, -1) eq 'A' ? 'B' : 'A' /e;
($s) = balance($tampered);
is($s, 401, 'a one-character change of a cached token is refused');

sleep 3;
($s) = balance($short);
is($s, 401, 'once expired the cached token is refused');

stop_nginx('tokcache');
done_testing();
