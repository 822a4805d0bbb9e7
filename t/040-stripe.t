# Stripe: purchases (Checkout Session through the stand-in), webhooks
# (signatures, deduplication, ordering, refunds) and signed outgoing
# notifications, against a real PostgreSQL.
use strict;
use warnings;
use lib 't/lib', 'dev/lib';
use Test::Nginx::Socket 'no_plan';
use BillingTest;
use StripeStandIn;
use IO::Select ();
use IO::Socket::INET ();
use JSON::PP ();
use Time::HiRes qw(sleep time);

# Blocks run shuffled. Each works on its own user, user('tN'), and its own
# purchase, $P{tN} (made when the file is read: the events that name it are
# built then), and checks what it wrote in --- after_requests. The Stripe
# stand-in is shared; a block that tells it to fail or stall does so for
# one call, its own.
our ($Stripe, %P, %W, $HttpConfig, $HttpConfig2, $HttpConfigDown, $HttpConfigNoStripe, $Run);

our ($J, $Secret1, $Secret2);
BEGIN {
    $J = JSON::PP->new->canonical;
    $Secret1 = 'whsec_test_primary_1f2e3d';
    $Secret2 = 'whsec_test_rotated_9a8b7c';
}


sub user { "user-040-$Run-$_[0]" }
sub auth { "Authorization: Bearer " . BillingTest::mint_token(sub => user($_[0])) }

# a Stripe event, as Stripe would send it
sub event {
    my ($type, $obj, %o) = @_;
    return $J->encode({
        id => $o{id} // "evt_${Run}_" . int(rand 1e9), object => 'event',
        api_version => '2024-06-20', created => int time, livemode => JSON::PP::false,
        pending_webhooks => 1, type => $type, data => { object => $obj },
    });
}

sub session {
    my ($p, %o) = @_;
    return { id => "cs_test_$P{$p}{tag}", object => 'checkout.session',
             client_reference_id => $P{$p}{id}, amount_total => $P{$p}{cents},
             currency => 'usd', mode => 'payment', status => 'complete',
             payment_status => 'paid', payment_intent => "pi_$P{$p}{tag}",
             metadata => { purchase_id => $P{$p}{id}, user_id => $P{$p}{user} }, %o };
}

sub intent {
    my ($p) = @_;
    return { id => "pi_$P{$p}{tag}", object => 'payment_intent', amount => $P{$p}{cents},
             amount_received => $P{$p}{cents}, currency => 'usd', status => 'succeeded',
             metadata => { purchase_id => $P{$p}{id}, user_id => $P{$p}{user} } };
}

sub charge {
    my ($p, $refunded) = @_;
    return { id => "ch_$P{$p}{tag}", object => 'charge', amount => $P{$p}{cents},
             amount_refunded => $refunded, refunded => ($refunded >= $P{$p}{cents}
             ? JSON::PP::true : JSON::PP::false), currency => 'usd',
             payment_intent => "pi_$P{$p}{tag}", metadata => {} };
}

# a signed webhook: [request, more_headers]
sub signed {
    my ($name, $body, %o) = @_;
    my $secret = $o{secret} // $Secret1;
    my $sig = $o{signature} // BillingTest::stripe_signature($secret, $o{signed_body} // $body, $o{t});
    $W{$name} = $body;
    return ("POST /webhooks/stripe\n$body",
            "Content-Type: application/json; charset=utf-8\n"
            . ($o{no_header} ? '' : "Stripe-Signature: $sig"));
}

our %Req;
sub req { $Req{$_[0]}[0] }
sub hdr { $Req{$_[0]}[1] }

sub balance {
    my ($user) = @_;
    my $b = BillingTest::psql_admin("SELECT balance_micros FROM billing.accounts "
                                    . "WHERE user_id = '$user'");
    return $b eq '' ? 0 : $b;
}

sub pstatus {
    BillingTest::psql_admin("SELECT status FROM billing.purchases WHERE id = '$_[0]'");
}

# the statuses of a user's purchases, oldest first ('' when none)
sub purchases_of {
    BillingTest::psql_admin("SELECT coalesce(string_agg(status, ',' ORDER BY created_at), '') "
                            . "FROM billing.purchases WHERE user_id = '" . user($_[0]) . "'");
}

# a refused webhook credits nothing, leaves the purchase pending and
# records no event
sub refused {
    my ($id) = @_;
    Test::More::is(balance(user($id)), 0, 'the refused event credits nothing');
    Test::More::is(pstatus($P{$id}{id}), 'pending', 'and leaves the purchase pending');
    Test::More::is(events_recorded("evt_${Run}_$id"), 0, 'and records no event');
}

sub events_recorded {
    BillingTest::psql_admin("SELECT count(*) FROM billing.stripe_events WHERE id = '$_[0]'");
}

