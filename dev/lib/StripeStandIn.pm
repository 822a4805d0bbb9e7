package StripeStandIn;

# The Stripe stand-in of ScholarLink Billing: one implementation for local
# development (`./build.sh run`, through dev/stripe-standin), the tests
# (t/040, t/080, t/090) and the benchmarks (bench/run.sh). Pure Perl, on
# 127.0.0.1 only. docs/development.md describes it for users; this comment
# is the reference.
#
#   my $s = StripeStandIn->start(port => 0, dir => $dir,          # Stripe
#               api_key => 'sk_test_...',                        # else any sk_test_ key
#               webhook_url => 'http://127.0.0.1:8080/webhooks/stripe',
#               webhook_secret => 'whsec_...', log => 1);
#   my $n = StripeStandIn->start(mode => 'notify', secret => '...');  # receiver
#
# Stripe mode, the API (what the module calls, checked as Stripe would):
#   POST /v1/checkout/sessions
#     * Authorization "Bearer <key>": the configured api_key, or any
#       sk_test_ key when none is configured (401 otherwise);
#     * a form (application/x-www-form-urlencoded) of known Checkout Session
#       parameters only (400 parameter_unknown, as Stripe answers), with
#       what docs/spec.md §4.5 asks for: mode=payment, one usd line item with
#       the package's cents and a product name, client_reference_id ==
#       metadata[purchase_id] == payment_intent_data[metadata][purchase_id],
#       metadata[user_id] == payment_intent_data[metadata][user_id], absolute
#       success/cancel URLs, Stripe's metadata limits; otherwise 400
#       invalid_request_error naming the parameter;
#     * Idempotency-Key: the same key with the same body answers the first
#       answer again with Idempotent-Replayed: true; with another body it is
#       400 idempotency_error;
#     * the answer is a checkout.session object whose url is this stand-in's
#       checkout page for the session.
#   GET /v1/checkout/sessions/{id}: the session as it is now.
#
# Stripe mode, the checkout page (a browser or curl; no key needed):
#   GET  /c/pay/{session id or purchase id}   the session: amount, product,
#        state, the events sent; HTML for a browser (Accept: text/html), plain
#        text otherwise, with the curl commands for each action
#   POST /c/pay/{id}  action=pay | cancel | refund [amount=<cents>] | resend
#     pay:    open -> complete/paid; sends checkout.session.completed
#             (payment_status paid) then payment_intent.succeeded. Paying a
#             paid session again is harmless: nothing is charged or sent.
#     cancel: open -> expired (as if its 24 h ran out); sends
#             checkout.session.expired.
#     refund: a paid session's charge refunded by <amount> cents (default:
#             what is left); sends charge.refunded with the cumulative
#             amount_refunded.
#     resend: sends the session's events again, same ids (Stripe's "resend").
#   Events are realistic (evt_, cs_test_, pi_, ch_ ids, the metadata the
#   module set), signed "Stripe-Signature: t=,v1=" with webhook_secret, and
#   POSTed to webhook_url one after the other; the answer says what each
#   delivery got back. 404 unknown session, 409 an action the session's
#   state does not allow, 400 a bad amount.
#   GET / lists the sessions.
#
# Notify mode, the receiver of the module's outgoing notifications: a POST on
# any path has its X-Billing-Signature (t=<unix>,v1=<hex HMAC-SHA256 of
# "t.body">) checked with the shared secret using Digest::SHA (independent of
# the module) and recorded; 400 when it does not match. GET lists what was
# received, newest last, with the verdict.
#
# Every API call and notification is recorded (method, path, headers with
# lower-cased names, raw body, status, in notify mode signature_ok);
# $s->requests returns them. Control (files, so it works across the forked
# server), for the API only:
#   $s->control(fail => N, fail_status => 500|402)  fail the next N requests
#   $s->control(stall => SECONDS, stall_count => N)  sleep before answering
#   $s->reset                                        clear records/controls
# The server forks one process per connection, so a stalled answer does not
# hold up the others. It is killed by $s->stop or at END of the process that
# started it. State (sessions, idempotency keys) lives in `dir`, so a
# stand-in started again on the same directory knows its sessions.

use strict;
use warnings;

use Carp qw(croak);
use Digest::SHA qw(hmac_sha256_hex sha1_hex);
use Fcntl qw(:flock);
use File::Path qw(make_path);
use File::Temp qw(tempdir);
use HTTP::Tiny ();
use IO::Socket::INET ();
use JSON::PP ();
use POSIX ();
use Time::HiRes qw(sleep time);

my $JSON = JSON::PP->new->canonical->allow_nonref;
my @Servers;
my $Owner = $$;

our %PackageCents = (starter => 500, standard => 2000, pro => 5000);

