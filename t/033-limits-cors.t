# Per-user limit_req through $billing_user_id, and CORS.
use strict;
use warnings;
use lib 't/lib';
use Test::Nginx::Socket 'no_plan';
use BillingTest;

our $HttpConfig = qq{
    billing_database_url $ENV{TEST_NGINX_DATABASE_URL};
    billing_jwt_key file:$ENV{TEST_NGINX_JWT_PUBLIC_KEY_FILE};
    billing_jwt_issuer https://student-pilot.replit.app;
    billing_jwt_audience https://billing.scholarlink.app;
    billing_cors_origins https://student-pilot.replit.app;
    limit_req_zone \$billing_user_id zone=billing_user:1m rate=1r/m;
    limit_req_status 429;
};
our $Config = q{
    error_page 429 @billing_error;
    location @billing_error { billing error; }
    location = /api/balance { limit_req zone=billing_user burst=2 nodelay; billing balance; }
};

# Blocks run shuffled; each uses its own users, user('tN'), and nginx
# starts afresh for every block, so no block inherits another's limit.
our $U = "lim-" . time() . "-$$";
sub bearer { "Bearer " . mint_token(sub => "$U-$_[0]") }

# The rate limits of a shipped configuration, made small: its own zones,
# keys, map and the limit_req lines of its /api/balance location, with every
# rate 1r/m and every burst 2, so that a few requests show what they do.
# Returns (http-level text, the location's limit_req lines).
sub shipped_limits {
    my ($file) = @_;
    my $root = $ENV{BILLING_ROOT} // '.';
    open my $fh, '<', "$root/$file" or die "$file: $!";
    my $conf = do { local $/; <$fh> };
    # the development template: what conf/run.sh puts in its placeholders
    $conf =~ s/\@BILLING_\w+_PER_MINUTE\@/100/g;
    $conf =~ s/\@USER_LIMIT\@/limit_req zone=billing_user burst=20 nodelay;/g;
    $conf =~ s/\@SERVICE_LIMIT\@/limit_req zone=billing_service burst=200 nodelay;/g;
    my @zones = $conf =~ /^\s*(limit_req_zone\s[^;]*;)/mg;
    my @maps = $conf =~ /^\s*(map\s+\$billing_user_id\s.*?\})/msg;
    my ($loc) = $conf =~ /location\s*=\s*\/api\/balance\s*\{(.*?)\}/s
        or die "$file: no /api/balance location";
    my @limits = $loc =~ /(limit_req\s+zone=[^;]*;)/g;
    s/rate=\d+r\/[ms]/rate=1r\/m/ for @zones;
    s/burst=\d+/burst=2/ for @limits;
    return (join("\n", @maps, @zones, 'limit_req_status 429;'), join(' ', @limits));
}

our %Shipped;
for my $f ('deployment/billing/configmap.yaml', 'conf/billing.dev.conf.in') {
    my ($http, $limits) = shipped_limits($f);
    $Shipped{$f} = {
        http => qq{
    billing_database_url $ENV{TEST_NGINX_DATABASE_URL};
    billing_jwt_key file:$ENV{TEST_NGINX_JWT_PUBLIC_KEY_FILE};
    billing_jwt_issuer https://student-pilot.replit.app;
    billing_jwt_audience https://billing.scholarlink.app;
$http
},
        config => qq{
    error_page 429 \@billing_error;
    location \@billing_error { billing error; }
    location = /api/balance { $limits billing balance; }
},
    };
}

# three requests without a valid token ($auth: an Authorization value or
# none), all let through by the burst: 401 each
sub exhaust_anonymous {
    my ($auth) = @_;
    for (1 .. 3) {
        my ($s) = http_request($ENV{TEST_NGINX_SERVER_PORT},
            { method => 'GET', path => '/api/balance',
              headers => { defined $auth ? (Authorization => $auth) : () } });
        die "anonymous request $_ answered $s" unless $s == 401;
    }
}

# spends the burst of a user: three requests that are all let through
sub exhaust {
    my ($id) = @_;
    for (1 .. 3) {
        my ($s) = http_request($ENV{TEST_NGINX_SERVER_PORT},
            { method => 'GET', path => '/api/balance', headers => { Authorization => bearer($id) } });
        die "request $_ for $id answered $s" unless $s == 200;
    }
}

run_tests();

__DATA__

=== TEST 1: past the per-user burst the answer is 429 problem+json
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- init
main::exhaust('t1');
--- more_headers eval
"Authorization: " . main::bearer('t1') . "\nOrigin: https://student-pilot.replit.app"
--- request
GET /api/balance
--- error_code: 429
--- response_headers
Content-Type: application/problem+json
Access-Control-Allow-Origin: https://student-pilot.replit.app
--- response_body_like chomp
"status":429,.*"code":"rate_limited"
--- error_log
limiting requests