# posts the signed webhook built under $name; returns (status, body)
sub post_webhook {
    my ($name) = @_;
    my ($st, undef, $body) = BillingTest::http_request($ENV{TEST_NGINX_SERVER_PORT}, { method => 'POST',
        path => '/webhooks/stripe', headers => [ map { split /:\s*/, $_, 2 } split /\n/, hdr($name) ],
        body => $W{$name} });
    return ($st, $body);
}

# the Checkout Session calls the stand-in received for a user, each as
# { call => the recorded request, form => its decoded form fields }
sub checkout_calls {
    my ($id) = @_;
    my @out;
    for my $c (grep { $_->{path} eq '/v1/checkout/sessions' } $Stripe->requests) {
        my %f = map { my ($k, $v) = split /=/, $_, 2;
                      for ($k, $v) { $_ //= ''; tr/+/ /; s/%([0-9A-Fa-f]{2})/chr hex $1/ge }
                      ($k => $v) } split /&/, $c->{body} // '';
        push @out, { call => $c, form => \%f } if ($f{'metadata[user_id]'} // '') eq user($id);
    }
    return @out;
}

BEGIN {
    $Run = join '', map { ('a' .. 'z')[rand 26] } 1 .. 8;
    $Stripe = StripeStandIn->start;

    # the purchase of each block that needs one, owned by the block's user
    my %cents = (starter => [500, 5000000], standard => [2000, 21000000], pro => [5000, 55000000]);
    for my $spec ([t7 => 'starter'], [t8 => 'starter'],
                  (map { [$_ => 'starter'] } qw(t11 t12 t13 t14 t16 t17 t18 t19 t20 t21 t22 t23 t24 t33)),
                  [t15 => 'standard'], [t25 => 'pro'], [t26 => 'starter', 'failed'],
                  [t31b => 'standard'], [n1 => 'starter'], [n2 => 'starter'])
    {
        my ($p, $pkg, $status) = @$spec;
        $P{$p} = { id => uuid_v4(), user => user($p), pkg => $pkg, cents => $cents{$pkg}[0],
                   micros => $cents{$pkg}[1], tag => "${Run}_$p" };
        BillingTest::psql_admin(
            "INSERT INTO billing.purchases (id, user_id, package_code, amount_cents, currency, "
            . "credits_micros, status) VALUES ('$P{$p}{id}', '$P{$p}{user}', '$pkg', "
            . "$cents{$pkg}[0], 'usd', $cents{$pkg}[1], '" . ($status // 'pending') . "')");
    }

    my $base = qq{
    billing_database_url $ENV{TEST_NGINX_DATABASE_URL};
    billing_pool min=1 max=4 queue=32;
    billing_db_timeouts connect=2s query=5s;
    billing_jwt_key file:$ENV{TEST_NGINX_JWT_PUBLIC_KEY_FILE};
    billing_jwt_issuer $BillingTest::ISS;
    billing_jwt_audience $BillingTest::AUD;
    billing_stripe_secret_key sk_test_51StandInKey000;
    billing_stripe_api_url } . $Stripe->url . qq{/;
    billing_stripe_timeouts connect=2s total=2s;
    billing_checkout_urls "success=https://student-pilot.replit.app/billing/success?session_id={CHECKOUT_SESSION_ID}"
                          cancel=https://student-pilot.replit.app/billing/cancel;
};
    $HttpConfig = $base . "    billing_stripe_webhook_secret $Secret1;\n";
    $HttpConfig2 = $base . "    billing_stripe_webhook_secret $Secret1;\n"
                         . "    billing_stripe_webhook_secret $Secret2;\n";
    ($HttpConfigDown = $HttpConfig) =~ s{billing_database_url \S+;}
        {billing_database_url postgresql://nobody:pw\@127.0.0.1:9/billing;\n    billing_db_timeouts connect=1s query=1s;};
    $HttpConfigDown =~ s/billing_db_timeouts connect=2s query=5s;\n//;
    ($HttpConfigNoStripe = $HttpConfig) =~ s{billing_stripe_api_url \S+;}{billing_stripe_api_url http://127.0.0.1:9;};

    my $now = int time;
    $Req{t11} = [signed(t11 => event('checkout.session.completed', session('t11')))];
    $Req{t12} = [signed(t12 => event('checkout.session.completed', session('t12')))];
    $Req{t13} = [signed(t13 => event('checkout.session.completed', session('t13')))];
    $Req{t13pi} = [signed(t13pi => event('payment_intent.succeeded', intent('t13')))];
    $Req{t14pi} = [signed(t14pi => event('payment_intent.succeeded', intent('t14')))];
    $Req{t14} = [signed(t14 => event('checkout.session.completed', session('t14')))];
    $Req{t15unpaid} = [signed(t15unpaid => event('checkout.session.completed', session('t15', payment_status => 'unpaid')))];
    $Req{t15} = [signed(t15 => event('checkout.session.async_payment_succeeded', session('t15')))];
    # rejected signatures: each block its own purchase and event
    my %d = map { $_ => event('checkout.session.completed', session($_), id => "evt_${Run}_$_") }
            qw(t16 t17 t18 t19 t20 t21);
    $Req{t16} = [signed(t16 => $d{t16}, secret => 'whsec_not_ours')];
    $Req{t17} = [signed(t17 => $d{t17}, t => $now - 301)];
    # an hour ahead: still beyond the 300 s tolerance when this block runs last
    $Req{t18} = [signed(t18 => $d{t18}, t => $now + 3600)];
    (my $altered = $d{t19}) =~ s/"amount_total":500/"amount_total":50/;
    $Req{t19} = [signed(t19 => $altered, signed_body => $d{t19})];
    $Req{t20} = [signed(t20 => $d{t20}, no_header => 1)];
    $Req{t21} = [signed(t21 => $d{t21}, signature => 'v1=abc,t=x')];
    $Req{t22} = [signed(t22 => event('checkout.session.completed', session('t22')), secret => $Secret2)];
    $Req{t23} = [signed(t23 => event('checkout.session.completed', session('t23'), id => "evt_${Run}_t23"),
                        secret => $Secret2)];
    my $f = event('checkout.session.completed', session('t24'));
    my $good = BillingTest::stripe_signature($Secret1, $f, $now);
    my ($goodv1) = $good =~ /v1=(\w+)/;
    $Req{t24} = [signed(t24 => $f, signature => "t=$now,v1=" . ('0' x 64) . ",v0=ignored,v1=$goodv1")];
    $Req{t25paid} = [signed(t25paid => event('checkout.session.completed', session('t25')))];
    $Req{t25part} = [signed(t25part => event('charge.refunded', charge('t25', 1000)))];
    $Req{t25full} = [signed(t25full => event('charge.refunded', charge('t25', 5000)))];
    $Req{t26} = [signed(t26 => event('checkout.session.completed', session('t26')))];
    $Req{t27} = [signed(t27 => event('customer.created', { id => "cus_$Run", object => 'customer' }))];
    $Req{t28} = [signed(t28 => '{"id":"evt_x","type":')];
    $Req{t29} = [signed(t29 => '{"type":"checkout.session.completed","data":{}}')];
    $Req{t33} = [signed(t33 => event('checkout.session.completed', session('t33'), id => "evt_${Run}_t33"))];
}

add_response_body_check(\&BillingTest::after_requests_check);
run_tests();

# ------------------------------------------------------------------ notifications

{
    my $secret = 'notify-shared-secret-040';
    my $recv = StripeStandIn->start(mode => 'notify', secret => $secret);
    my $port = BillingTest::free_port();
    my $conf = $HttpConfig . qq{
    billing_notify_url } . $recv->url . qq{/hooks/billing;
    billing_notify_secret $secret;
    billing_notify_interval 200ms;
    server {
        listen 127.0.0.1:$port;
        location = /webhooks/stripe { client_max_body_size 1m; billing webhook; }
    }
};
    # what earlier tests (and files) left undelivered is not ours to watch
    BillingTest::psql_admin("UPDATE billing.outbox SET delivered_at = now() WHERE delivered_at IS NULL");
    $recv->control(fail => 1, fail_status => 500);

    BillingTest::start_nginx('notify040', $conf, workers => 2);

    my ($req, $hdr) = signed(n1 => event('checkout.session.completed', session('n1')));
    my ($st) = BillingTest::http_request($port, { method => 'POST', path => '/webhooks/stripe',
        headers => [ map { split /:\s*/, $_, 2 } split /\n/, $hdr ], body => $W{n1} });
    is($st, 200, 'webhook for the notification test accepted');

    my $want = sub {
        my ($pid) = @_;
        return grep { $_->{status} == 200 && $_->{signature_ok}
                      && (eval { $J->decode($_->{body}) } // {})->{data}{purchaseId} eq $pid }
               $recv->requests;
    };
    my $end = time + 20;
    sleep 0.1 while time < $end && !$want->($P{n1}{id});
    my @ok = $want->($P{n1}{id});
    is(scalar @ok, 1, 'purchase.completed delivered once after a failed first attempt');
    my @all = grep { ($_->{body} // '') =~ /\Q$P{n1}{id}\E/ } $recv->requests;
    is($all[0]{status}, 500, 'the first attempt was refused by the receiver');
    ok(@all >= 2, 'and retried');
    if (@ok) {
        my $n = $ok[0];
        my $body = $J->decode($n->{body});
        is($body->{type}, 'purchase.completed', 'notification type');
        is($n->{path}, '/hooks/billing', 'posted to the configured URL');
        like($n->{headers}{'content-type'}, qr{^application/json}, 'JSON body');
        like($n->{headers}{'x-billing-signature'}, qr/^t=\d+,v1=[0-9a-f]{64}$/, 'signature header format');
        is($n->{event_id}, $body->{id}, 'X-Billing-Event-Id is the event id');
        is($all[0]{event_id}, $n->{event_id}, 'the retry carries the same event id');
        ok($n->{signature_ok}, 'the receiver verified the signature');
    }

    # a second one goes through at the first attempt
    ($req, $hdr) = signed(n2 => event('checkout.session.completed', session('n2')));
    ($st) = BillingTest::http_request($port, { method => 'POST', path => '/webhooks/stripe',
        headers => [ map { split /:\s*/, $_, 2 } split /\n/, $hdr ], body => $W{n2} });
    is($st, 200, 'second webhook accepted');
    $end = time + 10;
    sleep 0.1 while time < $end && !$want->($P{n2}{id});
    is(scalar(grep { ($_->{body} // '') =~ /\Q$P{n2}{id}\E/ } $recv->requests), 1,
       'delivered at the first attempt');
    $end = time + 5;
    sleep 0.1 while time < $end && BillingTest::psql_admin(
        "SELECT count(*) FROM billing.outbox WHERE delivered_at IS NULL") ne '0';
    is(BillingTest::psql_admin("SELECT count(*) FROM billing.outbox WHERE delivered_at IS NULL"),
       '0', 'the outbox is drained');

    BillingTest::stop_nginx('notify040');
    $recv->stop;
    my $log = do { local $/; open my $fh, '<', BillingTest::nginx_prefix('notify040') . '/logs/error.log'; <$fh> } // '';
    unlike($log, qr/\Q$secret\E|sk_test_51StandInKey000|\Q$Secret1\E/, 'no secret in the error log');
}

BillingTest::invariants_ok('ledger invariants hold after the Stripe tests');

__DATA__

=== TEST 1: a purchase creates a Checkout Session and answers 201
--- http_config eval: $::HttpConfig
--- config
location /api/purchases { billing purchases; }
--- request
POST /api/purchases
{"packageCode":"starter"}
--- more_headers eval
"Content-Type: application/json\n" . main::auth('t1')
--- error_code: 201
--- response_headers
Content-Type: application/json
--- response_body_like chomp
^\{"purchaseId":"[0-9a-f-]{36}","packageCode":"starter","amountCents":500,"currency":"usd","creditsMicros":5000000,"status":"pending","checkoutSessionId":"(cs_test_\w+)","checkoutUrl":"http://127\.0\.0\.1:\d+/c/pay/\1"\}$
--- no_error_log
[error]
sk_test_51StandInKey000
--- after_requests
# what the stand-in received, as Stripe would read it
my @calls = main::checkout_calls('t1');
Test::More::is(scalar @calls, 1, 'the stand-in was asked once for a checkout session');
my ($c, $f) = @{ $calls[0] // { call => {}, form => {} } }{qw(call form)};
my $pid = $f->{client_reference_id} // '';
Test::More::is($c->{status}, 200, 'the stand-in created the session');
Test::More::is($c->{headers}{authorization}, 'Bearer sk_test_51StandInKey000', 'secret key sent as a bearer token');
Test::More::is($c->{headers}{'idempotency-key'}, "purchase-$pid", 'idempotency key derived from the purchase id');
Test::More::like($c->{headers}{'content-type'}, qr{^application/x-www-form-urlencoded}, 'form encoded');
Test::More::is($f->{mode}, 'payment', 'mode=payment');
Test::More::is($f->{'line_items[0][price_data][currency]'}, 'usd', 'currency usd');
Test::More::is($f->{'line_items[0][price_data][unit_amount]'}, '500', 'unit amount is the package price in cents');
Test::More::is($f->{'line_items[0][quantity]'}, '1', 'quantity 1');
Test::More::is($f->{'line_items[0][price_data][product_data][name]'}, 'Starter', 'the product is named after the package');
Test::More::is($f->{'metadata[purchase_id]'}, $pid, 'metadata[purchase_id]');
Test::More::is($f->{'payment_intent_data[metadata][purchase_id]'}, $pid, 'payment_intent_data[metadata][purchase_id]');
Test::More::is($f->{'metadata[user_id]'}, main::user('t1'), 'metadata[user_id]');
Test::More::is($f->{'payment_intent_data[metadata][user_id]'}, main::user('t1'), 'payment_intent_data[metadata][user_id]');
Test::More::is($f->{success_url}, 'https://student-pilot.replit.app/billing/success?session_id={CHECKOUT_SESSION_ID}',
               'success URL passed through');
Test::More::is($f->{cancel_url}, 'https://student-pilot.replit.app/billing/cancel', 'cancel URL');
Test::More::like(BillingTest::psql_admin("SELECT status || ' ' || checkout_session_id FROM billing.purchases WHERE id = '$pid'"),
                 qr/^pending cs_test_\w+$/, 'the purchase stores the session');



=== TEST 2: an unknown package is 422 and Stripe is not asked
--- http_config eval: $::HttpConfig
--- config
location /api/purchases { billing purchases; }
--- request
POST /api/purchases
{"packageCode":"platinum"}
--- more_headers eval
"Content-Type: application/json\n" . main::auth('t2')
--- error_code: 422
--- response_body_like chomp
"code":"unknown_package"
--- after_requests
Test::More::is(main::purchases_of('t2'), '', 'no purchase');
Test::More::is(scalar(main::checkout_calls('t2')), 0, 'Stripe is not asked');



=== TEST 3: a malformed body is 400, without a purchase
--- http_config eval: $::HttpConfig
--- config
location /api/purchases { billing purchases; }
--- request
POST /api/purchases
{"packageCode":42}
--- more_headers eval
"Content-Type: application/json\n" . main::auth('t3')
--- error_code: 400
--- response_body_like chomp
"code":"invalid_request"
--- after_requests
Test::More::is(main::purchases_of('t3'), '', 'no purchase');



=== TEST 4: Stripe declines (402 card_error): 502 stripe_error, purchase failed
--- http_config eval: $::HttpConfig
--- config
location /api/purchases { billing purchases; }
--- init
$main::Stripe->control(fail => 1, fail_status => 402);
--- request
POST /api/purchases
{"packageCode":"starter"}
--- more_headers eval
"Content-Type: application/json\n" . main::auth('t4')
--- error_code: 502
--- response_headers
Content-Type: application/problem+json
--- response_body_like chomp
"detail":"The payment provider could not create a checkout session \(HTTP 402 card_error card_declined\); the purchase was marked failed and nothing was charged","code":"stripe_error"\}$
--- after_requests
Test::More::is(main::purchases_of('t4'), 'failed', 'the purchase is failed');
Test::More::is(main::balance(main::user('t4')), 0, 'a failed purchase credits nothing');



=== TEST 5: Stripe fails (500): 502 stripe_error, purchase failed
--- http_config eval: $::HttpConfig
--- config
location /api/purchases { billing purchases; }
--- init
$main::Stripe->control(fail => 1, fail_status => 500);
--- request
POST /api/purchases
{"packageCode":"standard"}
--- more_headers eval
"Content-Type: application/json\n" . main::auth('t5')
--- error_code: 502
--- response_body_like chomp
\(HTTP 500 api_error\).*"code":"stripe_error"
--- after_requests
Test::More::is(main::purchases_of('t5'), 'failed', 'the purchase is failed');
Test::More::is(main::balance(main::user('t5')), 0, 'a failed purchase credits nothing');



=== TEST 6: Stripe stalls past the total timeout: 502, and /health stays fast meanwhile
--- http_config eval: $::HttpConfig
--- config
location = /health { billing health; }
location /api/purchases { billing purchases; }
--- init
$main::Stripe->control(stall => 6, stall_count => 1);
my $user = main::user('t6');
my $body = '{"packageCode":"starter"}';
my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $ENV{TEST_NGINX_SERVER_PORT}, Proto => 'tcp')
    or die "connect: $!";
my $t0 = Time::HiRes::time();
print $s "POST /api/purchases HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
       . "Content-Type: application/json\r\n" . main::auth('t6') . "\r\n"
       . "Content-Length: " . length($body) . "\r\n\r\n$body";
# wait until the stand-in holds the call
my $end = $t0 + 5;
Time::HiRes::sleep(0.05) while Time::HiRes::time() < $end
    && !grep { $_->{headers}{authorization} && ($_->{body} // '') =~ /\Q$user\E/ } $main::Stripe->requests
    and BillingTest::psql_admin("SELECT count(*) FROM billing.purchases WHERE user_id = '$user'") eq '0';
Time::HiRes::sleep(0.3);
my ($hs, undef, $hb) = BillingTest::http_request($ENV{TEST_NGINX_SERVER_PORT}, "GET /health", 2);
my $answered = IO::Select->new($s)->can_read(0) ? 1 : 0;
my $pending = main::purchases_of('t6');
Test::More::is($hs, 200, 'health answered during the stalled Stripe call');
Test::More::is($answered, 0, 'while the purchase had no answer yet');
Test::More::is($pending, 'pending', 'and the purchase was still pending');
my $raw = do { local $/; <$s> } // '';
my $elapsed = Time::HiRes::time() - $t0;
Test::More::like($raw, qr{^HTTP/1\.1 502 .*"code":"stripe_error"}s, 'the stalled purchase answers 502');
Test::More::like($raw, qr/no answer within \d+ ms/, 'naming the timeout');
# behaviour, not speed: the answer came from our timeout, before Stripe's
# 6 s stall would have ended it
Test::More::ok($elapsed < 6, "answered before the stalled call ended (took ${elapsed}s)");
Test::More::is(main::purchases_of('t6'), 'failed', 'the timed-out purchase is failed');
--- request
GET /health
--- response_body chomp
{"status":"ok"}



=== TEST 7: the owner reads the purchase
--- http_config eval: $::HttpConfig
--- config
location /api/purchases { billing purchases; }
--- request eval
"GET /api/purchases/$::P{t7}{id}"
--- more_headers eval
main::auth('t7')
--- response_body_like eval
qr/^\{"purchaseId":"$::P{t7}{id}",.*"status":"pending",.*\}$/



=== TEST 8: anybody else gets 404
--- http_config eval: $::HttpConfig
--- config
location /api/purchases { billing purchases; }
--- request eval
"GET /api/purchases/$::P{t8}{id}"
--- more_headers eval
main::auth('t8-somebody-else')
--- error_code: 404
--- response_body_like chomp
"code":"not_found"



=== TEST 9: a malformed purchase id is 404
--- http_config eval: $::HttpConfig
--- config
location /api/purchases { billing purchases; }
--- request
GET /api/purchases/not-a-uuid
--- more_headers eval
main::auth('t9')
--- error_code: 404
--- response_body_like chomp
"code":"not_found"



=== TEST 10: purchases need a token
--- http_config eval: $::HttpConfig
--- config
location /api/purchases { billing purchases; }
--- request
POST /api/purchases
{"packageCode":"starter"}
--- more_headers
Content-Type: application/json
--- error_code: 401



=== TEST 11: webhook checkout.session.completed (paid) credits
--- http_config eval: $::HttpConfig
--- config
location = /webhooks/stripe { client_max_body_size 1m; billing webhook; }
--- request eval: main::req('t11')
--- more_headers eval: main::hdr('t11')
--- response_headers
Content-Type: application/json
--- response_body chomp
{"received":true,"creditedMicros":5000000}
--- no_error_log
[error]
--- after_requests
Test::More::is(main::balance(main::user('t11')), 5000000, 'credited');
Test::More::is(main::pstatus($main::P{t11}{id}), 'paid', 'the purchase is paid');



=== TEST 12: the same event again is 200 and a no-op
--- http_config eval: $::HttpConfig
--- config
location = /webhooks/stripe { client_max_body_size 1m; billing webhook; }
--- request eval: [main::req('t12'), main::req('t12')]
--- more_headers eval: main::hdr('t12')
--- response_body eval
['{"received":true,"creditedMicros":5000000}', '{"received":true,"duplicate":true}']
--- error_code eval: [200, 200]
--- after_requests
Test::More::is(main::balance(main::user('t12')), 5000000, 'credited once');
Test::More::is(BillingTest::psql_admin("SELECT count(*) FROM billing.ledger_entries WHERE purchase_id = '$main::P{t12}{id}'"),
               1, 'one ledger entry for the purchase');



=== TEST 13: payment_intent.succeeded for a purchase already credited changes nothing
--- http_config eval: $::HttpConfig
--- config
location = /webhooks/stripe { client_max_body_size 1m; billing webhook; }
--- request eval: [main::req('t13'), main::req('t13pi')]
--- more_headers eval: [main::hdr('t13'), main::hdr('t13pi')]
--- response_body eval
['{"received":true,"creditedMicros":5000000}', '{"received":true}']
--- error_code eval: [200, 200]
--- after_requests
Test::More::is(main::balance(main::user('t13')), 5000000, 'completed + payment_intent credit once');
Test::More::is(BillingTest::psql_admin("SELECT count(*) FROM billing.ledger_entries WHERE purchase_id = '$main::P{t13}{id}'"),
               1, 'one ledger entry for the purchase');
Test::More::is(main::pstatus($main::P{t13}{id}), 'paid', 'the purchase is paid');



=== TEST 14: reversed order: payment_intent.succeeded first, then completed
--- http_config eval: $::HttpConfig
--- config
location = /webhooks/stripe { client_max_body_size 1m; billing webhook; }
--- init
my ($st) = main::post_webhook('t14pi');
Test::More::is($st, 200, 'payment_intent.succeeded first');
Test::More::is(main::balance(main::user('t14')), 5000000, 'credits');
--- request eval: main::req('t14')
--- more_headers eval: main::hdr('t14')
--- response_body chomp
{"received":true}
--- after_requests
Test::More::is(main::balance(main::user('t14')), 5000000, 'reversed order credits once');



=== TEST 15: completed but unpaid, then async_payment_succeeded
--- http_config eval: $::HttpConfig
--- config
location = /webhooks/stripe { client_max_body_size 1m; billing webhook; }
--- init
my ($st) = main::post_webhook('t15unpaid');
Test::More::is($st, 200, 'completed but unpaid acknowledged');
Test::More::is(main::balance(main::user('t15')), 0, 'completed but unpaid credits nothing');
--- request eval: main::req('t15')
--- more_headers eval: main::hdr('t15')
--- response_body chomp
{"received":true,"creditedMicros":21000000}
--- after_requests
Test::More::is(main::balance(main::user('t15')), 21000000, 'async payment succeeded credits the standard package');



=== TEST 16: wrong secret: 400 invalid_signature, nothing recorded
--- http_config eval: $::HttpConfig
--- config
location = /webhooks/stripe { client_max_body_size 1m; billing webhook; }
--- request eval: main::req('t16')
--- more_headers eval: main::hdr('t16')
--- error_code: 400
--- response_headers
Content-Type: application/problem+json
--- response_body_like chomp
"detail":"no signature matches a configured webhook secret","code":"invalid_signature"\}$
--- no_error_log
whsec_test_primary
--- after_requests
main::refused('t16');



=== TEST 17: stale timestamp: 400, nothing recorded
--- http_config eval: $::HttpConfig
--- config
location = /webhooks/stripe { client_max_body_size 1m; billing webhook; }
--- request eval: main::req('t17')
--- more_headers eval: main::hdr('t17')
--- error_code: 400
--- response_body_like chomp
"detail":"the signature timestamp is outside the tolerance","code":"invalid_signature"
--- after_requests
main::refused('t17');



=== TEST 18: future timestamp: 400, nothing recorded
--- http_config eval: $::HttpConfig
--- config
location = /webhooks/stripe { client_max_body_size 1m; billing webhook; }
--- request eval: main::req('t18')
--- more_headers eval: main::hdr('t18')
--- error_code: 400
--- response_body_like chomp
"code":"invalid_signature"
--- after_requests
main::refused('t18');



=== TEST 19: altered body: 400, nothing recorded
--- http_config eval: $::HttpConfig
--- config
location = /webhooks/stripe { client_max_body_size 1m; billing webhook; }
--- request eval: main::req('t19')
--- more_headers eval: main::hdr('t19')
--- error_code: 400
--- response_body_like chomp
"code":"invalid_signature"
--- after_requests
main::refused('t19');



=== TEST 20: missing Stripe-Signature: 400, nothing recorded
--- http_config eval: $::HttpConfig
--- config
location = /webhooks/stripe { client_max_body_size 1m; billing webhook; }
--- request eval: main::req('t20')
--- more_headers eval: main::hdr('t20')
--- error_code: 400
--- response_body_like chomp
"detail":"the Stripe-Signature header is missing","code":"invalid_signature"
--- after_requests
main::refused('t20');



=== TEST 21: malformed Stripe-Signature: 400, nothing recorded
--- http_config eval: $::HttpConfig
--- config
location = /webhooks/stripe { client_max_body_size 1m; billing webhook; }
--- request eval: main::req('t21')
--- more_headers eval: main::hdr('t21')
--- error_code: 400
--- response_body_like chomp
"code":"invalid_signature"
--- after_requests
main::refused('t21');



=== TEST 22: rotation: two secrets configured, the event signed with the second
--- http_config eval: $::HttpConfig2
--- config
location = /webhooks/stripe { client_max_body_size 1m; billing webhook; }
--- request eval: main::req('t22')
--- more_headers eval: main::hdr('t22')
--- response_body chomp
{"received":true,"creditedMicros":5000000}
--- after_requests
Test::More::is(main::balance(main::user('t22')), 5000000, 'an event signed with the rotated secret credits');



=== TEST 23: the event signed with the second secret is refused when only the first is configured
--- http_config eval: $::HttpConfig
--- config
location = /webhooks/stripe { client_max_body_size 1m; billing webhook; }
--- request eval: main::req('t23')
--- more_headers eval: main::hdr('t23')
--- error_code: 400
--- response_body_like chomp
"code":"invalid_signature"
--- after_requests
main::refused('t23');



=== TEST 24: several v1 signatures, one wrong and one right
--- http_config eval: $::HttpConfig
--- config
location = /webhooks/stripe { client_max_body_size 1m; billing webhook; }
--- request eval: main::req('t24')
--- more_headers eval: main::hdr('t24')
--- response_body chomp
{"received":true,"creditedMicros":5000000}
--- after_requests
Test::More::is(main::balance(main::user('t24')), 5000000, 'one matching v1 among several is enough');



=== TEST 25: refunds: credit, partial refund, full refund
--- http_config eval: $::HttpConfig
--- config
location = /webhooks/stripe { client_max_body_size 1m; billing webhook; }
--- init
for my $k (qw(t25paid t25part)) {
    my ($st) = main::post_webhook($k);
    Test::More::is($st, 200, "webhook $k accepted");
}
Test::More::is(main::balance(main::user('t25')), 44000000, 'partial refund of 1000/5000 cents debits 11,000,000 micros');
Test::More::is(main::pstatus($main::P{t25}{id}), 'partially_refunded', 'purchase partially refunded');
--- request eval: main::req('t25full')
--- more_headers eval: main::hdr('t25full')
--- response_body chomp
{"received":true}
--- after_requests
Test::More::is(main::balance(main::user('t25')), 0, 'partial then full refund debits everything');
Test::More::is(BillingTest::psql_admin("SELECT string_agg(amount_micros::text, ',' ORDER BY id) FROM billing.ledger_entries "
                                       . "WHERE user_id = '" . main::user('t25') . "'"), '55000000,-11000000,-44000000',
               'refund debits follow floor(credits * refunded / amount)');
Test::More::is(main::pstatus($main::P{t25}{id}), 'refunded', 'purchase refunded');



=== TEST 26: a payment for a purchase marked failed still credits it
--- http_config eval: $::HttpConfig
--- config
location = /webhooks/stripe { client_max_body_size 1m; billing webhook; }
--- request eval: main::req('t26')
--- more_headers eval: main::hdr('t26')
--- response_body chomp
{"received":true,"creditedMicros":5000000}
--- after_requests
Test::More::is(main::balance(main::user('t26')), 5000000, 'a payment for a failed purchase credits it');
Test::More::is(main::pstatus($main::P{t26}{id}), 'paid', 'and marks it paid');



=== TEST 27: other event types are 200 and ignored
--- http_config eval: $::HttpConfig
--- config
location = /webhooks/stripe { client_max_body_size 1m; billing webhook; }
location = /metrics { billing metrics; }
--- init
my ($st) = main::post_webhook('t27');
Test::More::is($st, 200, 'customer.created acknowledged');
--- request
GET /metrics
--- response_body_like
billing_stripe_webhooks_total\{type="other",outcome="ignored"\} 1



=== TEST 28: a signed body that is not JSON is 400 invalid_request
--- http_config eval: $::HttpConfig
--- config
location = /webhooks/stripe { client_max_body_size 1m; billing webhook; }
--- request eval: main::req('t28')
--- more_headers eval: main::hdr('t28')
--- error_code: 400
--- response_body_like chomp
"code":"invalid_request"



=== TEST 29: a signed event without an id is 400 invalid_request
--- http_config eval: $::HttpConfig
--- config
location = /webhooks/stripe { client_max_body_size 1m; billing webhook; }
--- request eval: main::req('t29')
--- more_headers eval: main::hdr('t29')
--- error_code: 400
--- response_body_like chomp
"code":"invalid_request"



=== TEST 30: GET on the webhook is 405
--- http_config eval: $::HttpConfig
--- config
location = /webhooks/stripe { client_max_body_size 1m; billing webhook; }
--- request
GET /webhooks/stripe
--- error_code: 405



=== TEST 31: the purchase metrics count Stripe outcomes
--- http_config eval: $::HttpConfig
--- config
location /api/purchases { billing purchases; }
location = /metrics { billing metrics; }
--- init
my ($st) = BillingTest::http_request($ENV{TEST_NGINX_SERVER_PORT}, { method => 'POST',
    path => '/api/purchases', headers => [ 'Content-Type' => 'application/json',
    Authorization => 'Bearer ' . BillingTest::mint_token(sub => main::user('t31')) ],
    body => '{"packageCode":"pro"}' });
Test::More::is($st, 201, 'purchase of the pro package');
--- request
GET /metrics
--- response_body_like
billing_stripe_api_requests_total\{outcome="ok"\} 1
.*billing_stripe_api_duration_seconds_count 1



=== TEST 31b: a crediting webhook counts the purchased credits
--- http_config eval: $::HttpConfig
--- config
location = /webhooks/stripe { client_max_body_size 1m; billing webhook; }
location = /metrics { billing metrics; }
--- init
my $body = main::event('payment_intent.succeeded', main::intent('t31b'));
my ($st, $h, $b) = BillingTest::http_request($ENV{TEST_NGINX_SERVER_PORT}, { method => 'POST',
    path => '/webhooks/stripe', headers => [ 'Content-Type' => 'application/json',
    'Stripe-Signature' => BillingTest::stripe_signature($main::Secret1, $body) ], body => $body });
Test::More::like($b, qr/"creditedMicros":21000000/, 'the webhook answer says what it credited');
--- request
GET /metrics
--- response_body_like
billing_credits_purchased_micros_total 21000000
.*billing_stripe_webhooks_total\{type="payment_intent.succeeded",outcome="processed"\} 1



=== TEST 32: Stripe unreachable: 502 stripe_error, purchase failed
--- http_config eval: $::HttpConfigNoStripe
--- config
location /api/purchases { billing purchases; }
--- request
POST /api/purchases
{"packageCode":"pro"}
--- more_headers eval
"Content-Type: application/json\n" . main::auth('t32')
--- error_code: 502
--- response_body_like chomp
\(unreachable: .*\).*"code":"stripe_error"
--- after_requests
Test::More::is(main::purchases_of('t32'), 'failed', 'the purchase is failed');
Test::More::is(main::balance(main::user('t32')), 0, 'a failed purchase credits nothing');



=== TEST 33: database unavailable: a valid webhook is 503, so Stripe retries
--- http_config eval: $::HttpConfigDown
--- config
location = /webhooks/stripe { client_max_body_size 1m; billing webhook; }
--- request eval: main::req('t33')
--- more_headers eval: main::hdr('t33')
--- error_code: 503
--- response_body_like chomp
"code":"database_unavailable"
--- no_error_log
pw@127
--- after_requests
Test::More::is(main::events_recorded("evt_${main::Run}_t33"), 0, 'an event refused with 503 is not recorded (Stripe sends it again)');
Test::More::is(main::balance(main::user('t33')), 0, 'and credits nothing');