# Checkout Session parameters Stripe knows (the subset a module could send);
# anything else is "Received unknown parameter", as at Stripe.
my @KnownParams = map { qr/^$_$/ } (
    'mode', 'success_url', 'cancel_url', 'client_reference_id', 'customer',
    'customer_email', 'expires_at', 'locale', 'currency', 'allow_promotion_codes',
    'metadata\[[^\[\]]+\]',
    'payment_method_types\[\d+\]',
    'payment_intent_data\[metadata\]\[[^\[\]]+\]',
    'payment_intent_data\[(?:description|receipt_email|statement_descriptor|statement_descriptor_suffix)\]',
    'line_items\[\d+\]\[(?:quantity|price)\]',
    'line_items\[\d+\]\[price_data\]\[(?:currency|unit_amount|unit_amount_decimal|product|tax_behavior)\]',
    'line_items\[\d+\]\[price_data\]\[product_data\]\[(?:name|description)\]',
    'line_items\[\d+\]\[price_data\]\[product_data\]\[images\]\[\d+\]',
    'line_items\[\d+\]\[price_data\]\[product_data\]\[metadata\]\[[^\[\]]+\]',
);

sub start {
    my ($class, %opt) = @_;
    my $self = bless {
        mode           => $opt{mode} // 'stripe',
        secret         => $opt{secret},
        api_key        => $opt{api_key},
        webhook_url    => $opt{webhook_url},
        webhook_secret => $opt{webhook_secret},
        log            => $opt{log},
        dir            => $opt{dir} // tempdir('stripe-standin-XXXXXX', TMPDIR => 1, CLEANUP => 1),
    }, $class;
    croak "notify mode needs a secret" if $self->{mode} eq 'notify' && !defined $self->{secret};
    croak "a webhook_url needs a webhook_secret"
        if defined $self->{webhook_url} && !defined $self->{webhook_secret};
    make_path(map { "$self->{dir}/$_" } qw(idem sessions));
    $self->reset;

    my $listen = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => $opt{port} // 0,
                                       Proto => 'tcp', Listen => 64, ReuseAddr => 1)
        or croak "StripeStandIn: listen on 127.0.0.1:" . ($opt{port} // 0) . ": $!";
    $self->{port} = $listen->sockport;

    my $pid = fork // croak "fork: $!";
    if ($pid == 0) {
        $SIG{CHLD} = 'IGNORE';
        $SIG{PIPE} = 'IGNORE';
        while (1) {
            my $c = $listen->accept or next;
            my $kid = fork;
            if (!defined $kid) { close $c; next }
            if ($kid == 0) {
                close $listen;
                eval { $self->_serve($c) };
                $self->_log("error: $@") if $@ && $@ ne "timeout\n";
                close $c;
                POSIX::_exit(0);
            }
            close $c;
        }
    }
    close $listen;
    $self->{pid} = $pid;
    push @Servers, $self;
    return $self;
}

sub port { $_[0]{port} }
sub url  { "http://127.0.0.1:$_[0]{port}" }
sub pid  { $_[0]{pid} }

sub stop {
    my ($self) = @_;
    return unless $self->{pid};
    kill 'TERM', $self->{pid};
    waitpid $self->{pid}, 0;
    delete $self->{pid};
}

END {
    if ($$ == $Owner) {
        local $?;
        $_->stop for @Servers;
    }
}

sub _log {
    my ($self, $msg) = @_;
    return unless $self->{log};
    my @t = localtime;
    printf STDERR "%02d:%02d:%02d %s\n", @t[2, 1, 0], $msg;
}

# ------------------------------------------------------------ state files

sub _file { "$_[0]{dir}/$_[1]" }

sub _locked {
    my ($self, $code) = @_;
    open my $lk, '>>', $self->_file('lock') or die "lock: $!";
    flock $lk, LOCK_EX;
    my @r = $code->();
    close $lk;
    return wantarray ? @r : $r[0];
}

sub _read_json {
    my ($self, $name, $default) = @_;
    open my $fh, '<', $self->_file($name) or return $default;
    local $/;
    my $t = <$fh>;
    return defined $t && length $t ? $JSON->decode($t) : $default;
}

sub _write_json {
    my ($self, $name, $data) = @_;
    my $f = $self->_file($name);
    open my $fh, '>', "$f.tmp" or die "$f: $!";
    print $fh $JSON->encode($data);
    close $fh;
    rename "$f.tmp", $f;
}

sub reset {
    my ($self) = @_;
    $self->_locked(sub {
        $self->_write_json('control.json', {});
        open my $fh, '>', $self->_file('requests.jsonl');
        close $fh;
    });
}

sub control {
    my ($self, %c) = @_;
    $self->_locked(sub {
        my $cur = $self->_read_json('control.json', {});
        $cur->{$_} = $c{$_} for keys %c;
        $self->_write_json('control.json', $cur);
    });
}

sub requests {
    my ($self) = @_;
    open my $fh, '<', $self->_file('requests.jsonl') or return ();
    local $/ = "\n";   # the server reads HTTP lines with "\r\n"
    my @r;
    while (my $l = <$fh>) {
        chomp $l;
        push @r, $JSON->decode($l) if length $l;
    }
    return @r;
}

