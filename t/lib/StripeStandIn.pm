package StripeStandIn;

# A Stripe stand-in on loopback for the ScholarLink Billing tests (pure
# Perl, no network beyond 127.0.0.1). Two modes:
#
#   my $s = StripeStandIn->start;                       # Stripe API
#   my $n = StripeStandIn->start(mode => 'notify', secret => 'whsec');
#
# Stripe mode answers POST /v1/checkout/sessions like Stripe does:
#   * Authorization must be "Bearer sk_test_..." (401 Stripe error otherwise);
#   * the form must be what docs/spec.md §4.5 asks for (mode=payment, one line item
#     with usd price_data and the package's cents, client_reference_id ==
#     metadata[purchase_id] == payment_intent_data[metadata][purchase_id],
#     metadata[user_id] == payment_intent_data[metadata][user_id], absolute
#     success/cancel URLs); otherwise 400 invalid_request_error naming the
#     parameter;
#   * Idempotency-Key: the same key with the same body answers the same
#     session (with Idempotent-Replayed: true); with a different body it is
#     400 idempotency_error;
#   * the answer is a realistic checkout.session object.
# Notify mode accepts POSTs on any path, checks X-Billing-Signature
# (t=<unix>,v1=<hex HMAC-SHA256 of "t.body">) with the shared secret using
# Digest::SHA (independent of the module) and records the outcome.
#
# Every request is recorded (method, path, headers with lower-cased names,
# raw body, and in notify mode signature_ok); $s->requests returns them.
# Control (files, so it works across the forked server):
#   $s->control(fail => N, fail_status => 500|402)  fail the next N requests
#   $s->control(stall => SECONDS, stall_count => N)  sleep before answering
#   $s->reset                                        clear records/controls
# The server forks one process per connection, so a stalled answer does not
# hold up the others. It is killed by $s->stop or at END of the process that
# started it.

use strict;
use warnings;

use Carp qw(croak);
use Digest::SHA qw(hmac_sha256_hex sha1_hex);
use Fcntl qw(:flock O_RDWR O_CREAT);
use File::Temp qw(tempdir);
use IO::Socket::INET ();
use JSON::PP ();
use POSIX qw(WNOHANG);
use Time::HiRes qw(sleep time);

my $JSON = JSON::PP->new->canonical->allow_nonref;
my @Servers;
my $Owner = $$;

our %PackageCents = (starter => 500, standard => 2000, pro => 5000);

sub start {
    my ($class, %opt) = @_;
    my $self = bless {
        mode   => $opt{mode} // 'stripe',
        secret => $opt{secret},
        dir    => $opt{dir} // tempdir('stripe-standin-XXXXXX', TMPDIR => 1, CLEANUP => 1),
    }, $class;
    croak "notify mode needs a secret" if $self->{mode} eq 'notify' && !defined $self->{secret};
    mkdir "$self->{dir}/idem";
    $self->reset;

    my $listen = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
                                       Proto => 'tcp', Listen => 64, ReuseAddr => 1)
        or croak "StripeStandIn: listen: $!";
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

sub _serve {
    my ($self, $c) = @_;
    $c->autoflush(1);
    local $/ = "\r\n";
    my $line = <$c> // return;
    $line =~ s/\r?\n$//;
    my ($method, $path) = split ' ', $line;
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
    my $rec = { method => $method, path => $path, headers => \%h, body => $body,
                time => time };

    my ($status, $hdrs, $out) = $self->{mode} eq 'notify'
        ? $self->_notify($rec) : $self->_stripe($rec);
    $rec->{status} = $status;
    $self->_record($rec);

    my $head = "HTTP/1.1 $status X\r\nContent-Type: application/json\r\n"
             . "Content-Length: " . length($out) . "\r\nConnection: close\r\n";
    $head .= "$_: $hdrs->{$_}\r\n" for sort keys %$hdrs;
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
    for my $pair (split /&/, $body) {
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

sub _stripe {
    my ($self, $rec) = @_;
    my $act = $self->_take;
    sleep $act->{stall} if $act->{stall};

    return _stripe_error(404, 'invalid_request_error', 'resource_missing',
                         "Unrecognized request URL ($rec->{method}: $rec->{path})")
        unless $rec->{method} eq 'POST' && $rec->{path} eq '/v1/checkout/sessions';

    my $auth = $rec->{headers}{authorization} // '';
    return _stripe_error(401, 'invalid_request_error', undef,
                         'Invalid API Key provided')
        unless $auth =~ /^Bearer sk_test_[A-Za-z0-9_]+$/;

    if (my $st = $act->{fail}) {
        return _stripe_error(402, 'card_error', 'card_declined', 'Your card was declined.')
            if $st == 402;
        return _stripe_error($st, 'api_error', undef,
                             'An unknown error occurred while processing your request.');
    }

    return _stripe_error(400, 'invalid_request_error', undef, 'Invalid content type')
        unless ($rec->{headers}{'content-type'} // '') =~ m{^application/x-www-form-urlencoded};

    my $f = _form($rec->{body});
    my $bad = sub { _stripe_error(400, 'invalid_request_error', 'parameter_invalid', "Invalid $_[0]", $_[0]) };
    return $bad->('mode') unless ($f->{mode} // '') eq 'payment';
    return $bad->('line_items[0][price_data][currency]')
        unless ($f->{'line_items[0][price_data][currency]'} // '') eq 'usd';
    my $amount = $f->{'line_items[0][price_data][unit_amount]'} // '';
    return $bad->('line_items[0][price_data][unit_amount]') unless $amount =~ /^[1-9][0-9]*$/;
    my $pkg = $f->{'line_items[0][price_data][product_data][metadata][package_code]'}
           // $f->{'metadata[package_code]'};
    return $bad->('line_items[0][price_data][unit_amount]')
        if defined $pkg && defined $PackageCents{$pkg} && $PackageCents{$pkg} != $amount;
    return $bad->('line_items[0][price_data][product_data][name]')
        unless length($f->{'line_items[0][price_data][product_data][name]'} // '');
    return $bad->('line_items[0][quantity]') unless ($f->{'line_items[0][quantity]'} // '') eq '1';
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

    my $key = $rec->{headers}{'idempotency-key'};
    my $idem;
    if (defined $key) {
        $idem = 'idem/' . sha1_hex($key) . '.json';
        my $prev = $self->_read_json($idem);
        if ($prev) {
            return _stripe_error(400, 'idempotency_error', undef,
                "Keys for idempotent requests can only be used with the same parameters they were first used with.")
                if $prev->{body} ne $rec->{body};
            return (200, { 'Idempotent-Replayed' => 'true', 'Idempotency-Key' => $key },
                    $prev->{response});
        }
    }

    my $id = 'cs_test_' . _rand(58);
    my %md = map { /^metadata\[(.+)\]$/ ? ($1 => $f->{$_}) : () } keys %$f;
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
        url => "https://checkout.stripe.com/c/pay/$id#fidkdWxOYHwnPyd1blpxYHZxWjA0",
    };
    my $out = $JSON->encode($session);
    if ($idem) {
        $self->_write_json($idem, { body => $rec->{body}, response => $out });
    }
    return (200, { 'Request-Id' => 'req_' . _rand(14),
                   (defined $key ? ('Idempotency-Key' => $key) : ()) }, $out);
}

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

    return (500, {}, '{"error":"told to fail"}') if $act->{fail};
    return (400, {}, '{"error":"bad signature"}') unless $ok;
    return (200, {}, '{"ok":true}');
}

1;
