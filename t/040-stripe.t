# Stripe: purchases (Checkout Session through the stand-in), webhooks
# (signatures, deduplication, ordering, refunds) and signed outgoing
# notifications, against a real PostgreSQL.
use strict;
use warnings;
use lib 't/lib';
use Test::Nginx::Socket 'no_plan';
use BillingTest;
use StripeStandIn;
use IO::Select ();
use IO::Socket::INET ();
use JSON::PP ();
use Time::HiRes qw(sleep time);

our ($Stripe, %U, %P, %W, $HttpConfig, $HttpConfig2, $HttpConfigDown, $HttpConfigNoStripe, $Run);

our ($J, $Secret1, $Secret2);
BEGIN {
    $J = JSON::PP->new->canonical;
    $Secret1 = 'whsec_test_primary_1f2e3d';
    $Secret2 = 'whsec_test_rotated_9a8b7c';
}

sub uuid {
    my @h = map { sprintf '%02x', int rand 256 } 1 .. 16;
    $h[6] = '4' . substr($h[6], 1);
    $h[8] = (qw(8 9 a b))[rand 4] . substr($h[8], 1);
    my $s = join '', @h;
    return join '-', substr($s, 0, 8), substr($s, 8, 4), substr($s, 12, 4),
                     substr($s, 16, 4), substr($s, 20);
}

sub auth { "Authorization: Bearer " . BillingTest::mint_token(sub => $_[0]) }

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