# waits until at least $n requests were recorded (or $timeout seconds)
sub wait_requests {
    my ($self, $n, $timeout) = @_;
    my $end = time + ($timeout // 10);
    my @r;
    while (1) {
        @r = $self->requests;
        return @r if @r >= $n || time >= $end;
        sleep 0.05;
    }
}

sub _record {
    my ($self, $rec) = @_;
    $self->_locked(sub {
        open my $fh, '>>', $self->_file('requests.jsonl') or die $!;
        print $fh $JSON->encode($rec), "\n";
        close $fh;
    });
}

# takes one unit of a counted control ("fail", "stall_count")
sub _take {
    my ($self) = @_;
    return $self->_locked(sub {
        my $c = $self->_read_json('control.json', {});
        my %act;
        if (($c->{stall_count} // 0) > 0 && $c->{stall}) {
            $act{stall} = $c->{stall};
            $c->{stall_count}--;
        }
        if (($c->{fail} // 0) > 0) {
            $act{fail} = $c->{fail_status} // 500;
            $c->{fail}--;
        }
        $self->_write_json('control.json', $c);
        return \%act;
    });
}

# ------------------------------------------------------------ HTTP

my %Reason = (200 => 'OK', 400 => 'Bad Request', 401 => 'Unauthorized',
              402 => 'Payment Required', 404 => 'Not Found', 405 => 'Method Not Allowed',
              409 => 'Conflict', 500 => 'Internal Server Error', 502 => 'Bad Gateway',
              503 => 'Service Unavailable');

sub _serve {
    my ($self, $c) = @_;
    $c->autoflush(1);
    # a browser may open a connection and send nothing (preconnect)
    local $SIG{ALRM} = sub { die "timeout\n" };
    alarm 30;
    local $/ = "\r\n";
    my $line = <$c> // return;
    $line =~ s/\r?\n$//;
    my ($method, $path) = split ' ', $line;
    return unless defined $path;
    my %h;
    while (my $l = <$c>) {
        $l =~ s/\r?\n$//;
        last if $l eq '';
        my ($k, $v) = split /:\s*/, $l, 2;
        $k = lc $k;
        $h{$k} = exists $h{$k} ? "$h{$k}, $v" : ($v // '');
    }
    my $body = '';
    if (my $len = $h{'content-length'}) {
        local $/;
        while (length $body < $len) {
            my $n = read $c, my $buf, $len - length $body;
            last unless $n;
            $body .= $buf;
        }
    }
    alarm 0;
    my $rec = { method => $method, path => $path, headers => \%h, body => $body,
                time => time };

    my ($status, $hdrs, $out, $record);
    if ($self->{mode} eq 'notify') {
        ($status, $hdrs, $out) = $method eq 'GET' ? $self->_notify_list($rec) : $self->_notify($rec);
        $record = $method ne 'GET';
    } elsif ($path =~ m{^/v1/}) {
        ($status, $hdrs, $out) = $self->_stripe($rec);
        $record = 1;
    } else {
        ($status, $hdrs, $out) = $self->_checkout($rec);
    }
    if ($record) {
        $rec->{status} = $status;
        $self->_record($rec);
    }

    my %hd = ('Content-Type' => 'application/json', %$hdrs);
    my $head = "HTTP/1.1 $status " . ($Reason{$status} // 'Status') . "\r\n"
             . "Content-Length: " . length($out) . "\r\nConnection: close\r\n";
    $head .= "$_: $hd{$_}\r\n" for sort keys %hd;
    print $c "$head\r\n$out";
}

sub _stripe_error {
    my ($status, $type, $code, $msg, $param) = @_;
    my $e = { type => $type, message => $msg };
    $e->{code} = $code if defined $code;
    $e->{param} = $param if defined $param;
    return ($status, { 'Request-Id' => 'req_' . _rand(14) }, $JSON->encode({ error => $e }));
}

sub _rand {
    my @c = ('a' .. 'z', 'A' .. 'Z', '0' .. '9');
    return join '', map { $c[rand @c] } 1 .. $_[0];
}

sub _form {
    my ($body) = @_;
    my %f;
    for my $pair (split /&/, $body // '') {
        my ($k, $v) = split /=/, $pair, 2;
        for ($k, $v) {
            $_ //= '';
            tr/+/ /;
            s/%([0-9A-Fa-f]{2})/chr hex $1/ge;
        }
        $f{$k} = $v;
    }
    return \%f;
}

# ------------------------------------------------------------ the API

sub _key_ok {
    my ($self, $auth) = @_;
    my ($key) = ($auth // '') =~ /^Bearer (\S+)$/ or return 0;
    return $key eq $self->{api_key} if defined $self->{api_key};
    return $key =~ /^sk_test_[A-Za-z0-9_]+$/;
}

sub _stripe {
    my ($self, $rec) = @_;
    my $act = $self->_take;
    sleep $act->{stall} if $act->{stall};

    my $auth = $rec->{headers}{authorization} // '';
    unless ($self->_key_ok($auth)) {
        my ($k) = $auth =~ /^Bearer (\S+)$/;
        return _stripe_error(401, 'invalid_request_error', undef,
            defined $k ? 'Invalid API Key provided: ' . substr($k, 0, 8) . '*' x 4 . substr($k, -4)
                       : 'You did not provide an API key.');
    }

    if (my $st = $act->{fail}) {
        return _stripe_error(402, 'card_error', 'card_declined', 'Your card was declined.')
            if $st == 402;
        return _stripe_error($st, 'api_error', undef,
                             'An unknown error occurred while processing your request.');
    }

    if ($rec->{method} eq 'GET' && $rec->{path} =~ m{^/v1/checkout/sessions/(cs_\w+)$}) {
        my $s = $self->_read_json("sessions/$1.json")
            or return _stripe_error(404, 'invalid_request_error', 'resource_missing',
                                    "No such checkout.session: '$1'", 'id');
        return (200, { 'Request-Id' => 'req_' . _rand(14) }, $JSON->encode($s->{session}));
    }
    return _stripe_error(404, 'invalid_request_error', undef,
                         "Unrecognized request URL ($rec->{method}: $rec->{path})")
        unless $rec->{method} eq 'POST' && $rec->{path} eq '/v1/checkout/sessions';

    return _stripe_error(400, 'invalid_request_error', undef, 'Invalid content type')
        unless ($rec->{headers}{'content-type'} // '') =~ m{^application/x-www-form-urlencoded};

    # a key already used answers from what it saved, before any validation
    my $key = $rec->{headers}{'idempotency-key'};
    return _stripe_error(400, 'invalid_request_error', undef, 'Invalid Idempotency-Key')
        if defined $key && (length $key > 255 || $key eq '');
    my $replay = defined $key ? $self->_replay('idem/' . sha1_hex($key) . '.json', $key, $rec) : undef;
    return @$replay if $replay;

    my $f = _form($rec->{body});
    for my $k (sort keys %$f) {
        return _stripe_error(400, 'invalid_request_error', 'parameter_unknown',
                             "Received unknown parameter: $k", $k)
            unless grep { $k =~ $_ } @KnownParams;
    }
    my $bad = sub { _stripe_error(400, 'invalid_request_error', 'parameter_invalid', "Invalid $_[0]", $_[0]) };
    for my $prefix ('metadata', 'payment_intent_data[metadata]') {
        my @keys = grep { /^\Q$prefix\E\[[^\[\]]+\]$/ } keys %$f;
        return $bad->($prefix) if @keys > 50;
        for my $k (@keys) {
            my ($name) = $k =~ /\[([^\[\]]+)\]$/;
            return $bad->($k) if length($name) > 40 || length($f->{$k}) > 500;
        }
    }
    return $bad->('mode') unless ($f->{mode} // '') eq 'payment';
    return $bad->('line_items[0][price_data][currency]')
        unless ($f->{'line_items[0][price_data][currency]'} // '') eq 'usd';
    my $amount = $f->{'line_items[0][price_data][unit_amount]'} // '';
    return $bad->('line_items[0][price_data][unit_amount]') unless $amount =~ /^[1-9][0-9]{0,7}$/;
    my $pkg = $f->{'line_items[0][price_data][product_data][metadata][package_code]'}
           // $f->{'metadata[package_code]'};
    return $bad->('line_items[0][price_data][unit_amount]')
        if defined $pkg && defined $PackageCents{$pkg} && $PackageCents{$pkg} != $amount;
    return $bad->('line_items[0][price_data][product_data][name]')
        unless length($f->{'line_items[0][price_data][product_data][name]'} // '');
    return $bad->('line_items[0][quantity]') unless ($f->{'line_items[0][quantity]'} // '') eq '1';
    return $bad->('line_items[1]') if grep { /^line_items\[[1-9]/ } keys %$f;
    my $pid = $f->{client_reference_id} // '';
    return $bad->('client_reference_id') unless $pid =~ /^[0-9a-f-]{36}$/;
    return $bad->('metadata[purchase_id]') unless ($f->{'metadata[purchase_id]'} // '') eq $pid;
    return $bad->('payment_intent_data[metadata][purchase_id]')
        unless ($f->{'payment_intent_data[metadata][purchase_id]'} // '') eq $pid;
    my $uid = $f->{'metadata[user_id]'} // '';
    return $bad->('metadata[user_id]') unless length $uid;
    return $bad->('payment_intent_data[metadata][user_id]')
        unless ($f->{'payment_intent_data[metadata][user_id]'} // '') eq $uid;
    for my $u (qw(success_url cancel_url)) {
        return $bad->($u) unless ($f->{$u} // '') =~ m{^https?://\S+$};
    }

    return $self->_locked(sub {
        my $idem;
        if (defined $key) {
            $idem = 'idem/' . sha1_hex($key) . '.json';
            # a request that failed validation saved nothing (as at Stripe)
            return @$replay if $replay = $self->_replay($idem, $key, $rec);
        }
        my $session = $self->_new_session($f, $amount, $pid);
        my $out = $JSON->encode($session);
        $self->_write_json($idem, { body => $rec->{body}, response => $out }) if $idem;
        $self->_log(sprintf 'checkout session %s: %s, $%s, purchase %s of %s',
                    $session->{id}, $f->{'line_items[0][price_data][product_data][name]'},
                    _dollars($amount), $pid, $uid);
        return (200, { 'Request-Id' => 'req_' . _rand(14),
                       (defined $key ? ('Idempotency-Key' => $key) : ()) }, $out);
    });
}

# the saved answer for an idempotency key, or the error for another body;
# undef when the key is new
sub _replay {
    my ($self, $idem, $key, $rec) = @_;
    my $prev = $self->_read_json($idem) or return undef;
    return [_stripe_error(400, 'idempotency_error', undef,
        "Keys for idempotent requests can only be used with the same parameters they were first used with.")]
        if $prev->{body} ne $rec->{body};
    return [200, { 'Idempotent-Replayed' => 'true', 'Idempotency-Key' => $key,
                   'Request-Id' => 'req_' . _rand(14) }, $prev->{response}];
}

sub _new_session {
    my ($self, $f, $amount, $pid) = @_;
    my $id = 'cs_test_' . _rand(58);
    my %md = map { /^metadata\[(.+)\]$/ ? ($1 => $f->{$_}) : () } keys %$f;
    my %pimd = map { /^payment_intent_data\[metadata\]\[(.+)\]$/ ? ($1 => $f->{$_}) : () } keys %$f;
    my $session = {
        id => $id,
        object => 'checkout.session',
        amount_subtotal => $amount + 0,
        amount_total => $amount + 0,
        cancel_url => $f->{cancel_url},
        client_reference_id => $pid,
        created => int time,
        currency => 'usd',
        customer => undef,
        expires_at => int(time) + 86400,
        livemode => JSON::PP::false,
        metadata => \%md,
        mode => 'payment',
        payment_intent => undef,
        payment_status => 'unpaid',
        status => 'open',
        success_url => $f->{success_url},
        url => $self->url . "/c/pay/$id",
    };
    $self->_write_json("sessions/$id.json", {
        session => $session,
        product => $f->{'line_items[0][price_data][product_data][name]'},
        payment_intent_metadata => \%pimd,
        amount_refunded => 0,
        refunds => [],
        events => [],
    });
    return $session;
}

# ------------------------------------------------------------ the checkout page

sub _dollars { sprintf '%d.%02d', int($_[0] / 100), $_[0] % 100 }

sub _html_escape {
    my ($s) = @_;
    $s //= '';
    $s =~ s/&/&amp;/g;
    $s =~ s/</&lt;/g;
    $s =~ s/>/&gt;/g;
    $s =~ s/"/&quot;/g;
    $s =~ s/'/&#39;/g;
    return $s;
}

# the session file named by a session id or a purchase id (the newest)
sub _find_session {
    my ($self, $key) = @_;
    return undef unless $key =~ /^[A-Za-z0-9_-]{1,100}$/;
    return "sessions/$key.json" if -f $self->_file("sessions/$key.json");
    my ($best, $when);
    for my $f (glob $self->_file('sessions') . '/cs_*.json') {
        my $s = eval { $JSON->decode(do { local (@ARGV, $/) = ($f); <> }) } or next;
        next unless ($s->{session}{client_reference_id} // '') eq $key;
        if (!defined $when || $s->{session}{created} >= $when) {
            ($best, $when) = ($f, $s->{session}{created});
        }
    }
    return undef unless $best;
    $best =~ s{^.*/(sessions/[^/]+)$}{$1};
    return $best;
}

sub _checkout {
    my ($self, $rec) = @_;
    my $html = ($rec->{headers}{accept} // '') =~ m{text/html};
    my ($path) = split /\?/, $rec->{path}, 2;
    if ($path eq '/' && $rec->{method} eq 'GET') {
        return $self->_index($html);
    }
    my ($key) = $path =~ m{^/c/pay/([^/]+)$}
        or return $self->_page($html, 404, undef, ["Nothing here: $path. Checkout pages are /c/pay/<session or purchase id>."]);
    my $file = $self->_find_session($key)
        or return $self->_page($html, 404, undef, ["No checkout session $key here."]);
    if ($rec->{method} eq 'GET') {
        return $self->_page($html, 200, $self->_read_json($file), []);
    }
    return $self->_page($html, 405, $self->_read_json($file), ['Use GET or POST.'])
        unless $rec->{method} eq 'POST';
    my $f = _form($rec->{body});
    my $action = $f->{action} // '';
    my ($status, @lines) =
          $action eq 'pay'    ? $self->_pay($file)
        : $action eq 'cancel' ? $self->_cancel($file)
        : $action eq 'refund' ? $self->_refund($file, $f->{amount})
        : $action eq 'resend' ? $self->_resend($file)
        : (400, "Unknown action '$action': use action=pay, cancel, refund [amount=<cents>] or resend.");
    return $self->_page($html, $status, $self->_read_json($file), \@lines,
                        back => $action eq 'pay' && $status == 200);
}

# runs $code on the session, under the lock; $code returns (status, lines,
# events to send) and may change the session, which is written back
sub _change {
    my ($self, $file, $code) = @_;
    return $self->_locked(sub {
        my $s = $self->_read_json($file);
        my ($status, $lines, $events) = $code->($s);
        $self->_write_json($file, $s) if $events && @$events;
        return ($status, $lines, $events || []);
    });
}

sub _event {
    my ($type, $obj) = @_;
    return { id => 'evt_' . _rand(24), object => 'event', api_version => '2024-06-20',
             created => int time, data => { object => $obj }, livemode => JSON::PP::false,
             pending_webhooks => 1, request => { id => undef, idempotency_key => undef },
             type => $type };
}

sub _intent {
    my ($s) = @_;
    my $cs = $s->{session};
    return { id => $cs->{payment_intent}, object => 'payment_intent',
             amount => $cs->{amount_total}, amount_received => $cs->{amount_total},
             created => $s->{paid_at}, currency => $cs->{currency}, latest_charge => $s->{charge},
             livemode => JSON::PP::false, metadata => $s->{payment_intent_metadata},
             status => 'succeeded' };
}

sub _charge {
    my ($s) = @_;
    my $cs = $s->{session};
    return { id => $s->{charge}, object => 'charge', amount => $cs->{amount_total},
             amount_captured => $cs->{amount_total}, amount_refunded => $s->{amount_refunded},
             captured => JSON::PP::true, created => $s->{paid_at}, currency => $cs->{currency},
             livemode => JSON::PP::false, metadata => {}, paid => JSON::PP::true,
             payment_intent => $cs->{payment_intent},
             refunded => $s->{amount_refunded} >= $cs->{amount_total} ? JSON::PP::true : JSON::PP::false,
             status => 'succeeded' };
}

sub _pay {
    my ($self, $file) = @_;
    my ($status, $lines, $events) = $self->_change($file, sub {
        my ($s) = @_;
        my $cs = $s->{session};
        return (200, ["Already paid: nothing was charged again and no event was sent (Stripe does not take a payment twice)."])
            if $cs->{status} eq 'complete';
        return (409, ["This session expired: it cannot be paid. Create a new purchase."])
            if $cs->{status} ne 'open';
        $s->{paid_at} = int time;
        $s->{charge} = 'ch_' . _rand(24);
        $cs->{payment_intent} = 'pi_' . _rand(24);
        $cs->{status} = 'complete';
        $cs->{payment_status} = 'paid';
        return (200, ['Paid $' . _dollars($cs->{amount_total}) . " ($s->{product}): payment $cs->{payment_intent}, charge $s->{charge}."],
                [_event('checkout.session.completed', $cs), _event('payment_intent.succeeded', _intent($s))]);
    });
    return ($status, @$lines, $self->_send($file, $events));
}

sub _cancel {
    my ($self, $file) = @_;
    my ($status, $lines, $events) = $self->_change($file, sub {
        my ($s) = @_;
        my $cs = $s->{session};
        return (409, ["Already paid: a paid session cannot be cancelled; refund it instead."])
            if $cs->{status} eq 'complete';
        return (200, ["Already expired: nothing was sent again."]) if $cs->{status} eq 'expired';
        $cs->{status} = 'expired';
        $s->{expired_at} = int time;
        return (200, ["Cancelled: the session expired unpaid (as Stripe expires it after 24 h); nothing was charged."],
                [_event('checkout.session.expired', $cs)]);
    });
    return ($status, @$lines, $self->_send($file, $events));
}

sub _refund {
    my ($self, $file, $amount) = @_;
    my ($status, $lines, $events) = $self->_change($file, sub {
        my ($s) = @_;
        my $cs = $s->{session};
        return (409, ["Not paid: there is nothing to refund."]) unless $cs->{status} eq 'complete';
        my $left = $cs->{amount_total} - $s->{amount_refunded};
        return (409, ['Already refunded in full ($' . _dollars($cs->{amount_total}) . ').']) if $left <= 0;
        $amount = $left if !defined $amount || $amount eq '';
        return (400, ["amount must be a number of cents from 1 to $left (what is left to refund)."])
            unless $amount =~ /^[0-9]{1,9}$/ && $amount >= 1 && $amount <= $left;
        $s->{amount_refunded} += $amount;
        push @{ $s->{refunds} }, { id => 're_' . _rand(24), amount => $amount + 0, created => int time };
        return (200, ['Refunded $' . _dollars($amount) . ' of $' . _dollars($cs->{amount_total})
                      . ' (refunded so far: $' . _dollars($s->{amount_refunded}) . "), refund $s->{refunds}[-1]{id}."],
                [_event('charge.refunded', _charge($s))]);
    });
    return ($status, @$lines, $self->_send($file, $events));
}

sub _resend {
    my ($self, $file) = @_;
    my $s = $self->_read_json($file);
    my @ev = @{ $s->{events} };
    return (409, 'No event was sent for this session yet.') unless @ev;
    return (200, 'The same events again (same ids: the module must answer duplicates):',
            $self->_send($file, \@ev, 1));
}

# delivers the events one after the other, records the outcomes in the
# session, and returns a line per event
sub _send {
    my ($self, $file, $events, $again) = @_;
    return () unless @$events;
    my @out;
    my @lines = $self->{webhook_url}
        ? ("Events sent to $self->{webhook_url}, signed with the webhook secret:")
        : ('No webhook URL is configured: the events were not sent.');
    for my $ev (@$events) {
        my $r = $self->_deliver($ev);
        push @out, { id => $ev->{id}, type => $ev->{type}, at => int time, %$r,
                     ($again ? () : (event => $ev)) };
        push @lines, sprintf '  %-28s %s -> %s', $ev->{type}, $ev->{id},
                     $r->{status} ? "$r->{status} $r->{answer}" : "not delivered: $r->{answer}";
        $self->_log("$ev->{type} $ev->{id} -> " . ($r->{status} || 'not delivered') . " $r->{answer}");
    }
    $self->_locked(sub {
        my $s = $self->_read_json($file);
        for my $o (@out) {
            push @{ $s->{events} }, $o->{event} if $o->{event};
            push @{ $s->{deliveries} }, { map { $_ => $o->{$_} } qw(id type at status answer) };
        }
        $self->_write_json($file, $s);
    });
    push @lines, 'A delivery that failed is not retried by the stand-in: use action=resend once the module is up.'
        if grep { !$_->{status} || $_->{status} !~ /^2/ } @out;
    return @lines;
}

sub _deliver {
    my ($self, $ev) = @_;
    return { status => 0, answer => 'no webhook URL' } unless $self->{webhook_url};
    my $body = $JSON->encode($ev);
    my $t = int time;
    my $r = HTTP::Tiny->new(timeout => 15, agent => 'Stripe/1.0 (+https://stripe.com/docs/webhooks)')
        ->post($self->{webhook_url}, {
            headers => { 'Content-Type' => 'application/json; charset=utf-8',
                         'Stripe-Signature' => "t=$t,v1=" . hmac_sha256_hex("$t.$body", $self->{webhook_secret}) },
            content => $body });
    my $answer = $r->{content} // '';
    $answer =~ s/\s+/ /g;
    $answer =~ s/^ | $//g;
    $answer = substr($answer, 0, 300);
    return $r->{status} == 599 ? { status => 0, answer => $answer || $r->{reason} }
                               : { status => $r->{status}, answer => $answer };
}

# the page of a session (or a message without one): HTML or plain text
sub _page {
    my ($self, $html, $status, $s, $lines, %o) = @_;
    my $base = $self->url;
    my @info;
    my ($cs, $url);
    if ($s) {
        $cs = $s->{session};
        $url = "$base/c/pay/$cs->{id}";
        my $state = $cs->{status} eq 'complete'
            ? 'paid' . ($s->{amount_refunded} ? ', $' . _dollars($s->{amount_refunded}) . ' refunded' : '')
            : $cs->{status} eq 'expired' ? 'expired (cancelled), unpaid' : 'open, waiting for payment';
        @info = ("Checkout session $cs->{id} (Stripe stand-in, test mode)",
                 "  $s->{product}: \$" . _dollars($cs->{amount_total}) . ' ' . uc($cs->{currency}),
                 "  purchase $cs->{client_reference_id} of user " . ($cs->{metadata}{user_id} // '?'),
                 "  state: $state");
    }
    my @next;
    if ($cs) {
        my $success = $cs->{success_url} =~ s/\{CHECKOUT_SESSION_ID\}/$cs->{id}/gr;
        push @next, "Back to the shop (success_url): $success" if $o{back};
        push @next, "Pay:    curl -s -d action=pay $url", "Cancel: curl -s -d action=cancel $url"
            if $cs->{status} eq 'open';
        push @next, "Refund: curl -s -d action=refund -d amount=<cents> $url   (or ./build.sh refund $cs->{client_reference_id} [cents])"
            if $cs->{status} eq 'complete' && $s->{amount_refunded} < $cs->{amount_total};
    }
    unless ($html) {
        my $text = join "\n", @$lines, (@$lines && @info ? '' : ()), @info,
                   (@next ? ('', @next) : ()), '';
        return ($status, { 'Content-Type' => 'text/plain; charset=utf-8', 'Cache-Control' => 'no-store' }, $text);
    }

    my $e = \&_html_escape;
    my $out = '<!doctype html><html><head><meta charset="utf-8"><title>'
        . ($cs ? 'Checkout $' . _dollars($cs->{amount_total}) : 'Checkout') . ' (Stripe stand-in)</title>'
        . '<style>body{font-family:sans-serif;max-width:44em;margin:2em auto;padding:0 1em}'
        . 'pre{background:#f4f4f4;padding:.6em;white-space:pre-wrap}button{font-size:1.1em;margin:.3em}'
        . '.note{color:#666}</style></head><body>';
    $out .= '<p class="note">Stripe stand-in, test mode: no card, no network, no money.</p>';
    $out .= '<pre id="result">' . $e->(join "\n", @$lines) . '</pre>' if @$lines;
    if ($cs) {
        $out .= '<h1>' . $e->($s->{product}) . ': $' . _dollars($cs->{amount_total}) . ' ' . uc($e->($cs->{currency})) . '</h1>'
              . '<pre>' . $e->(join "\n", @info[1 .. $#info]) . "\nsession $cs->{id}</pre>";
        my $form = sub {
            my ($action, $label, $extra) = @_;
            return qq{<form method="post" action="/c/pay/$cs->{id}"><input type="hidden" name="action" value="$action">}
                 . ($extra // '') . qq{<button type="submit">} . $e->($label) . '</button></form>';
        };
        if ($cs->{status} eq 'open') {
            $out .= $form->('pay', 'Pay $' . _dollars($cs->{amount_total}))
                  . $form->('cancel', 'Cancel');
        } elsif ($cs->{status} eq 'complete') {
            my $left = $cs->{amount_total} - $s->{amount_refunded};
            $out .= $form->('refund', 'Refund', qq{<label>amount in cents <input name="amount" value="$left" size="8"></label> })
                if $left > 0;
            my $success = $cs->{success_url} =~ s/\{CHECKOUT_SESSION_ID\}/$cs->{id}/gr;
            $out .= '<p><a href="' . $e->($success) . '">Back to the shop (success_url)</a></p>';
        }
        $out .= $form->('resend', 'Send the events again') if @{ $s->{events} };
        if (my @d = @{ $s->{deliveries} || [] }) {
            $out .= '<h2>Events delivered</h2><pre>'
                  . $e->(join "\n", map { "$_->{type} $_->{id} -> " . ($_->{status} || 'not delivered') . " $_->{answer}" } @d)
                  . '</pre>';
        }
    }
    $out .= '</body></html>';
    return ($status, { 'Content-Type' => 'text/html; charset=utf-8', 'Cache-Control' => 'no-store' }, $out);
}

sub _index {
    my ($self, $html) = @_;
    my @rows;
    for my $f (glob $self->_file('sessions') . '/cs_*.json') {
        my $s = eval { $JSON->decode(do { local (@ARGV, $/) = ($f); <> }) } or next;
        push @rows, $s->{session};
    }
    @rows = sort { $b->{created} <=> $a->{created} } @rows;
    splice @rows, 50 if @rows > 50;
    my @lines = ('Stripe stand-in: the newest checkout sessions', '',
                 map { sprintf '%s  %-8s %-7s $%s  purchase %s  %s', scalar(localtime $_->{created}),
                       $_->{status}, $_->{payment_status}, _dollars($_->{amount_total}),
                       $_->{client_reference_id}, $_->{url} } @rows);
    push @lines, '(none yet: POST /api/purchases creates one)' unless @rows;
    return (200, { 'Content-Type' => 'text/plain; charset=utf-8' }, join("\n", @lines) . "\n")
        unless $html;
    my $out = '<!doctype html><html><head><meta charset="utf-8"><title>Stripe stand-in</title></head>'
            . '<body style="font-family:sans-serif"><h1>Stripe stand-in: checkout sessions</h1><ul>';
    $out .= join '', map { '<li><a href="' . _html_escape($_->{url}) . '">' . _html_escape($_->{id})
                           . '</a> ' . _html_escape("$_->{status}, \$" . _dollars($_->{amount_total})) . '</li>' } @rows;
    $out .= '</ul></body></html>';
    return (200, { 'Content-Type' => 'text/html; charset=utf-8' }, $out);
}

# ------------------------------------------------------------ notify mode

sub _notify {
    my ($self, $rec) = @_;
    my $act = $self->_take;
    sleep $act->{stall} if $act->{stall};

    my $sig = $rec->{headers}{'x-billing-signature'} // '';
    my ($t) = $sig =~ /(?:^|,)t=(\d+)(?:,|$)/;
    my @v1 = $sig =~ /(?:^|,)v1=([0-9a-f]{64})(?=,|$)/g;
    my $ok = 0;
    if (defined $t && @v1 && abs(time - $t) <= 300) {
        my $want = hmac_sha256_hex("$t.$rec->{body}", $self->{secret});
        $ok = grep { $_ eq $want } @v1;
    }
    $rec->{signature_ok} = $ok ? 1 : 0;
    $rec->{event_id} = $rec->{headers}{'x-billing-event-id'};
    my $type = (eval { $JSON->decode($rec->{body}) } // {})->{type} // '?';
    $self->_log("notification $type " . ($rec->{event_id} // '-')
                . ($ok ? ' signature ok: ' : ' BAD SIGNATURE (refused): ') . $rec->{body});

    return (500, {}, '{"error":"told to fail"}') if $act->{fail};
    return (400, {}, '{"error":"bad signature"}') unless $ok;
    return (200, {}, '{"ok":true}');
}

sub _notify_list {
    my ($self) = @_;
    my @r = $self->requests;
    my @lines = ('Notifications received (X-Billing-Signature checked with WEBHOOK_SHARED_SECRET), oldest first:', '');
    for my $n (@r) {
        my $type = (eval { $JSON->decode($n->{body}) } // {})->{type} // '?';
        push @lines, sprintf('%s  %s  %s  signature %s -> %s', scalar(localtime $n->{time}), $type,
                             $n->{event_id} // '-', $n->{signature_ok} ? 'ok' : 'BAD', $n->{status}),
                     "  $n->{body}";
    }
    push @lines, '(none yet)' unless @r;
    return (200, { 'Content-Type' => 'text/plain; charset=utf-8', 'Cache-Control' => 'no-store' },
            join("\n", @lines) . "\n");
}

1;
