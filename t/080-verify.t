# The operators' post-deployment script, deployment/billing/verify.sh,
# against a local instance configured like production (limits, CORS,
# problem+json errors) with the Stripe stand-in: every check must pass.
use strict;
use warnings;
use lib 't/lib', 'dev/lib';
use Test::More;
use BillingTest;
use StripeStandIn;

my $root = $ENV{BILLING_ROOT} // '.';
my $port = free_port();
my $user = 'verify-' . time() . "-$$";
my $stripe = StripeStandIn->start;

start_nginx('verify', qq{
    billing_database_url $ENV{TEST_NGINX_DATABASE_URL};
    billing_jwt_key file:$ENV{TEST_NGINX_JWT_PUBLIC_KEY_FILE};
    billing_jwt_issuer https://student-pilot.replit.app;
    billing_jwt_audience https://billing.scholarlink.app;
    billing_stripe_secret_key sk_test_51StandInKey000;
    billing_stripe_webhook_secret whsec_verify;
    billing_stripe_api_url } . $stripe->url . qq{;
    billing_checkout_urls success=https://student-pilot.replit.app/billing/success
                          cancel=https://student-pilot.replit.app/billing/cancel;
    billing_cors_origins https://student-pilot.replit.app;
    limit_req_zone \$billing_user_id zone=billing_user:1m rate=100r/m;
    limit_req_zone \$billing_user_id zone=billing_service:1m rate=6000r/m;
    limit_req_status 429;
    server {
        listen 127.0.0.1:$port;
        client_max_body_size 64k;
        error_page 404 405 413 429 \@billing_error;
        location \@billing_error { billing error; }
        location = /health  { billing health; }
        location = /readyz  { billing readyz; }
        location = /metrics { billing metrics; }
        location = /api/packages { billing packages; }
        location = /api/balance  { limit_req zone=billing_user burst=20 nodelay; billing balance; }
        location = /api/ledger   { limit_req zone=billing_user burst=20 nodelay; billing ledger; }
        location /api/purchases  { limit_req zone=billing_user burst=20 nodelay; billing purchases; }
        location = /api/usage/reconcile { limit_req zone=billing_service burst=200 nodelay; billing reconcile; }
        location /api/usage/holds { limit_req zone=billing_service burst=200 nodelay; billing holds; }
        location = /webhooks/stripe { client_max_body_size 1m; billing webhook; }
        location / { return 404; }
    }
}, workers => 1);

$ENV{BASE_URL} = "http://127.0.0.1:$port";
$ENV{USER_TOKEN} = mint_token(sub => $user);
$ENV{SERVICE_TOKEN} = mint_token(sub => 'ai-backend', scope => 'billing:usage');
$ENV{USER_ID} = $user;
$ENV{FUND_FIRST} = "perl -I$root/t/lib -MBillingTest -e 'fund_user(q{$user}, 5_000_000)'";

my $out = `$root/deployment/billing/verify.sh 2>&1`;
my $rc = $? >> 8;
note($out);
is($rc, 0, 'verify.sh passes against the local instance') or diag($out);
like($out, qr/^\d+ passed, 0 failed, (\d+) skipped$/m, 'every check passed');
my @skips = $out =~ /^SKIP (.*)$/mg;
is_deeply([grep { !/^TLS checks/ } @skips], [], 'nothing skipped but the TLS checks (the local instance is plain HTTP)');
unlike($out, qr/^FAIL /m, 'no FAIL line');

stop_nginx('verify');
$stripe->stop;
invariants_ok('invariants hold after verify.sh');
done_testing();