=== TEST 2: another user is not limited by the first user's requests
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- init
main::exhaust('t2-first');
--- more_headers eval
"Authorization: " . main::bearer('t2-second')
--- request
GET /api/balance
--- error_code: 200



=== TEST 3: an allowed origin gets Access-Control-Allow-Origin and Vary
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- more_headers eval
"Authorization: " . main::bearer('t3') . "\nOrigin: https://student-pilot.replit.app"
--- request
GET /api/balance
--- response_headers
Access-Control-Allow-Origin: https://student-pilot.replit.app
Vary: Origin
Access-Control-Expose-Headers: Idempotent-Replayed



=== TEST 4: an origin not in the list gets no Access-Control-Allow-Origin
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- more_headers eval
"Authorization: " . main::bearer('t4') . "\nOrigin: https://student-pilot.replit.app.evil.example"
--- request
GET /api/balance
--- response_headers
!Access-Control-Allow-Origin
Vary: Origin



=== TEST 5: a preflight from an allowed origin is answered 204
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- more_headers
Origin: https://student-pilot.replit.app
Access-Control-Request-Method: GET
Access-Control-Request-Headers: authorization
--- request
OPTIONS /api/balance
--- error_code: 204
--- response_headers
Access-Control-Allow-Origin: https://student-pilot.replit.app
Access-Control-Allow-Methods: GET, POST, PUT, DELETE, OPTIONS
Access-Control-Allow-Headers: Authorization, Content-Type, Idempotency-Key



=== TEST 6: a preflight from another origin gets no CORS grant
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- more_headers
Origin: https://evil.example
Access-Control-Request-Method: GET
--- request
OPTIONS /api/balance
--- error_code: 204
--- response_headers
!Access-Control-Allow-Origin
!Access-Control-Allow-Methods



=== TEST 7: the shipped deployment config: a flood without a token gets 429 from its address
--- http_config eval: $::Shipped{'deployment/billing/configmap.yaml'}{http}
--- config eval: $::Shipped{'deployment/billing/configmap.yaml'}{config}
--- init
main::exhaust_anonymous(undef);
--- request
GET /api/balance
--- error_code: 429
--- response_headers
Content-Type: application/problem+json
--- response_body_like chomp
"status":429,.*"code":"rate_limited"
--- error_log
limiting requests



=== TEST 8: the shipped deployment config: forged tokens count as no token
--- http_config eval: $::Shipped{'deployment/billing/configmap.yaml'}{http}
--- config eval: $::Shipped{'deployment/billing/configmap.yaml'}{config}
--- init
main::exhaust_anonymous('Bearer ' . BillingTest::mint_token(sub => "$::U-t8",
                        _key_file => $ENV{BILLING_TEST_OTHER_PRIVATE_KEY_FILE}));
--- more_headers eval
"Authorization: Bearer " . BillingTest::mint_token(sub => "$::U-t8-other",
    _key_file => $ENV{BILLING_TEST_OTHER_PRIVATE_KEY_FILE})
--- request
GET /api/balance
--- error_code: 429
--- response_body_like chomp
"code":"rate_limited"



=== TEST 9: the shipped deployment config: a valid user is not limited by an anonymous flood from the same address
--- http_config eval: $::Shipped{'deployment/billing/configmap.yaml'}{http}
--- config eval: $::Shipped{'deployment/billing/configmap.yaml'}{config}
--- init
main::exhaust_anonymous(undef);
--- more_headers eval
"Authorization: " . main::bearer('t9')
--- request
GET /api/balance
--- error_code: 200
--- response_body_like chomp
"userId":"lim-



=== TEST 10: the development config: a flood without a token gets 429 from its address
--- http_config eval: $::Shipped{'conf/billing.dev.conf.in'}{http}
--- config eval: $::Shipped{'conf/billing.dev.conf.in'}{config}
--- init
main::exhaust_anonymous('Bearer not.a.token');
--- request
GET /api/balance
--- error_code: 429
--- response_body_like chomp
"code":"rate_limited"



=== TEST 11: the development config: a valid user is not limited by an anonymous flood from the same address
--- http_config eval: $::Shipped{'conf/billing.dev.conf.in'}{http}
--- config eval: $::Shipped{'conf/billing.dev.conf.in'}{config}
--- init
main::exhaust_anonymous(undef);
--- more_headers eval
"Authorization: " . main::bearer('t11')
--- request
GET /api/balance
--- error_code: 200
