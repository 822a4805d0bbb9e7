# nginx -t accepts good billing directives and rejects bad ones with a
# clear message that never contains a secret.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use File::Temp qw(tempdir);

my $nginx = $ENV{TEST_NGINX_BINARY} || 'nginx';
my $modules = $ENV{TEST_NGINX_LOAD_MODULES} or plan skip_all => 'TEST_NGINX_LOAD_MODULES not set';
my $dir = tempdir(CLEANUP => 1);

sub nginx_t {
    my ($http, $location) = @_;
    $location //= 'location = /health { billing health; }';
    open my $f, '>', "$dir/nginx.conf" or die;
    print $f join('', map { "load_module $_;\n" } split ' ', $modules) . "error_log $dir/error.log;\npid $dir/nginx.pid;\n"
           . "events {}\nhttp {\n$http\nserver { listen 127.0.0.1:1; $location }\n}\n";
    close $f;
    my $out = `$nginx -t -p $dir -c $dir/nginx.conf 2>&1`;
    return ($? == 0, $out);
}

my ($ok, $out) = nginx_t("billing_database_url 'postgresql://u:pw@127.0.0.1:5432/billing?sslmode=disable&connection_limit=10';\n"
                       . "billing_pool min=1 max=4 queue=16;\nbilling_db_timeouts connect=2s query=500ms;\n"
                       . "billing_metrics_zone m 256k;\nbilling_jwt_leeway 30s;\n"
                       . "billing_cors_origins https://student-pilot.replit.app;");
ok($ok, 'a complete valid configuration passes nginx -t') or diag $out;

my @bad = (
    [ '', 'location = /x { billing nope; }', qr/unknown billing endpoint "nope"/, 'unknown endpoint' ],
    [ 'billing_pool min=5 max=2;', undef, qr/has min greater than max/, 'pool min > max' ],
    [ 'billing_pool max=0;', undef, qr/invalid value "max=0"/, 'pool max=0' ],
    [ 'billing_pool size=3;', undef, qr/invalid parameter "size=3"/, 'unknown pool parameter' ],
    [ 'billing_db_timeouts connect=soon;', undef, qr/invalid timeout "connect=soon"/, 'bad timeout' ],
    [ 'billing_database_url env:BILLING_SURELY_UNSET_VAR;', undef, qr/BILLING_SURELY_UNSET_VAR/, 'missing env variable named' ],
    [ 'billing_database_url file:/nonexistent/secret;', undef, qr{/nonexistent/secret}, 'unreadable file named' ],
    [ q{billing_database_url 'postgresql://u:topsecret-7@h/db?connection_limit=abc';}, undef,
      qr/invalid billing_database_url/, 'bad connection_limit' ],
    [ 'billing_jwt_key file:/etc/hostname;', undef, qr/invalid billing_jwt_key/, 'not a PEM key' ],
    [ 'billing_metrics_zone m 4k;', undef, qr/invalid zone size "4k"/, 'metrics zone too small' ],
    [ "billing_database_url a;\nbilling_database_url b;", undef, qr/is duplicate/, 'duplicate directive' ],
);

for my $case (@bad) {
    my ($http, $loc, $re, $name) = @$case;
    ($ok, $out) = nginx_t($http, $loc);
    ok(!$ok, "rejected: $name");
    like($out, $re, "... with a clear message ($name)");
    unlike($out, qr/topsecret|pw\@/, "... and no secret in it ($name)");
}

done_testing();
