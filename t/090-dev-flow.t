# `./build.sh run`'s own set-up, end to end, through HTTP only. conf/run.sh's
# functions (the ones `./build.sh run` calls) render conf/billing.dev.conf.in
# and start the Stripe stand-in, the notification receiver and nginx, in a
# directory and on ports of this test, against the test database. Then:
#   1. the printed set-up's commands run as a newcomer pastes them (purchase,
#      pay with curl, balance at $5.00, reconcile, replay, refund, fund);
#   2. a purchase is paid on the checkout page's HTML form, as a browser
#      submits it, and the module is credited by the events the stand-in
#      sends; paid twice, spent, refunded in parts; another one cancelled;
#   3. the notifications reach the receiver, signed with
#      WEBHOOK_SHARED_SECRET;
#   4. the stand-in answers the Stripe API as Stripe would (key,
#      parameters, Idempotency-Key);
#   5. `./build.sh stop`'s function stops it all.
use strict;
use warnings;
use lib 't/lib', 'dev/lib';
use Test::More;
use BillingTest;
use Cwd ();
use File::Temp qw(tempdir);
use JSON::PP ();
use Time::HiRes qw(sleep time);

my $root = $ENV{BILLING_ROOT} // Cwd::getcwd();
my $dir = tempdir('billing-dev-flow-XXXXXX', TMPDIR => 1, CLEANUP => 1);
chmod 0755, $dir;   # nginx's workers run as nobody when the test runs as root
my %port = (api => free_port(), stripe => free_port(), notify => free_port());
my $tag = time . "-$$";
my $J = JSON::PP->new->canonical;

# a newcomer's shell: none of the deployment's secrets or URLs
delete $ENV{$_} for grep { /^(?:STRIPE_|JWT_|WEBHOOK_SHARED_SECRET$|BILLING_NOTIFY_URL$|MIGRATE_DATABASE_URL$)/ }
                    keys %ENV;
%ENV = (%ENV,
    BILLING_RUN_DIR => $dir,
    BILLING_PORT => $port{api},
    BILLING_STRIPE_STANDIN_PORT => $port{stripe},
    BILLING_NOTIFY_PORT => $port{notify},
    BILLING_DEV_USER => "devflow-printed-$tag",
    # the test database (migrated by the suite) and the module under test
    DATABASE_URL => $ENV{TEST_NGINX_DATABASE_URL},
    BILLING_MODULE_SO => $ENV{TEST_NGINX_LOAD_MODULES},
);

# runs bash with conf/run.sh sourced as build.sh sources it; output in files
# (a pipe would stay open in the daemons it starts)
sub run_sh {
    my ($name, $steps) = @_;
    my $script = "$dir/$name.sh";
    open my $fh, '>', $script or die "$script: $!";
    print $fh <<"SH";
set -euo pipefail
ROOT='$root'
BUILD_DIR="\$ROOT/build"
MODULE_NAME=ngx_http_billing_module
NGINX_BIN='@{[ $ENV{TEST_NGINX_BINARY} || '/usr/sbin/nginx' ]}'
log() { printf '==> %s\\n' "\$*" >&2; }
die() { printf 'run.sh: %s\\n' "\$*" >&2; exit 1; }
. "\$ROOT/conf/run.sh"
$steps
SH
    close $fh;
    my $rc = system("cd '$root' && bash '$script' >'$dir/$name.out' 2>'$dir/$name.err'");
    return ($rc == 0, slurp("$dir/$name.out"), slurp("$dir/$name.err"));
}