BEGIN {
    $Run = join '', map { ('a' .. 'z')[rand 26] } 1 .. 8;
    $Stripe = StripeStandIn->start;

    %U = map { $_ => "user-040-$Run-$_" } qw(buyer other stall fail owner a b c d e f g h n m);
    my %cents = (starter => [500, 5000000], standard => [2000, 21000000], pro => [5000, 55000000]);
    for my $spec ([owner => 'owner', 'starter'], [A => 'a', 'starter'], [B => 'b', 'starter'],
                  [C => 'c', 'standard'], [D => 'd', 'starter'], [E => 'e', 'starter'],
                  [F => 'f', 'starter'], [G => 'g', 'pro'], [H => 'h', 'starter', 'failed'],
                  [N1 => 'n', 'starter'], [N2 => 'n', 'starter'], [M => 'm', 'standard'])
    {
        my ($p, $u, $pkg, $status) = @$spec;
        $P{$p} = { id => uuid(), user => $U{$u}, pkg => $pkg, cents => $cents{$pkg}[0],
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
    $Req{a1} = [signed(a1 => event('checkout.session.completed', session('A'), id => "evt_${Run}_a1"))];
    $Req{a1dup} = [signed(a1dup => $W{a1})];
    $Req{a2} = [signed(a2 => event('payment_intent.succeeded', intent('A')))];
    $Req{b1} = [signed(b1 => event('payment_intent.succeeded', intent('B')))];
    $Req{b2} = [signed(b2 => event('checkout.session.completed', session('B')))];
    $Req{c1} = [signed(c1 => event('checkout.session.completed', session('C', payment_status => 'unpaid')))];
    $Req{c2} = [signed(c2 => event('checkout.session.async_payment_succeeded', session('C')))];
    my $d = event('checkout.session.completed', session('D'), id => "evt_${Run}_d");
    $Req{d_wrong} = [signed(d_wrong => $d, secret => 'whsec_not_ours')];
    $Req{d_stale} = [signed(d_stale => $d, t => $now - 301)];
    $Req{d_future} = [signed(d_future => $d, t => $now + 400)];
    (my $altered = $d) =~ s/"amount_total":500/"amount_total":50/;
    $Req{d_altered} = [signed(d_altered => $altered, signed_body => $d)];
    $Req{d_missing} = [signed(d_missing => $d, no_header => 1)];
    $Req{d_garbage} = [signed(d_garbage => $d, signature => 'v1=abc,t=x')];
    $Req{e_rotated} = [signed(e_rotated => event('checkout.session.completed', session('E')),
                              secret => $Secret2)];
    my $f = event('checkout.session.completed', session('F'));
    my $good = BillingTest::stripe_signature($Secret1, $f, $now);
    my ($goodv1) = $good =~ /v1=(\w+)/;
    $Req{f_multi} = [signed(f_multi => $f, signature => "t=$now,v1=" . ('0' x 64) . ",v0=ignored,v1=$goodv1")];
    $Req{g1} = [signed(g1 => event('checkout.session.completed', session('G')))];
    $Req{g2} = [signed(g2 => event('charge.refunded', charge('G', 1000)))];
    $Req{g3} = [signed(g3 => event('charge.refunded', charge('G', 5000)))];
    $Req{h1} = [signed(h1 => event('checkout.session.completed', session('H')))];
    $Req{other} = [signed(other => event('customer.created', { id => "cus_$Run", object => 'customer' }))];
    $Req{notjson} = [signed(notjson => '{"id":"evt_x","type":')];
    $Req{down} = [signed(down => event('checkout.session.completed', session('D'), id => "evt_${Run}_down"))];
    $Req{noid} = [signed(noid => '{"type":"checkout.session.completed","data":{}}')];
}

no_shuffle();
run_tests();

# ------------------------------------------------------------------ after the blocks

my @calls = grep { $_->{path} eq '/v1/checkout/sessions' } $Stripe->requests;
my ($first) = grep { $_->{status} == 200 } @calls;
ok($first, 'the stand-in created a checkout session');
if ($first) {
    my %f = map { my ($k, $v) = split /=/, $_, 2;
                  for ($k, $v) { $_ //= ''; tr/+/ /; s/%([0-9A-Fa-f]{2})/chr hex $1/ge }
                  ($k => $v) } split /&/, $first->{body};
    my $pid = $f{client_reference_id};
    is($first->{headers}{authorization}, 'Bearer sk_test_51StandInKey000', 'secret key sent as a bearer token');
    is($first->{headers}{'idempotency-key'}, "purchase-$pid", 'idempotency key derived from the purchase id');
    like($first->{headers}{'content-type'}, qr{^application/x-www-form-urlencoded}, 'form encoded');
    is($f{mode}, 'payment', 'mode=payment');
    is($f{'line_items[0][price_data][currency]'}, 'usd', 'currency usd');
    is($f{'line_items[0][price_data][unit_amount]'}, '500', 'unit amount is the package price in cents');
    is($f{'line_items[0][quantity]'}, '1', 'quantity 1');
    is($f{'line_items[0][price_data][product_data][name]'}, 'Starter', 'the product is named after the package');
    is($f{'metadata[purchase_id]'}, $pid, 'metadata[purchase_id]');
    is($f{'payment_intent_data[metadata][purchase_id]'}, $pid, 'payment_intent_data[metadata][purchase_id]');
    is($f{'metadata[user_id]'}, $U{buyer}, 'metadata[user_id]');
    is($f{'payment_intent_data[metadata][user_id]'}, $U{buyer}, 'payment_intent_data[metadata][user_id]');
    is($f{success_url}, 'https://student-pilot.replit.app/billing/success?session_id={CHECKOUT_SESSION_ID}',
       'success URL passed through');
    is($f{cancel_url}, 'https://student-pilot.replit.app/billing/cancel', 'cancel URL');
    like(BillingTest::psql_admin("SELECT status || ' ' || checkout_session_id FROM billing.purchases WHERE id = '$pid'"),
         qr/^pending cs_test_\w+$/, 'the purchase stores the session');
}

for my $u (qw(fail other)) {
    is(BillingTest::psql_admin("SELECT string_agg(status, ',') FROM billing.purchases WHERE user_id = '$U{$u}'"),
       $u eq 'fail' ? 'failed,failed,failed' : '', "Stripe failures leave the purchases failed ($u)");
}
is(BillingTest::psql_admin("SELECT count(*) FROM billing.stripe_events WHERE id = 'evt_${Run}_down'"),
   0, 'an event refused with 503 is not recorded (Stripe sends it again)');
is(balance($U{fail}), 0, 'a failed purchase credits nothing');

is(balance($U{a}), 5000000, 'completed + duplicate + payment_intent credit once');
is(BillingTest::psql_admin("SELECT count(*) FROM billing.ledger_entries WHERE purchase_id = '$P{A}{id}'"),
   1, 'one ledger entry for the purchase');
is(pstatus($P{A}{id}), 'paid', 'purchase A paid');
is(balance($U{b}), 5000000, 'reversed order credits once');
is(balance($U{c}), 21000000, 'async payment succeeded credits the standard package');
is(balance($U{d}), 0, 'rejected signatures credit nothing');
is(pstatus($P{D}{id}), 'pending', 'and leave the purchase pending');
is(BillingTest::psql_admin("SELECT count(*) FROM billing.stripe_events WHERE id = 'evt_${Run}_d'"),
   0, 'and record no event');
is(balance($U{e}), 5000000, 'an event signed with the rotated secret credits');
is(balance($U{f}), 5000000, 'one matching v1 among several is enough');
is(balance($U{g}), 0, 'partial then full refund debits everything');
is(BillingTest::psql_admin("SELECT string_agg(amount_micros::text, ',' ORDER BY id) FROM billing.ledger_entries "
                           . "WHERE user_id = '$U{g}'"), '55000000,-11000000,-44000000',
   'refund debits follow floor(credits * refunded / amount)');
is(pstatus($P{G}{id}), 'refunded', 'purchase G refunded');
is(balance($U{h}), 5000000, 'a payment for a failed purchase credits it');
is(pstatus($P{H}{id}), 'paid', 'and marks it paid');

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

    my ($req, $hdr) = signed(n1 => event('checkout.session.completed', session('N1')));
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
    sleep 0.1 while time < $end && !$want->($P{N1}{id});
    my @ok = $want->($P{N1}{id});
    is(scalar @ok, 1, 'purchase.completed delivered once after a failed first attempt');
    my @all = grep { ($_->{body} // '') =~ /\Q$P{N1}{id}\E/ } $recv->requests;
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
    ($req, $hdr) = signed(n2 => event('checkout.session.completed', session('N2')));
    ($st) = BillingTest::http_request($port, { method => 'POST', path => '/webhooks/stripe',
        headers => [ map { split /:\s*/, $_, 2 } split /\n/, $hdr ], body => $W{n2} });
    is($st, 200, 'second webhook accepted');
    $end = time + 10;
    sleep 0.1 while time < $end && !$want->($P{N2}{id});
    is(scalar(grep { ($_->{body} // '') =~ /\Q$P{N2}{id}\E/ } $recv->requests), 1,
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
"Content-Type: application/json\n" . main::auth($::U{buyer})
--- error_code: 201
--- response_headers
Content-Type: application/json
--- response_body_like chomp
^\{"status": "pending", "currency": "usd", "purchaseId": "[0-9a-f-]{36}", "amountCents": 500, "checkoutUrl": "https://checkout\.stripe\.com/c/pay/cs_test_\w+#\w+", "packageCode": "starter", "creditsMicros": 5000000, "checkoutSessionId": "cs_test_\w+"\}$
--- no_error_log
[error]
sk_test_51StandInKey000



=== TEST 2: an unknown package is 422 and Stripe is not asked
--- http_config eval: $::HttpConfig
--- config
location /api/purchases { billing purchases; }
--- request
POST /api/purchases
{"packageCode":"platinum"}
--- more_headers eval
"Content-Type: application/json\n" . main::auth($::U{other})
--- error_code: 422
--- response_body_like chomp
"code":"unknown_package"



=== TEST 3: a malformed body is 400, without a purchase
--- http_config eval: $::HttpConfig
--- config
location /api/purchases { billing purchases; }
--- request
POST /api/purchases
{"packageCode":42}
--- more_headers eval
"Content-Type: application/json\n" . main::auth($::U{other})
--- error_code: 400
--- response_body_like chomp
"code":"invalid_request"



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
"Content-Type: application/json\n" . main::auth($::U{fail})
--- error_code: 502
--- response_headers
Content-Type: application/problem+json
--- response_body_like chomp
"detail":"The payment provider could not create a checkout session \(HTTP 402 card_error card_declined\); the purchase was marked failed and nothing was charged","code":"stripe_error"\}$



=== TEST 5: Stripe fails (500): 502 stripe_error
--- http_config eval: $::HttpConfig
--- config
location /api/purchases { billing purchases; }
--- init
$main::Stripe->control(fail => 1, fail_status => 500);
--- request
POST /api/purchases
{"packageCode":"standard"}
--- more_headers eval
"Content-Type: application/json\n" . main::auth($::U{fail})
--- error_code: 502
--- response_body_like chomp
\(HTTP 500 api_error\).*"code":"stripe_error"



=== TEST 6: Stripe stalls past the total timeout: 502, and /health stays fast meanwhile
--- http_config eval: $::HttpConfig
--- config
location = /health { billing health; }
location /api/purchases { billing purchases; }
--- init
$main::Stripe->control(stall => 6, stall_count => 1);
my $body = '{"packageCode":"starter"}';
my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $ENV{TEST_NGINX_SERVER_PORT}, Proto => 'tcp')
    or die "connect: $!";
my $t0 = Time::HiRes::time();
print $s "POST /api/purchases HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
       . "Content-Type: application/json\r\n" . main::auth($main::U{stall}) . "\r\n"
       . "Content-Length: " . length($body) . "\r\n\r\n$body";
# wait until the stand-in holds the call
my $end = $t0 + 5;
Time::HiRes::sleep(0.05) while Time::HiRes::time() < $end
    && !grep { $_->{headers}{authorization} && ($_->{body} // '') =~ /\Q$main::U{stall}\E/ } $main::Stripe->requests
    and BillingTest::psql_admin("SELECT count(*) FROM billing.purchases WHERE user_id = '$main::U{stall}'") eq '0';
Time::HiRes::sleep(0.3);
my ($hs, undef, $hb) = BillingTest::http_request($ENV{TEST_NGINX_SERVER_PORT}, "GET /health", 2);
my $answered = IO::Select->new($s)->can_read(0) ? 1 : 0;
my $pending = BillingTest::psql_admin("SELECT string_agg(status, ',') FROM billing.purchases WHERE user_id = '$main::U{stall}'");
Test::More::is($hs, 200, 'health answered during the stalled Stripe call');
Test::More::is($answered, 0, 'while the purchase had no answer yet');
Test::More::is($pending, 'pending', 'and the purchase was still pending');
my $raw = do { local $/; <$s> } // '';
my $elapsed = Time::HiRes::time() - $t0;
Test::More::like($raw, qr{^HTTP/1\.1 502 .*"code":"stripe_error"}s, 'the stalled purchase answers 502');
Test::More::like($raw, qr/no answer within \d+ ms/, 'naming the timeout');
Test::More::ok($elapsed >= 1.5 && $elapsed < 5.5, "within the total timeout (took ${elapsed}s)");
Test::More::is(BillingTest::psql_admin("SELECT string_agg(status, ',') FROM billing.purchases WHERE user_id = '$main::U{stall}'"),
               'failed', 'the timed-out purchase is failed');
--- request
GET /health
--- response_body chomp
{"status":"ok"}



=== TEST 7: the owner reads the purchase
--- http_config eval: $::HttpConfig
--- config
location /api/purchases { billing purchases; }
--- request eval
"GET /api/purchases/$::P{owner}{id}"
--- more_headers eval
main::auth($::U{owner})
--- response_body_like eval
qr/^\{.*"status": "pending".*"purchaseId": "$::P{owner}{id}".*\}$/



=== TEST 8: anybody else gets 404
--- http_config eval: $::HttpConfig
--- config
location /api/purchases { billing purchases; }
--- request eval
"GET /api/purchases/$::P{owner}{id}"
--- more_headers eval
main::auth($::U{other})
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
main::auth($::U{owner})
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
--- request eval: main::req('a1')
--- more_headers eval: main::hdr('a1')
--- response_headers
Content-Type: application/json
--- response_body chomp
{"received": true, "creditedMicros": 5000000}
--- no_error_log
[error]



=== TEST 12: the same event again is 200 and a no-op
--- http_config eval: $::HttpConfig
--- config
location = /webhooks/stripe { client_max_body_size 1m; billing webhook; }
--- request eval: main::req('a1dup')
--- more_headers eval: main::hdr('a1dup')
--- response_body chomp
{"received": true, "duplicate": true}



=== TEST 13: payment_intent.succeeded for the same purchase changes nothing
--- http_config eval: $::HttpConfig
--- config
location = /webhooks/stripe { client_max_body_size 1m; billing webhook; }
--- request eval: main::req('a2')
--- more_headers eval: main::hdr('a2')
--- response_body chomp
{"received": true}



=== TEST 14: reversed order: payment_intent.succeeded first, then completed
--- http_config eval: $::HttpConfig
--- config
location = /webhooks/stripe { client_max_body_size 1m; billing webhook; }
--- init
my ($st) = BillingTest::http_request($ENV{TEST_NGINX_SERVER_PORT}, { method => 'POST',
    path => '/webhooks/stripe', headers => [ map { split /:\s*/, $_, 2 } split /\n/, main::hdr('b1') ],
    body => $main::W{b1} });
Test::More::is($st, 200, 'payment_intent.succeeded first');
Test::More::is(main::balance($main::U{b}), 5000000, 'credits');
--- request eval: main::req('b2')
--- more_headers eval: main::hdr('b2')
--- response_body chomp
{"received": true}



=== TEST 15: completed but unpaid, then async_payment_succeeded
--- http_config eval: $::HttpConfig
--- config
location = /webhooks/stripe { client_max_body_size 1m; billing webhook; }
--- init
# one request per block keeps both upstream and the fallback happy
my ($st) = BillingTest::http_request($ENV{TEST_NGINX_SERVER_PORT}, { method => 'POST',
    path => '/webhooks/stripe', headers => [ map { split /:\s*/, $_, 2 } split /\n/, main::hdr('c1') ],
    body => $main::W{c1} });
Test::More::is($st, 200, 'completed but unpaid acknowledged');
Test::More::is(main::balance($main::U{c}), 0, 'completed but unpaid credits nothing');
--- request eval: main::req('c2')
--- more_headers eval: main::hdr('c2')
--- response_body chomp
{"received": true, "creditedMicros": 21000000}



=== TEST 16: wrong secret: 400 invalid_signature
--- http_config eval: $::HttpConfig
--- config
location = /webhooks/stripe { client_max_body_size 1m; billing webhook; }
--- request eval: main::req('d_wrong')
--- more_headers eval: main::hdr('d_wrong')
--- error_code: 400
--- response_headers
Content-Type: application/problem+json
--- response_body_like chomp
"detail":"no signature matches a configured webhook secret","code":"invalid_signature"\}$
--- no_error_log
whsec_test_primary



=== TEST 17: stale timestamp: 400
--- http_config eval: $::HttpConfig
--- config
location = /webhooks/stripe { client_max_body_size 1m; billing webhook; }
--- request eval: main::req('d_stale')
--- more_headers eval: main::hdr('d_stale')
--- error_code: 400
--- response_body_like chomp
"detail":"the signature timestamp is outside the tolerance","code":"invalid_signature"



=== TEST 18: future timestamp: 400
--- http_config eval: $::HttpConfig
--- config
location = /webhooks/stripe { client_max_body_size 1m; billing webhook; }
--- request eval: main::req('d_future')
--- more_headers eval: main::hdr('d_future')
--- error_code: 400
--- response_body_like chomp
"code":"invalid_signature"



=== TEST 19: altered body: 400
--- http_config eval: $::HttpConfig
--- config
location = /webhooks/stripe { client_max_body_size 1m; billing webhook; }
--- request eval: main::req('d_altered')
--- more_headers eval: main::hdr('d_altered')
--- error_code: 400
--- response_body_like chomp
"code":"invalid_signature"



=== TEST 20: missing Stripe-Signature: 400
--- http_config eval: $::HttpConfig
--- config
location = /webhooks/stripe { client_max_body_size 1m; billing webhook; }
--- request eval: main::req('d_missing')
--- more_headers eval: main::hdr('d_missing')
--- error_code: 400
--- response_body_like chomp
"detail":"the Stripe-Signature header is missing","code":"invalid_signature"



=== TEST 21: malformed Stripe-Signature: 400
--- http_config eval: $::HttpConfig
--- config
location = /webhooks/stripe { client_max_body_size 1m; billing webhook; }
--- request eval: main::req('d_garbage')
--- more_headers eval: main::hdr('d_garbage')
--- error_code: 400
--- response_body_like chomp
"code":"invalid_signature"



=== TEST 22: rotation: two secrets configured, the event signed with the second
--- http_config eval: $::HttpConfig2
--- config
location = /webhooks/stripe { client_max_body_size 1m; billing webhook; }
--- request eval: main::req('e_rotated')
--- more_headers eval: main::hdr('e_rotated')
--- response_body chomp
{"received": true, "creditedMicros": 5000000}



=== TEST 23: the event signed with the second secret is refused when only the first is configured
--- http_config eval: $::HttpConfig
--- config
location = /webhooks/stripe { client_max_body_size 1m; billing webhook; }
--- request eval: main::req('e_rotated')
--- more_headers eval: main::hdr('e_rotated')
--- error_code: 400
--- response_body_like chomp
"code":"invalid_signature"



=== TEST 24: several v1 signatures, one wrong and one right
--- http_config eval: $::HttpConfig
--- config
location = /webhooks/stripe { client_max_body_size 1m; billing webhook; }
--- request eval: main::req('f_multi')
--- more_headers eval: main::hdr('f_multi')
--- response_body chomp
{"received": true, "creditedMicros": 5000000}



=== TEST 25: refunds: credit, partial refund, full refund
--- http_config eval: $::HttpConfig
--- config
location = /webhooks/stripe { client_max_body_size 1m; billing webhook; }
--- init
for my $k (qw(g1 g2)) {
    my ($st) = BillingTest::http_request($ENV{TEST_NGINX_SERVER_PORT}, { method => 'POST',
        path => '/webhooks/stripe', headers => [ map { split /:\s*/, $_, 2 } split /\n/, main::hdr($k) ],
        body => $main::W{$k} });
    Test::More::is($st, 200, "webhook $k accepted");
}
Test::More::is(main::balance($main::U{g}), 44000000, 'partial refund of 1000/5000 cents debits 11,000,000 micros');
Test::More::is(main::pstatus($main::P{G}{id}), 'partially_refunded', 'purchase partially refunded');
--- request eval: main::req('g3')
--- more_headers eval: main::hdr('g3')
--- response_body chomp
{"received": true}



=== TEST 26: a payment for a purchase marked failed still credits it
--- http_config eval: $::HttpConfig
--- config
location = /webhooks/stripe { client_max_body_size 1m; billing webhook; }
--- request eval: main::req('h1')
--- more_headers eval: main::hdr('h1')
--- response_body chomp
{"received": true, "creditedMicros": 5000000}



=== TEST 27: other event types are 200 and ignored
--- http_config eval: $::HttpConfig
--- config
location = /webhooks/stripe { client_max_body_size 1m; billing webhook; }
location = /metrics { billing metrics; }
--- init
my ($st) = BillingTest::http_request($ENV{TEST_NGINX_SERVER_PORT}, { method => 'POST',
    path => '/webhooks/stripe', headers => [ map { split /:\s*/, $_, 2 } split /\n/, main::hdr('other') ],
    body => $main::W{other} });
Test::More::is($st, 200, 'customer.created acknowledged');
--- request
GET /metrics
--- response_body_like
billing_stripe_webhooks_total\{type="other",outcome="ignored"\} 1



=== TEST 28: a signed body that is not JSON is 400 invalid_request
--- http_config eval: $::HttpConfig
--- config
location = /webhooks/stripe { client_max_body_size 1m; billing webhook; }
--- request eval: main::req('notjson')
--- more_headers eval: main::hdr('notjson')
--- error_code: 400
--- response_body_like chomp
"code":"invalid_request"



=== TEST 29: a signed event without an id is 400 invalid_request
--- http_config eval: $::HttpConfig
--- config
location = /webhooks/stripe { client_max_body_size 1m; billing webhook; }
--- request eval: main::req('noid')
--- more_headers eval: main::hdr('noid')
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
    Authorization => 'Bearer ' . BillingTest::mint_token(sub => $main::U{buyer}) ],
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
my $body = main::event('payment_intent.succeeded', main::intent('M'));
my ($st, $h, $b) = BillingTest::http_request($ENV{TEST_NGINX_SERVER_PORT}, { method => 'POST',
    path => '/webhooks/stripe', headers => [ 'Content-Type' => 'application/json',
    'Stripe-Signature' => BillingTest::stripe_signature($main::Secret1, $body) ], body => $body });
Test::More::like($b, qr/"creditedMicros": 21000000/, 'the webhook answer says what it credited');
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
"Content-Type: application/json\n" . main::auth($::U{fail})
--- error_code: 502
--- response_body_like chomp
\(unreachable: .*\).*"code":"stripe_error"



=== TEST 33: database unavailable: a valid webhook is 503, so Stripe retries
--- http_config eval: $::HttpConfigDown
--- config
location = /webhooks/stripe { client_max_body_size 1m; billing webhook; }
--- request eval: main::req('down')
--- more_headers eval: main::hdr('down')
--- error_code: 503
--- response_body_like chomp
"code":"database_unavailable"
--- no_error_log
pw@127