sub slurp { open my $fh, '<', $_[0] or return ''; local $/; my $t = <$fh>; return $t // '' }

my $started;
END { run_sh('stop-at-end', 'stop_main') if $started }

# ---------------------------------------------------------------- start

my ($ok, $message, $err) = run_sh('start', 'run_defaults; run_start; run_wait_ready; run_message');
$started = 1;
ok($ok, './build.sh run\'s functions start the local set-up') or diag($err);
like($message, qr{^Billing API on http://127\.0\.0\.1:$port{api} }m, 'the set-up names the API');
like($message, qr{^Stripe: a local stand-in on http://127\.0\.0\.1:$port{stripe} }m, 'and the Stripe stand-in');
like($message, qr{checked and shown by http://127\.0\.0\.1:$port{notify}/$}m, 'and the notification receiver');

my $conf = slurp("$dir/nginx.conf");
like($conf, qr{^\s*billing_stripe_api_url http://127\.0\.0\.1:$port{stripe};$}m,
     'the rendered config points billing_stripe_api_url at the stand-in');
like($conf, qr{^\s*billing_notify_url http://127\.0\.0\.1:$port{notify}/hooks/billing;$}m,
     'and billing_notify_url at the receiver');
like($conf, qr{^\s*billing_notify_secret env:WEBHOOK_SHARED_SECRET;$}m, 'signed with WEBHOOK_SHARED_SECRET');
like($conf, qr{location = /api/usage/reconcile \{\s*limit_req zone=billing_service burst=200 nodelay;}s,
     'the service rate limit is on by default');
like($conf, qr{zone=billing_service:10m rate=6000r/m;}, 'at 6000 requests per minute');
is(join("\n", grep { !/^\s*#/ && /@[A-Z_]+@/ } split /\n/, $conf), '', 'no placeholder is left');
my %secret = slurp("$dir/dev-secrets") =~ /^DEV_(\w+)=(\S+)$/mg;
like($secret{STRIPE_SECRET_KEY} // '', qr/^sk_test_\w+$/, 'a test secret key was made');
like($secret{STRIPE_WEBHOOK_SECRET} // '', qr/^whsec_\w+$/, 'and a webhook secret');
unlike($conf, qr/\Q$secret{STRIPE_WEBHOOK_SECRET}\E|\Q$secret{STRIPE_SECRET_KEY}\E/, 'no secret is in the config');

my ($st) = http_request($port{api}, 'GET /readyz');
is($st, 200, 'the instance is ready');

my ($user_token) = $message =~ /^  export USER_TOKEN=(\S+)$/m;
my ($svc_token) = $message =~ /^  export SERVICE_TOKEN=(\S+)$/m;
ok($user_token && $svc_token, 'the set-up prints a user and a service token');

# ---------------------------------------------------------------- 1. the printed commands

# What the checklist's flow prints, in this order, when pasted; the items
# marked "printed" are in the printed set-up only, not in README's shorter
# block.
my @Flow = (
    [qr/\{"status":"ok"\}/, 'health', 'printed'],
    [qr/"status":"ready"/, 'readyz', 'printed'],
    [qr/"code":"starter"/, 'packages', 'printed'],
    [qr/\{"purchaseId":"[0-9a-f-]{36}","packageCode":"starter","amountCents":500,.*"status":"pending".*"checkoutUrl":"http:/,
     'the purchase, pending, with its checkout URL'],
    [qr/^Paid \$5\.00 \(Starter\)/m, 'paid with curl on the checkout URL'],
    [qr/checkout\.session\.completed +evt_\w+ -> 200 \{"received":true,"creditedMicros":5000000\}/,
     'checkout.session.completed credited $5.00'],
    [qr/payment_intent\.succeeded +evt_\w+ -> 200 \{"received":true\}/, 'then payment_intent.succeeded'],
    [qr/"balanceMicros":5000000,/, 'the balance is $5.00'],
    [qr/"entries":\[\{"id":"\d+","type":"purchase","amountMicros":5000000,/, 'the ledger shows the purchase'],
    [qr/"status":"paid"/, 'the purchase is paid', 'printed'],
    [qr/"chargedMicros":7500,"balanceMicros":4992500,"replayed":false/, 'the usage is reconciled'],
    [qr/Idempotent-Replayed: true/i, 'the same call again is a replay'],
    [qr/"chargedMicros":7500,"balanceMicros":4992500,"replayed":true/, 'with the first answer'],
    [qr/"balanceMicros":4992500,/, 'charged once', 'printed'],
    [qr/Refunded \$1\.00 of \$5\.00/, 'refunded $1.00 with ./build.sh refund'],
    [qr/charge\.refunded +evt_\w+ -> 200 \{"received":true\}/, 'charge.refunded accepted'],
    [qr/"balanceMicros":3992500,/, '1,000,000 micros debited'],
    [qr/Notifications received/, 'the receiver shows what it received'],
    [qr/"groupBy":"model","groups":\[\{"key":"gpt-4o","requests":1,"inputTokens":1000,"outputTokens":500,"chargedMicros":7500\}\]/,
     'the usage summary shows the charge', 'printed'],
    [qr/"balanceMicros":3992500,/, 'support sees the same balance', 'printed'],
    [qr/^POST \/api\/purchases: \{"purchaseId"/m, './build.sh fund creates a purchase through the API'],
    [qr/^Paid \$5\.00 \(Starter\)/m, 'and pays it on the stand-in'],
    [qr/creditedMicros":5000000/, 'which credits it'],
);

# runs the commands as pasted into bash, in the checkout, and looks for the
# flow's answers in order; then the user's balance after it all
sub flow_ok {
    my ($what, $user, $cmds, $printed) = @_;
    (my $name = $what) =~ s/\W+/-/g;
    # a command that builds, starts or tests would run inside this test
    if ($cmds =~ /build\.sh (?:run|test|stop|build)/) {
        fail("$what: only the flow's commands");
        return;
    }
    my ($ok, $out, $err) = run_sh($name, "set +eu\n$cmds");
    note($out);
    my $rest = $out;
    for my $w (grep { $printed || !$_->[2] } @Flow) {
        my ($re, $name) = @$w;
        if ($rest =~ $re) {
            pass("$what: $name");
            $rest = substr($rest, $+[0]);
        } else {
            fail("$what: $name");
            diag("not found in order: $re\nstderr: $err");
        }
    }
    my (undef, undef, $b) = http_request($port{api}, user_get(
        mint_token(sub => $user, _key_file => "$dir/jwt-private.pem"), '/api/balance'));
    like($b, qr/"balanceMicros":8992500,/, "$what: the user has \$5.00 - 7500 micros - \$1.00 + \$5.00");
}

flow_ok('the printed commands', $ENV{BILLING_DEV_USER},
        join("\n", map { s/^  //r } grep { /^  / } split /\n/, $message), 1);

# README's block, with this test's ports and a user of its own
{
    my $readme = slurp("$root/README.md");
    # the ```sh block with the flow; never one that builds, runs or tests
    my ($block) = grep { /^# Credit Purchase Test/m && !/build\.sh (?:run|test|stop|build)/ }
                  $readme =~ /^```sh\n(.*?)^```$/msg;
    ok($block, "README shows the flow");
    my $u = "devflow-readme-$tag";
    my $tok = mint_token(sub => $u, _key_file => "$dir/jwt-private.pem");
    $block //= '';
    $block =~ s/^export USER_TOKEN=.*$/export USER_TOKEN=$tok SERVICE_TOKEN=$svc_token/m;
    $block =~ s/127\.0\.0\.1:8080/127.0.0.1:$port{api}/g;
    $block =~ s/127\.0\.0\.1:8082/127.0.0.1:$port{notify}/g;
    $block =~ s/test-user-id/$u/g;
    flow_ok("README's commands", $u, $block, 0);
}

# ---------------------------------------------------------------- 2. through the page

my $user = "devflow-$tag";
my $token = mint_token(sub => $user, _key_file => "$dir/jwt-private.pem");
my $stripe = "http://127.0.0.1:$port{stripe}";

sub api {
    my ($method, $path, $body) = @_;
    my ($s, $h, $b) = http_request($port{api}, {
        method => $method, path => $path,
        headers => [Authorization => "Bearer $token",
                    (defined $body ? ('Content-Type' => 'application/json') : ())],
        body => $body });
    return ($s, $h, json_decode($b) // $b);
}

sub balance { (api(GET => '/api/balance'))[2]{balanceMicros} }

# the checkout page (as a browser asks for it) and its forms:
# { action label => [path, { field => value }] }
sub page {
    my ($path) = @_;
    my ($s, $h, $b) = http_request($port{stripe}, { method => 'GET', path => $path,
                                                   headers => [Accept => 'text/html'] });
    my %forms;
    while ($b =~ m{<form method="post" action="([^"]+)">(.*?)</form>}gs) {
        my ($action, $inner) = ($1, $2);
        my %f = $inner =~ /<input (?:type="hidden" )?name="(\w+)" value="([^"]*)"/g;
        my ($label) = $inner =~ m{<button[^>]*>([^<]*)</button>};
        $forms{$label} = [$action, \%f];
    }
    return ($s, $h, $b, \%forms);
}

# submits a form as a browser does (urlencoded)
sub submit {
    my ($form, %extra) = @_;
    return (0, 'no such form') unless $form;
    my %f = (%{ $form->[1] }, %extra);
    my $body = join '&', map { "$_=" . ($f{$_} =~ s/([^A-Za-z0-9_.~-])/sprintf '%%%02X', ord $1/ger) } sort keys %f;
    my ($s, $h, $b) = http_request($port{stripe}, { method => 'POST', path => $form->[0],
        headers => [Accept => 'text/html', 'Content-Type' => 'application/x-www-form-urlencoded'],
        body => $body });
    return ($s, $b);
}

my ($pst, undef, $p) = api(POST => '/api/purchases', '{"packageCode":"starter"}');
is($pst, 201, 'POST /api/purchases: 201');
my $pid = $p->{purchaseId} // '';
my $cs = $p->{checkoutSessionId} // '';
is($p->{checkoutUrl}, "$stripe/c/pay/$cs", 'checkoutUrl is the stand-in\'s page of the session');
like($cs, qr/^cs_test_\w+$/, 'a test-mode session id');

my ($gs, $gh, $page, $forms) = page("/c/pay/$cs");
is($gs, 200, 'the checkout page answers');
like($gh->{'content-type'}, qr{^text/html}, 'in HTML for a browser');
like($page, qr{<h1>Starter: \$5\.00 USD</h1>}, 'it shows the product and the amount');
like($page, qr{purchase \Q$pid\E of user \Q$user\E}, 'and whose purchase it is');
ok($forms->{'Pay $5.00'} && $forms->{'Cancel'}, 'with a Pay and a Cancel form');
{
    my ($s, $h, $b) = http_request($port{stripe}, { method => 'GET', path => "/c/pay/$cs" });
    like($h->{'content-type'}, qr{^text/plain}, 'plain text for curl');
    like($b, qr{^Pay: +curl -s -d action=pay \Q$stripe/c/pay/$cs\E$}m, 'with the command that pays');
}

my ($ps, $paid) = submit($forms->{'Pay $5.00'});
is($ps, 200, 'Pay: 200');
like($paid, qr{Paid \$5\.00 \(Starter\): payment pi_\w+, charge ch_\w+\.}, 'the page says it was paid');
like($paid, qr{checkout\.session\.completed +evt_\w+ -&gt; 200 \{&quot;received&quot;:true,&quot;creditedMicros&quot;:5000000\}.*payment_intent\.succeeded +evt_\w+ -&gt; 200}s,
     'checkout.session.completed, then payment_intent.succeeded, both accepted');
is(balance(), 5_000_000, 'the balance is $5.00');
my (undef, undef, $pur) = api(GET => "/api/purchases/$pid");
is($pur->{status}, 'paid', 'the purchase is paid');
my (undef, undef, $led) = api(GET => '/api/ledger');
is(scalar @{ $led->{entries} || [] }, 1, 'one ledger entry');
is($led->{entries}[0]{purchaseId}, $pid, 'for the purchase');

($ps, $paid) = submit($forms->{'Pay $5.00'});
is($ps, 200, 'paying twice is harmless');
like($paid, qr/Already paid: nothing was charged again and no event was sent/, 'and says so');
is(balance(), 5_000_000, 'the balance did not change');
$forms = (page("/c/pay/$cs"))[3];
ok(!$forms->{'Pay $5.00'} && !$forms->{Cancel} && $forms->{Refund}, 'a paid session offers a refund, no Pay');

my $key = "devflow-$tag";
my $rec = $J->encode({ userId => $user, model => 'gpt-4o', inputTokens => 1000, outputTokens => 500,
                       idempotencyKey => $key });
my @rq = map { { method => 'POST', path => '/api/usage/reconcile', body => $rec,
                 headers => [Authorization => "Bearer $svc_token", 'Content-Type' => 'application/json'] } } 1 .. 2;
my ($r1s, $r1h, $r1b) = http_request($port{api}, $rq[0]);
is($r1s, 201, 'reconcile: 201');
like($r1b, qr/"chargedMicros":7500,"balanceMicros":4992500,"replayed":false/, 'charged 7500 micros');
my ($r2s, $r2h, $r2b) = http_request($port{api}, $rq[1]);
is($r2h->{'idempotent-replayed'}, 'true', 'the same call again is a replay');
is(balance(), 4_992_500, 'charged once');

# refunds, as ./build.sh refund asks for them: by purchase id
my $refund = [ "/c/pay/$pid", { action => 'refund' } ];
my ($rs, $rb) = submit($refund, amount => 100);
is($rs, 200, 'refund $1.00: 200');
like($rb, qr{Refunded \$1\.00 of \$5\.00 \(refunded so far: \$1\.00\)}, 'the page says what was refunded');
like($rb, qr{charge\.refunded +evt_\w+ -&gt; 200}, 'charge.refunded accepted');
is(balance(), 3_992_500, '1,000,000 micros debited');
(undef, undef, $pur) = api(GET => "/api/purchases/$pid");
is($pur->{status}, 'partially_refunded', 'the purchase is partially refunded');
is($pur->{refundedMicros}, 1_000_000, 'by 1,000,000 micros');

($rs, $rb) = submit($refund, amount => 401);
is($rs, 400, 'refunding more than is left: 400');
like($rb, qr/from 1 to 400/, 'saying what is left');
is(balance(), 3_992_500, 'nothing debited');

($rs, $rb) = submit($refund);
is($rs, 200, 'refund the rest');
like($rb, qr{Refunded \$4\.00 of \$5\.00 \(refunded so far: \$5\.00\)}, 'cumulative $5.00');
is(balance(), -7_500, 'everything the purchase credited is debited (the usage stays charged)');
(undef, undef, $pur) = api(GET => "/api/purchases/$pid");
is($pur->{status}, 'refunded', 'the purchase is refunded');
($rs, $rb) = submit($refund, amount => 1);
is($rs, 409, 'nothing left to refund: 409');

# the page's own resend: the same events, answered as duplicates
$forms = (page("/c/pay/$cs"))[3];
my ($ss, $sb) = submit($forms->{'Send the events again'});
is($ss, 200, 'resend: 200');
like($sb, qr/\{&quot;received&quot;:true,&quot;duplicate&quot;:true\}/, 'the module recognises the events');
is(balance(), -7_500, 'and changes nothing');

# cancel: the session expires
my ($cst, undef, $p2) = api(POST => '/api/purchases', '{"packageCode":"standard"}');
is($cst, 201, 'a second purchase');
$forms = (page("/c/pay/$p2->{checkoutSessionId}"))[3];
my ($cs2, $cb) = submit($forms->{Cancel});
is($cs2, 200, 'Cancel: 200');
like($cb, qr/Cancelled: the session expired unpaid/, 'the page says it expired');
like($cb, qr/checkout\.session\.expired +evt_\w+ -&gt; 200/, 'checkout.session.expired accepted');
my (undef, undef, $p2now) = api(GET => "/api/purchases/$p2->{purchaseId}");
is($p2now->{status}, 'failed', 'the purchase failed');
($cs2, $cb) = submit([ "/c/pay/$p2->{checkoutSessionId}", { action => 'pay' } ]);
is($cs2, 409, 'an expired session cannot be paid');
is(balance(), -7_500, 'nothing credited');
($cs2) = submit([ '/c/pay/cs_test_nosuchsession', { action => 'pay' } ]);
is($cs2, 404, 'an unknown session: 404');

# ---------------------------------------------------------------- 3. notifications

{
    # the receiver's list: a line per notification, its body on the next
    my $got = sub {
        my (undef, undef, $list) = http_request($port{notify}, 'GET /');
        my @n;
        while ($list =~ /^\S.*  (\S+)  \S+  signature (ok|BAD) -> (\d+)\n  (.*)$/mg) {
            push @n, { type => $1, sig => $2, status => $3, body => json_decode($4) // {} };
        }
        return grep { ($_->{body}{data}{purchaseId} // '') eq $pid } @n;
    };
    my @n;
    my $end = time + 30;
    while (time < $end) {
        @n = $got->();
        last if (grep { $_->{type} eq 'purchase.completed' } @n)
             && (grep { $_->{type} eq 'purchase.refunded' && $_->{body}{data}{status} eq 'refunded' } @n);
        sleep 0.2;
    }
    my @ok = grep { $_->{sig} eq 'ok' && $_->{status} == 200 } @n;
    is(scalar(grep { $_->{type} eq 'purchase.completed' } @ok), 1,
       'the receiver got purchase.completed once, its signature checked with WEBHOOK_SHARED_SECRET');
    is(join(',', sort map { $_->{body}{data}{status} } grep { $_->{type} eq 'purchase.refunded' } @ok),
       'partially_refunded,refunded', 'and both purchase.refunded');
    is(scalar(grep { $_->{sig} ne 'ok' } @n), 0, 'no signature failed');
}

# ---------------------------------------------------------------- 4. the stand-in as Stripe

{
    my $uuid = '00000000-0000-4000-8000-' . sprintf('%012d', $$);
    my $form = join '&', 'mode=payment', 'line_items[0][price_data][currency]=usd',
        'line_items[0][price_data][unit_amount]=500', 'line_items[0][price_data][product_data][name]=Starter',
        'line_items[0][quantity]=1', "client_reference_id=$uuid", "metadata[purchase_id]=$uuid",
        'metadata[user_id]=u', "payment_intent_data[metadata][purchase_id]=$uuid",
        'payment_intent_data[metadata][user_id]=u', 'success_url=http://x/s', 'cancel_url=http://x/c';
    $form =~ s/\[/%5B/g;
    $form =~ s/\]/%5D/g;
    my $call = sub {
        my ($body, %h) = @_;
        my ($s, $hd, $b) = http_request($port{stripe}, { method => 'POST', path => '/v1/checkout/sessions',
            headers => ['Content-Type' => 'application/x-www-form-urlencoded', %h], body => $body });
        return ($s, $hd, json_decode($b) // {});
    };
    my $auth = "Bearer $secret{STRIPE_SECRET_KEY}";
    my ($s, $h, $b) = $call->($form);
    is($s, 401, 'Stripe API without a key: 401');
    ($s, $h, $b) = $call->($form, Authorization => 'Bearer sk_test_someoneelse');
    is($s, 401, 'with another key: 401');
    ($s, $h, $b) = $call->($form, Authorization => $auth, 'Idempotency-Key' => "k-$tag");
    is($s, 200, 'with the development key: 200');
    is($b->{object}, 'checkout.session', 'a checkout.session');
    is($b->{url}, "$stripe/c/pay/$b->{id}", 'whose url is its page');
    my $first = $b->{id};
    ($s, $h, $b) = $call->($form, Authorization => $auth, 'Idempotency-Key' => "k-$tag");
    is($h->{'idempotent-replayed'}, 'true', 'the same key and parameters: replayed');
    is($b->{id}, $first, 'the same session');
    ($s, $h, $b) = $call->($form =~ s/unit_amount%5D=500/unit_amount%5D=600/r,
                           Authorization => $auth, 'Idempotency-Key' => "k-$tag");
    is($s, 400, 'the same key, other parameters: 400');
    is($b->{error}{type}, 'idempotency_error', 'idempotency_error');
    ($s, $h, $b) = $call->("$form&colour=blue", Authorization => $auth);
    is($s, 400, 'an unknown parameter: 400');
    is($b->{error}{code}, 'parameter_unknown', 'parameter_unknown');
    ($s, $h, $b) = $call->($form =~ s/metadata%5Buser_id%5D=u&/metadata%5Buser_id%5D=v&/r, Authorization => $auth);
    is($b->{error}{param}, 'payment_intent_data[metadata][user_id]', 'metadata that disagree: 400 naming the parameter');
}

invariants_ok('the ledger invariants hold after the local flow');

# ---------------------------------------------------------------- 5. stop

{
    my @pids = grep { /^\d+$/ } map { slurp("$dir/$_") =~ s/\s+//gr } qw(nginx.pid stripe-standin.pid);
    is(scalar @pids, 2, 'nginx and the stand-in wrote their pids');
    my ($ok, undef, $err) = run_sh('stop', 'stop_main');
    ok($ok, 'stop_main') or diag($err);
    $started = 0;
    my $end = time + 10;
    sleep 0.1 while time < $end && grep { kill 0, $_ } @pids;
    is(scalar(grep { kill 0, $_ } @pids), 0, 'nginx and the stand-in are gone');
    ok(!-e "$dir/run.env", 'fund and refund know that nothing runs');
}

done_testing();
