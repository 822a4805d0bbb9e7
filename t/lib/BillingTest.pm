package BillingTest;

# Helpers for the ScholarLink Billing .t files. They work under upstream
# Test::Nginx as well as under the t/lib fallback: nothing here touches the
# runner's internals (only Test::More, and add_response_body_check(), which
# both provide).
#
# How a Test::Nginx block is written here (upstream's format, the subset
# the fallback runner implements too):
#   * No load_module: the runner loads $TEST_NGINX_LOAD_MODULES into every
#     block (t/test-env.sh exports it; the ASan suite points it at the
#     -asan build). start_nginx below does the same for scripts.
#   * Blocks run shuffled. Each block works on its own user (a per-block id
#     such as "$U-t3", $U holding the time and pid, so a second run against
#     the same database, as the ASan suite's, starts clean) and creates
#     what it needs itself: money and earlier
#     charges in --- init (run after nginx started, before the first
#     request; evaluated in package Test::Nginx::Util, so write main::...),
#     or as an earlier request of the same block (--- request eval with an
#     array, and arrays for --- error_code / response_* / more_headers).
#     Only when the order of the blocks IS the test may a file call
#     no_shuffle(), with a comment saying why.
#   * Test::Base evaluates every `eval` section of every block when the
#     blocks are read, before the first block runs: a value the request
#     must contain (a hold id, say) is made there, for that block alone.
#     Tokens and signatures are made then too, so a time-relative value
#     (exp, nbf, a signature timestamp) needs a margin far beyond the run
#     time of the file: shuffled, its block may run last, minutes later
#     under upstream Test::Nginx with ASan.
#   * What the response cannot show (what the ledger holds afterwards) goes
#     in an --- after_requests section; see after_requests_check below.
#   * Configuration errors are --- must_die blocks with --- error_log for
#     the [emerg] message and --- no_error_log for any secret.
#   * TEST_NGINX_NO_SHUFFLE=1 runs a file's blocks in file order (both
#     runners), for debugging only.
#
#   psql_admin($sql)             -> output (tuples only, unaligned), dies on error
#   psql_url($url, $sql)         -> same, as any role
#   invariants_clean()           -> true when billing.invariant_violations() is empty
#   invariants_ok($name)         -> ok(invariants_clean()) with the rows as diag
#   fund_user($user, $micros [, $url]) -> credits through a paid purchase
#   scratch_db($tag)             -> admin URL of a new empty database billing_<tag>_<pid>
#                                   next to the test database, dropped at exit
#   migrate_db($url, %opts)      -> ($ok, $output) of sql/migrate.sh on $url
#   migrated_scratch_db($tag)    -> scratch_db($tag), migrated; asserts it
#   database_url($url, $db)      -> $url naming database $db instead
#   database_name($url)          -> the database $url names
#   mint_token(%claims)          -> RS256 JWT (Crypt::JWT), defaults below
#   mint_token_hs256_with_pubkey(%claims), mint_token_none(%claims)
#   stripe_signature($secret, $payload, $timestamp) -> "t=...,v1=..."
#   http_request($port, $req)    -> (status, \%headers, body)
#   parallel_requests($port, \@requests, $concurrency) -> list of [status, \%headers, body]
#   start_nginx($name, $conf, %opts) / stop_nginx($name [, $signal])
#                                (loads TEST_NGINX_LOAD_MODULES, as the runner does)
#   nginx_pids($name)            -> (master, workers...)
#   free_port(), wait_port($port [, $timeout])
#   after_requests_check         -> the add_response_body_check() hook that
#                                   runs --- after_requests sections
#   ledger_is($user, $entries, $balance [, $name]) -> two is() on the ledger
#
# A request ($req) is either a hashref
#   { method => 'POST', path => '/api/usage/reconcile',
#     headers => { Authorization => "Bearer $tok" } (or an arrayref of pairs),
#     body => '...' }
# or a Test::Nginx-style string: "METHOD /uri\n<body>" (no header lines).
# Host: localhost, Connection: close and Content-Length are added.
# Response header names are lower-cased in the returned hashref; repeated
# headers are joined with ", ".

use strict;
use warnings;

use Exporter 'import';
use Carp qw(croak);
use Cwd ();
use File::Path qw(make_path remove_tree);
use File::Spec ();
use File::Temp qw(tempfile);
use IO::Select ();
use IO::Socket::INET ();
use POSIX qw(WNOHANG);
use Time::HiRes qw(sleep time);
use Digest::SHA qw(hmac_sha256 hmac_sha256_hex);
use MIME::Base64 qw(encode_base64url);
use JSON::PP ();
use Test::More ();
use BillingTest::OpenAPI ();

# Every Test::Nginx file that loads this module gets each answer checked
# against docs/openapi.yaml, through the hook upstream Test::Nginx::Socket
# and the fallback runner both offer (add_response_body_check, exported to
# the test file). INIT: after the test file's `use` lines, whatever their
# order; plain Test::More scripts have no hook and are checked by the
# request helpers below instead.
INIT {
    BillingTest::OpenAPI::load();
    if (my $add = main->can('add_response_body_check')) {
        $add->(\&BillingTest::OpenAPI::test_nginx_check);
    }
    # BILLING_TEST_BATCH=N: the whole suite with group commit on, unchanged
    # (see batch_config below); both runners offer add_block_preprocessor.
    if (batch_config() ne '' and my $pre = main->can('add_block_preprocessor')) {
        $pre->(\&_batch_block);
    }
}

# BILLING_TEST_BATCH=N (N >= 0) runs every block and every start_nginx()
# instance with `billing_batch max=N;` in its http block, unless it says
# billing_batch itself: group commit must answer every test as the single
# path does (docs/architecture.md, "Group commit").
sub batch_config {
    my $n = $ENV{BILLING_TEST_BATCH} // '';
    return '' unless $n =~ /^\d+$/;
    return "billing_batch max=$n;";
}

sub _batch_block {
    my ($block) = @_;
    my $http = $block->http_config // '';
    return if $http =~ /\bbilling_batch\b/;
    $block->set_value('http_config', $http . "\n" . batch_config() . "\n");
}

our @EXPORT = qw(
    psql_admin psql_url psql_script invariants_clean invariants_ok
    scratch_db migrate_db migrated_scratch_db database_url database_name
    fund_user balance_of entries_of sql_quote ledger_is after_requests_check
    mint_token mint_token_hs256_with_pubkey mint_token_none
    stripe_signature
    http_request parallel_requests
    start_nginx stop_nginx nginx_pids nginx_prefix
    free_port wait_port
);

our $ISS = 'https://student-pilot.replit.app';
our $AUD = 'https://billing.scholarlink.app';

my $MainPid = $$;

# ---------------------------------------------------------------- psql

sub psql_url {
    my ($url, $sql) = @_;
    croak "psql_url: no database URL" unless defined $url && $url ne '';
    my ($sfh, $sfile) = tempfile('billing-sql-XXXXXX', TMPDIR => 1, UNLINK => 1);
    print $sfh $sql;
    close $sfh;
    my ($efh, $efile) = tempfile('billing-psql-err-XXXXXX', TMPDIR => 1, UNLINK => 1);
    close $efh;

    my $pid = open(my $out, '-|') // die "fork: $!";
    if ($pid == 0) {
        open STDERR, '>', $efile or POSIX::_exit(127);
        open STDIN, '<', '/dev/null';
        { exec 'psql', '-X', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1',
               '-d', $url, '-f', $sfile; }
        POSIX::_exit(127);
    }
    my $res = do { local $/; <$out> } // '';
    close $out;
    my $rc = $?;
    my $err = do { local $/; open my $e, '<', $efile; <$e> } // '';
    unlink $sfile, $efile;
    if ($rc != 0) {
        chomp $err;
        die "psql failed (exit " . ($rc >> 8) . "): $err\nSQL: $sql\n";
    }
    chomp $res;
    return $res;
}

sub psql_admin {
    my ($sql) = @_;
    return psql_url($ENV{BILLING_TEST_ADMIN_URL}, $sql);
}

# A multi-statement script against $url (a file, so psql runs it as a
# script); its stdout and stderr (NOTICEs, EXPLAIN output) together. Dies
# if psql fails.
sub psql_script {
    my ($url, $sql) = @_;
    my ($fh, $file) = File::Temp::tempfile('billing-psql-XXXXXX', TMPDIR => 1, UNLINK => 1);
    print $fh $sql;
    close $fh;
    my $out = `psql -X -q -A -t -v ON_ERROR_STOP=1 -d '$url' -f '$file' 2>&1`;
    die "psql failed: $out" if $?;
    return $out;
}

sub invariants_clean {
    my $rows = psql_admin('SELECT * FROM billing.invariant_violations()');
    return $rows eq '' ? 1 : 0;
}

sub invariants_ok {
    my ($name) = @_;
    $name //= 'billing invariants hold';
    my $rows = eval { psql_admin('SELECT * FROM billing.invariant_violations()') };
    if (!defined $rows) {
        Test::More::fail($name);
        Test::More::diag("invariant_violations() failed: $@");
        return 0;
    }
    my $ok = Test::More::ok($rows eq '', $name);
    Test::More::diag("invariant violations:\n$rows") unless $ok;
    return $ok;
}

# ---------------------------------------------------------------- scratch databases

# A file that may break the ledger on purpose, or needs a database in a
# state of its own (empty, an old layout), works on a scratch database
# next to the test database, as the admin login; the test database stays
# as every other file expects it.

my @ScratchDbs;   # dropped by the END block below, after the nginx instances stop

sub database_url {
    my ($url, $db) = @_;
    (my $u = $url) =~ s{/[^/?]*(\?|$)}{/$db$1};
    return $u;
}

sub database_name {
    my ($url) = @_;
    my ($db) = $url =~ m{^[^/]*//[^/]*/([^/?]*)} or croak "database_name: no database in $url";
    return $db;
}

# billing_<tag>_<pid>: a run killed before its END leaves a database of
# its own pid behind, never another run's; one left over is dropped first.
# Called again with the same tag: the database is dropped and made anew.
sub scratch_db {
    my ($tag) = @_;
    croak "scratch_db: bad tag '$tag'" unless defined $tag && $tag =~ /^\w+$/;
    my $admin = $ENV{BILLING_TEST_ADMIN_URL} // croak 'BILLING_TEST_ADMIN_URL is not set';
    my $name = "billing_${tag}_$$";
    psql_admin(qq{DROP DATABASE IF EXISTS "$name" WITH (FORCE)});
    psql_admin(qq{CREATE DATABASE "$name"});
    push @ScratchDbs, $name unless grep { $_ eq $name } @ScratchDbs;
    return database_url($admin, $name);
}

sub _shell_quote {
    my ($s) = @_;
    $s =~ s/'/'\\''/g;
    return "'$s'";
}

# sql/migrate.sh of this tree (or of sql_dir => another tree's sql/, such
# as an old layout's) on $url, with args => [...] before the URL
# (--online-only, say). Its output is for a diag when it fails.
sub migrate_db {
    my ($url, %o) = @_;
    my $dir = $o{sql_dir} // ($ENV{BILLING_ROOT} // '.') . '/sql';
    my $cmd = join ' ', 'bash', map { _shell_quote($_) } "$dir/migrate.sh", @{ $o{args} || [] }, $url;
    my $out = `$cmd 2>&1`;
    return ($? == 0, $out);
}

sub migrated_scratch_db {
    my ($tag) = @_;
    my $url = scratch_db($tag);
    my ($ok, $out) = migrate_db($url);
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    Test::More::ok($ok, 'a scratch database, migrated') or Test::More::diag($out);
    return $url;
}

# ---------------------------------------------------------------- JWT

sub _slurp {
    my ($file) = @_;
    open my $fh, '<', $file or croak "cannot read $file: $!";
    local $/;
    my $data = <$fh>;
    close $fh;
    return $data;
}

sub _rand_hex { join '', map { sprintf '%02x', int rand 256 } 1 .. ($_[0] || 8) }

# claims: defaults overridden by %over; a claim set to undef is removed.
# Special keys (not claims): _header => {extra JOSE header fields},
# _key_file => private key file (default $BILLING_TEST_JWT_PRIVATE_KEY_FILE).
sub _claims {
    my %over = @_;
    my $now = time;
    $now = int $now;
    my %c = (
        iss => $ISS,
        aud => $AUD,
        sub => 'user-' . _rand_hex(6),
        iat => $now,
        exp => $now + 600,
    );
    for my $k (keys %over) {
        next if $k =~ /^_/;
        if (defined $over{$k}) { $c{$k} = $over{$k} } else { delete $c{$k} }
    }
    return \%c;
}

sub mint_token {
    my %over = @_;
    require Crypt::JWT;
    my $file = $over{_key_file} // $ENV{BILLING_TEST_JWT_PRIVATE_KEY_FILE}
        // croak "BILLING_TEST_JWT_PRIVATE_KEY_FILE is not set";
    my $pem = _slurp($file);
    my %hdr = %{ $over{_header} || {} };
    $hdr{kid} //= $ENV{BILLING_TEST_JWT_KID} if defined $ENV{BILLING_TEST_JWT_KID};
    return Crypt::JWT::encode_jwt(
        payload       => _claims(%over),
        alg           => $over{_alg} // 'RS256',
        key           => \$pem,
        extra_headers => \%hdr,
    );
}

sub _b64j { encode_base64url(JSON::PP->new->canonical->encode($_[0])) }

# The classic algorithm-confusion attack: HS256 with the RSA public key
# (PEM text, as published) used as the HMAC secret. Must be rejected.
sub mint_token_hs256_with_pubkey {
    my %over = @_;
    my $file = $over{_pub_file} // $ENV{TEST_NGINX_JWT_PUBLIC_KEY_FILE}
        // croak "TEST_NGINX_JWT_PUBLIC_KEY_FILE is not set";
    my $pub = _slurp($file);
    my $input = _b64j({ alg => 'HS256', typ => 'JWT', %{ $over{_header} || {} } })
              . '.' . _b64j(_claims(%over));
    return $input . '.' . encode_base64url(hmac_sha256($input, $pub));
}

# alg "none", empty signature. Must be rejected.
sub mint_token_none {
    my %over = @_;
    return _b64j({ alg => 'none', typ => 'JWT', %{ $over{_header} || {} } })
         . '.' . _b64j(_claims(%over)) . '.';
}

# ---------------------------------------------------------------- ledger

sub sql_quote {
    my ($s) = @_;
    $s =~ s/'/''/g;
    return "'$s'";
}

# Credits $micros to $user through the real crediting path: a purchase
# and a signed-off payment_intent.succeeded event (as the webhook would),
# in the test database or the one $url names (a scratch database).
sub fund_user {
    my ($user, $micros, $url) = @_;
    my $u = sql_quote($user);
    my $out = psql_url($url // $ENV{BILLING_TEST_ADMIN_URL}, <<"SQL");
WITH p AS (
    INSERT INTO billing.purchases (user_id, package_code, amount_cents, credits_micros)
    VALUES ($u, 'pro', 5000, $micros) RETURNING id
)
SELECT (billing.api_stripe_event(jsonb_build_object(
    'id', 'evt_fund_' || p.id, 'type', 'payment_intent.succeeded', 'object', 'event',
    'data', jsonb_build_object('object', jsonb_build_object(
        'id', 'pi_fund_' || p.id, 'object', 'payment_intent',
        'metadata', jsonb_build_object('purchase_id', p.id::text)))))).meta
FROM p;
SQL
    chomp $out;
    croak "fund_user($user): $out" unless $out eq 'processed';
    return 1;
}

sub balance_of {
    my $u = sql_quote($_[0]);
    my $v = psql_admin("SELECT coalesce((SELECT balance_micros FROM billing.accounts WHERE user_id = $u), 0)");
    chomp $v;
    return $v + 0;
}

sub entries_of {
    my $u = sql_quote($_[0]);
    my $v = psql_admin("SELECT count(*) FROM billing.ledger_entries WHERE user_id = $u");
    chomp $v;
    return $v + 0;
}

# what the ledger holds for $user afterwards: the number of entries and the
# balance (0 when the user has no account)
our $BlockName;   # the block whose --- after_requests runs, for test names

sub ledger_is {
    my ($user, $entries, $balance, $name) = @_;
    $name //= ($BlockName ? "$BlockName - " : '') . "ledger of $user";
    Test::More::is(entries_of($user), $entries, "$name: entries");
    Test::More::is(balance_of($user), $balance, "$name: balance");
}

# ---------------------------------------------------------------- --- after_requests

# A section of this project's blocks, run through add_response_body_check(),
# which upstream Test::Nginx and the fallback call the same way after every
# response (block, body, request index, repetition, dry run). A file that
# uses the section registers the hook once:
#
#     add_response_body_check(\&BillingTest::after_requests_check);
#
# and a block then says, for instance:
#
#     --- after_requests
#     main::ledger('t3', 2, 992_500);
#
# The code is evaluated in package main after the block's last response
# (once per repetition); Test::More assertions in it belong to the block,
# and an exception fails it.
sub after_requests_check {
    my ($block, $body, $req_idx, $rep, $dry_run) = @_;
    return if $dry_run || !$block->can('after_requests');
    my $code = $block->after_requests;
    return unless defined $code;
    my $req = $block->request;
    return unless $req_idx == (ref $req eq 'ARRAY' ? $#$req : 0);
    local $BlockName = $block->name;
    my $ok = eval "package main;\n$code;\n1";
    Test::More::fail($block->name . " - after_requests died: $@") unless $ok;
}

# ---------------------------------------------------------------- Stripe

# Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<raw payload>">
sub stripe_signature {
    my ($secret, $payload, $timestamp) = @_;
    $timestamp //= int time;
    return "t=$timestamp,v1=" . hmac_sha256_hex("$timestamp.$payload", $secret);
}

# ---------------------------------------------------------------- HTTP

sub _build_request {
    my ($req) = @_;
    my ($method, $path, $body, @headers);
    if (ref $req eq 'HASH') {
        $method = $req->{method} // 'GET';
        $path   = $req->{path} // $req->{uri} // '/';
        $body   = $req->{body};
        my $h = $req->{headers} || [];
        @headers = ref $h eq 'HASH' ? map { [$_, $h->{$_}] } sort keys %$h
                 : map { [$h->[$_], $h->[$_ + 1]] } grep { $_ % 2 == 0 } 0 .. $#$h;
    } else {
        my ($first, $rest) = split /\n/, $req, 2;
        ($method, $path) = split ' ', $first;
        $path //= '/';
        $body = $rest;
        if (defined $body) {
            $body =~ s/^\s+|\s+$//gs;
            undef $body if $body eq '';
        }
    }
    my %have = map { lc $_->[0] => 1 } @headers;
    my $s = "$method $path HTTP/1.1\r\n";
    $s .= "Host: localhost\r\n" unless $have{host};
    $s .= "Connection: close\r\n" unless $have{connection};
    $s .= "$_->[0]: $_->[1]\r\n" for @headers;
    if (defined $body && !$have{'content-length'} && !$have{'transfer-encoding'}) {
        $s .= "Content-Length: " . length($body) . "\r\n";
    }
    $s .= "\r\n";
    $s .= $body if defined $body;
    return $s;
}

sub _parse_response {
    my ($raw) = @_;
    return (0, {}, '') unless defined $raw && $raw =~ /\r?\n\r?\n/;
    my ($head, $body) = split /\r?\n\r?\n/, $raw, 2;
    my @lines = split /\r?\n/, $head;
    my $status_line = shift @lines // '';
    my ($status) = $status_line =~ m{^HTTP/\d\.\d\s+(\d{3})};
    my %h;
    for my $l (@lines) {
        my ($k, $v) = split /:\s*/, $l, 2;
        next unless defined $v;
        $k = lc $k;
        $h{$k} = exists $h{$k} ? "$h{$k}, $v" : $v;
    }
    $body //= '';
    if (($h{'transfer-encoding'} // '') =~ /chunked/i) {
        my $out = '';
        while ($body =~ s/^([0-9a-fA-F]+)[^\r\n]*\r\n//) {
            my $n = hex $1;
            last if $n == 0;
            $out .= substr($body, 0, $n, '');
            $body =~ s/^\r\n//;
        }
        $body = $out;
    } elsif (defined $h{'content-length'} && $h{'content-length'} =~ /^\d+$/
             && length($body) > $h{'content-length'}) {
        $body = substr($body, 0, $h{'content-length'});
    }
    return ($status // 0, \%h, $body);
}

# The request line of a request given to the helpers: (method, target).
sub _request_line {
    my ($req) = @_;
    if (ref $req eq 'HASH') {
        return ($req->{method} // 'GET', $req->{path} // $req->{uri} // '/');
    }
    my ($method, $path) = split ' ', (split /\n/, $req, 2)[0];
    return ($method, $path // '/');
}

# Every complete answer is checked against docs/openapi.yaml (a mismatch
# fails the calling test; see BillingTest::OpenAPI). An answer cut short
# (a timeout, a connection killed on purpose) has nothing to compare.
sub _check_answers {
    my ($requests, $answers) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 2;
    for my $i (0 .. $#$requests) {
        my ($status, $h, $body) = @{ $answers->[$i] };
        next unless $status;
        next if defined $h->{'content-length'} && $h->{'content-length'} =~ /^\d+$/
                && length($body) < $h->{'content-length'};
        BillingTest::OpenAPI::check_answer(_request_line($requests->[$i]), $status, $h, $body);
    }
}

sub http_request {
    my ($port, $req, $timeout) = @_;
    my @r = parallel_requests($port, [$req], 1, $timeout);
    return @{ $r[0] };
}

# Sends all requests to 127.0.0.1:$port, at most $concurrency in flight at a
# time (default: all at once). Connections of a wave are all opened first,
# then every request is written, then responses are read in parallel, so the
# server really sees them concurrently. Returns a list (same order as
# @$requests) of [status, \%headers, body]; status 0 = no/incomplete answer.
sub parallel_requests {
    my ($port, $requests, $concurrency, $timeout) = @_;
    $concurrency ||= scalar @$requests;
    $timeout ||= 30;
    my @results;
    my @queue = (0 .. $#$requests);
    my %conn;   # fileno => {sock, idx, buf}
    my $sel = IO::Select->new;
    my $deadline = time + $timeout;

    my $launch = sub {
        my @wave;
        while (@queue && keys(%conn) + @wave < $concurrency) {
            my $i = shift @queue;
            my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
                                             Proto => 'tcp', Timeout => 5);
            if (!$sock) {
                $results[$i] = [0, {}, "connect failed: $!"];
                next;
            }
            push @wave, [$sock, $i];
        }
        # write after all of the wave are connected
        for my $w (@wave) {
            my ($sock, $i) = @$w;
            my $data = _build_request($requests->[$i]);
            my $off = 0;
            while ($off < length $data) {
                my $n = syswrite($sock, $data, length($data) - $off, $off);
                last unless defined $n;
                $off += $n;
            }
            $sock->blocking(0);
            $conn{ fileno $sock } = { sock => $sock, idx => $i, buf => '' };
            $sel->add($sock);
        }
    };

    $launch->();
    while (keys %conn) {
        my $left = $deadline - time;
        last if $left <= 0;
        for my $s ($sel->can_read($left)) {
            my $c = $conn{ fileno $s };
            my $n = sysread($s, my $buf, 65536);
            next if !defined $n && ($!{EAGAIN} || $!{EINTR});
            if ($n) {
                $c->{buf} .= $buf;
                next;
            }
            $results[ $c->{idx} ] = [_parse_response($c->{buf})];
            $sel->remove($s);
            delete $conn{ fileno $s };
            close $s;
        }
        $launch->() if @queue;
    }
    for my $c (values %conn) {   # timed out
        $results[ $c->{idx} ] = [_parse_response($c->{buf})];
        $results[ $c->{idx} ][0] = 0 unless length $c->{buf};
        close $c->{sock};
    }
    my @answers = map { $_ // [0, {}, ''] } @results[0 .. $#$requests];
    _check_answers($requests, \@answers);
    return @answers;
}

# ---------------------------------------------------------------- ports

sub free_port {
    my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
                                  Proto => 'tcp', Listen => 1, ReuseAddr => 1)
        or die "free_port: $!";
    my $p = $s->sockport;
    close $s;
    return $p;
}

sub wait_port {
    my ($port, $timeout) = @_;
    my $end = time + ($timeout // 10);
    while (time < $end) {
        my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
                                      Proto => 'tcp', Timeout => 1);
        if ($s) { close $s; return 1 }
        sleep 0.05;
    }
    return 0;
}

# ---------------------------------------------------------------- extra nginx

my %Instances;   # name => prefix

sub nginx_prefix {
    my ($name) = @_;
    croak "bad instance name '$name'" unless $name =~ /^[A-Za-z0-9_-]+$/;
    return File::Spec->rel2abs("t/servroot_$name");
}

sub _expand_env {
    my ($text) = @_;
    $text =~ s{\$(TEST_NGINX_[A-Z0-9_]+)}{
        defined $ENV{$1} ? $ENV{$1} : croak "environment $1 is not defined"
    }ge;
    return $text;
}

sub _alive {
    my $pid = shift;
    return 0 unless $pid && kill 0, $pid;
    waitpid($pid, WNOHANG);   # reap if it is our child
    return 0 unless kill 0, $pid;
    if (open my $fh, '<', "/proc/$pid/stat") {
        my $st = <$fh> // '';
        return 0 if $st =~ /^\d+ \(.*\) Z/s;
    }
    return 1;
}

sub _pid_of {
    my ($prefix) = @_;
    open my $fh, '<', "$prefix/logs/nginx.pid" or return undef;
    my $pid = <$fh>;
    return undef unless defined $pid;
    $pid =~ s/\s+//g;
    return $pid =~ /^\d+$/ ? $pid : undef;
}

# start_nginx($name, $conf, %opts)
#   $conf: either http-level directives (server { ... } blocks etc.), which
#   are wrapped in a standard http {} block, or a complete nginx.conf (it
#   contains "http {"). Missing top-level essentials are added: daemon on,
#   master_process on, worker_processes 2, pid logs/nginx.pid,
#   error_log logs/error.log debug, events {}, and `user root` when root.
#   Every module of $TEST_NGINX_LOAD_MODULES (space-separated paths) is
#   loaded first, as Test::Nginx does for its blocks: never load_module here.
#   %opts: main_config => text added at top level,
#          env => [names for `env` directives], workers => N,
#          wait_ports => [ports] (default: every `listen N` / `listen a:N`).
#   $TEST_NGINX_* variables are expanded from %ENV.
#   Returns the prefix directory (t/servroot_<name>). Dies on failure.
sub start_nginx {
    my ($name, $conf, %opts) = @_;
    my $prefix = nginx_prefix($name);
    stop_nginx($name) if -e "$prefix/logs/nginx.pid";
    remove_tree("$prefix/conf", "$prefix/logs", glob("$prefix/*_temp"));
    make_path("$prefix/conf", "$prefix/logs", "$prefix/html");

    $conf = _expand_env($conf);
    my $main = _expand_env($opts{main_config} // '');
    my $workers = $opts{workers} // 2;
    if ($conf !~ /^\s*http\s*\{/m) {
        $conf = "http {\n    access_log logs/access.log;\n    default_type text/plain;\n"
              . "    keepalive_timeout 68;\n$conf\n}\n";
    }
    if (batch_config() ne '' && $conf !~ /\bbilling_batch\b/) {
        my $line = batch_config();
        $conf =~ s/^(\s*http\s*\{[^\n]*\n)/$1    $line\n/m;
    }
    my $top = '';
    my %has = map { $_ => (($conf =~ /^\s*\Q$_\E\b/m || $main =~ /^\s*\Q$_\E\b/m) ? 1 : 0) }
              qw(daemon master_process worker_processes pid error_log user events);
    $top .= "daemon on;\n" unless $has{daemon};
    $top .= "master_process on;\n" unless $has{master_process};
    $top .= "worker_processes $workers;\n" unless $has{worker_processes};
    $top .= "pid logs/nginx.pid;\n" unless $has{pid};
    $top .= "error_log logs/error.log debug;\n" unless $has{error_log};
    $top .= "user root;\n" if !$has{user} && $> == 0;
    $top .= "env $_;\n" for @{ $opts{env} || [] };
    $top = join('', map { "load_module $_;\n" } split ' ', $ENV{TEST_NGINX_LOAD_MODULES} // '')
         . $top;
    my $events = $has{events} ? '' : "events {\n    worker_connections 1024;\n}\n";

    my $file = "$prefix/conf/nginx.conf";
    open my $out, '>', $file or die "cannot write $file: $!";
    print $out "$top$main\n$events$conf";
    close $out;

    my $bin = $ENV{TEST_NGINX_BINARY} || 'nginx';
    my $errf = "$prefix/logs/start.stderr";
    system("$bin -p $prefix/ -c $file >/dev/null 2>$errf");
    if ($? != 0) {
        my $err = do { local $/; open my $e, '<', $errf; <$e> } // '';
        die "start_nginx($name): nginx failed to start: $err";
    }
    my $pid;
    for (1 .. 250) {
        last if $pid = _pid_of($prefix);
        sleep 0.02;
    }
    die "start_nginx($name): no pid file in $prefix/logs" unless $pid;
    $Instances{$name} = $prefix;

    my @ports = $opts{wait_ports} ? @{ $opts{wait_ports} }
              : ($conf =~ /^\s*listen\s+(?:[\d.]+:)?(\d+)\b/mg);
    for my $p (@ports) {
        wait_port($p, 10) or die "start_nginx($name): port $p not listening";
    }
    return $prefix;
}

# pids of the instance: (master, workers/helpers...)
sub nginx_pids {
    my ($name) = @_;
    my $pid = _pid_of(nginx_prefix($name)) or return ();
    my @kids;
    for my $stat (glob '/proc/[0-9]*/stat') {
        open my $fh, '<', $stat or next;
        my $l = <$fh> // next;
        my ($p, $state, $ppid) = $l =~ /^(\d+) \(.*\) (\S) (\d+)/s or next;
        push @kids, $p if $ppid == $pid && $state ne 'Z';
    }
    return ($pid, sort { $a <=> $b } @kids);
}

# stop_nginx($name [, $signal]) -- QUIT (graceful, default), TERM, or KILL
# (KILL is sent to the master and all its children: a crash).
sub stop_nginx {
    my ($name, $signal) = @_;
    $signal //= 'QUIT';
    my $prefix = nginx_prefix($name);
    my @pids = nginx_pids($name);
    delete $Instances{$name};
    return unless @pids;
    my $master = $pids[0];
    if ($signal eq 'KILL') {
        kill 'KILL', @pids;
    } else {
        kill $signal, $master;
    }
    my $end = time + 15;
    while (time < $end && grep { _alive($_) } @pids) {
        sleep 0.02;
    }
    if (my @left = grep { _alive($_) } @pids) {
        warn "stop_nginx($name): forcing SIGKILL on @left\n";
        kill 'KILL', @left;
        sleep 0.1;
        _alive($_) for @left;
    }
    unlink "$prefix/logs/nginx.pid";
}

END {
    if ($$ == $MainPid) {
        local $?;
        for my $name (keys %Instances) {
            eval { stop_nginx($name) };
        }
        for my $db (@ScratchDbs) {
            eval { psql_admin(qq{DROP DATABASE IF EXISTS "$db" WITH (FORCE)}) };
        }
    }
}

1;

# ================================================================ appended:
# helpers for 050-concurrency, 060-chaos and 070-model-check (the subs above
# are unchanged).
#
#   unique_id($prefix)            -> "$prefix-<time>-<pid>-<n>", unique per run
#   billing_http_conf(port => P, pool => 'min=2 max=10', webhook => 0|1,
#                     timeouts => 'connect=2s query=8s', extra => '')
#                                 -> http-level config with the usage, user
#                                    and admin write endpoints
#   start_billing_nginx($name, %opts) -> ($prefix, $webhook_enabled): as
#       start_nginx with billing_http_conf(%opts); with webhook => 1 it
#       falls back to a config without `billing webhook;` when this build
#       does not know the endpoint or the secret directive yet
#   wait_http_status($port, $path, $want, $timeout) -> 1 when seen in time
#   json_decode($text)            -> ref, or undef when not JSON
#   reconcile_req($svc, \%body), hold_req($svc, \%body),
#   hold_release_req($svc, $id), user_get($token, $path) -> request hashrefs
#   webhook_req($secret, $payload) -> signed POST /webhooks/stripe request
#   http_webhook_works($port, $secret) -> 1 when a signed ignorable event is
#                                    answered 200 {"received":true}
#   stripe_event_sql($payload)    -> meta of billing.api_stripe_event()
#   purchase_insert($user, $micros [, $cents]) -> id of a pending purchase
#   fund_purchase($user, $micros) -> purchase id, credited like fund_user
#   payment_event(%o)             -> Stripe event JSON text (type, id,
#                                    purchase, pi, session) for the 3 paying types
#   refund_event(%o)              -> charge.refunded JSON (id, pi, amount, refunded)
#   dispute_event(%o)             -> charge.dispute.created / .closed JSON (id,
#                                    type, dispute, pi, amount, status)
#   parallel_requests_multi(\@reqs, $concurrency, $timeout): like
#       parallel_requests, but every request names its own `port`
#   parse_metrics($text)          -> { 'name{labels}' => value }
#   promtool_check($text)         -> () without promtool, else ($ok, $output)
#   instance_pg_ports($name)      -> local ports of the TCP connections the
#                                    instance's processes hold to PostgreSQL
#   pg_port()                     -> the database port (from the URL)

push @EXPORT, qw(
    unique_id billing_http_conf start_billing_nginx wait_http_status json_decode
    reconcile_req hold_req hold_release_req user_get
    webhook_req http_webhook_works stripe_event_sql purchase_insert fund_purchase
    payment_event refund_event dispute_event
    parallel_requests_multi parse_metrics promtool_check instance_pg_ports pg_port
);

my $UniqueN = 0;
sub unique_id {
    my ($prefix) = @_;
    $UniqueN++;
    return sprintf '%s-%d-%d-%d-%s', $prefix // 'id', int(time), $$, $UniqueN, _rand_hex(3);
}

sub billing_http_conf {
    my %o = @_;
    my $port = $o{port} or croak 'billing_http_conf: port';
    my $pool = $o{pool} // 'min=2 max=10';
    my $timeouts = $o{timeouts} // 'connect=2s query=8s';
    my $wh_main = $o{webhook} ? "    billing_stripe_webhook_secret whsec_test;\n" : '';
    my $wh_loc = $o{webhook}
        ? "        location = /webhooks/stripe { client_max_body_size 1m; billing webhook; }\n" : '';
    my $extra = $o{extra} // '';
    return <<"CONF";
    billing_database_url $ENV{TEST_NGINX_DATABASE_URL};
    billing_pool $pool;
    billing_db_timeouts $timeouts;
    billing_jwt_key file:$ENV{TEST_NGINX_JWT_PUBLIC_KEY_FILE};
    billing_jwt_issuer $ISS;
    billing_jwt_audience $AUD;
$wh_main$extra
    server {
        listen 127.0.0.1:$port;
        location = /health { billing health; }
        location = /readyz { billing readyz; }
        location = /metrics { billing metrics; }
        location = /api/balance { billing balance; }
        location = /api/ledger { billing ledger; }
        location = /api/usage/reconcile { billing reconcile; }
        location /api/usage/holds { billing holds; }
        location = /api/admin/adjustments { billing admin_adjustments; }
        location /api/admin/usage { billing admin_usage; }
$wh_loc    }
CONF
}

sub start_billing_nginx {
    my ($name, %o) = @_;
    my %start = (workers => $o{workers} // 2);
    my $want_wh = $o{webhook};
    my $prefix = eval { start_nginx($name, billing_http_conf(%o), %start) };
    if (!$prefix && $want_wh
        && $@ =~ /unknown billing endpoint|unknown directive "billing_stripe_webhook/) {
        $prefix = start_nginx($name, billing_http_conf(%o, webhook => 0), %start);
        return ($prefix, 0);
    }
    die $@ unless $prefix;
    return ($prefix, $want_wh ? 1 : 0);
}

sub wait_http_status {
    my ($port, $path, $want, $timeout) = @_;
    my $end = time + ($timeout // 10);
    while (time < $end) {
        my ($s) = http_request($port, { method => 'GET', path => $path }, 5);
        return 1 if $s == $want;
        sleep 0.1;
    }
    return 0;
}

sub json_decode {
    my ($t) = @_;
    return undef unless defined $t && length $t;
    my $r = eval { JSON::PP->new->decode($t) };
    return $r;
}

my $JsonC = JSON::PP->new->canonical;

sub reconcile_req {
    my ($svc, $body) = @_;
    return { method => 'POST', path => '/api/usage/reconcile',
             headers => [Authorization => "Bearer $svc", 'Content-Type' => 'application/json'],
             body => ref $body ? $JsonC->encode($body) : $body };
}

sub hold_req {
    my ($svc, $body) = @_;
    return { method => 'POST', path => '/api/usage/holds',
             headers => [Authorization => "Bearer $svc", 'Content-Type' => 'application/json'],
             body => ref $body ? $JsonC->encode($body) : $body };
}

sub hold_release_req {
    my ($svc, $id) = @_;
    return { method => 'DELETE', path => "/api/usage/holds/$id",
             headers => [Authorization => "Bearer $svc"] };
}

sub user_get {
    my ($tok, $path) = @_;
    return { method => 'GET', path => $path, headers => [Authorization => "Bearer $tok"] };
}

sub webhook_req {
    my ($secret, $payload) = @_;
    return { method => 'POST', path => '/webhooks/stripe',
             headers => ['Content-Type' => 'application/json',
                         'Stripe-Signature' => stripe_signature($secret, $payload)],
             body => $payload };
}

sub http_webhook_works {
    my ($port, $secret) = @_;
    my $payload = $JsonC->encode({ id => unique_id('evt_probe'), object => 'event',
                                   type => 'billing.test.probe',
                                   data => { object => { id => 'x', object => 'probe' } } });
    my ($s, $h, $b) = http_request($port, webhook_req($secret, $payload), 10);
    return ($s == 200 && $b =~ /"received"\s*:\s*true/) ? 1 : 0;
}

sub stripe_event_sql {
    my ($payload) = @_;
    my $out = psql_admin('SELECT (billing.api_stripe_event(' . sql_quote($payload) . '::jsonb)).meta');
    chomp $out;
    return $out;
}

sub purchase_insert {
    my ($user, $micros, $cents) = @_;
    $cents //= 5000;
    my $id = psql_admin('INSERT INTO billing.purchases (user_id, package_code, amount_cents, credits_micros) '
                        . 'VALUES (' . sql_quote($user) . ", 'pro', $cents, $micros) RETURNING id");
    ($id) = $id =~ /([0-9a-f-]{36})/ or croak "purchase_insert($user): $id";
    return $id;
}

sub payment_event {
    my %o = @_;
    my $pid = $o{purchase} or croak 'payment_event: purchase';
    my $pi = $o{pi} // "pi_$pid";
    my $type = $o{type} // 'payment_intent.succeeded';
    my $obj;
    if ($type eq 'payment_intent.succeeded') {
        $obj = { id => $pi, object => 'payment_intent', status => 'succeeded',
                 metadata => { purchase_id => $pid } };
    } else {
        $obj = { id => $o{session} // "cs_$pid", object => 'checkout.session',
                 payment_status => 'paid', payment_intent => $pi,
                 client_reference_id => $pid, metadata => { purchase_id => $pid } };
    }
    return $JsonC->encode({ id => $o{id} // unique_id('evt'), object => 'event', type => $type,
                            data => { object => $obj } });
}

sub refund_event {
    my %o = @_;
    return $JsonC->encode({ id => $o{id} // unique_id('evt_ref'), object => 'event',
                            type => 'charge.refunded',
                            data => { object => { id => $o{charge} // unique_id('ch'),
                                                  object => 'charge', payment_intent => $o{pi},
                                                  amount => $o{amount} + 0,
                                                  amount_refunded => $o{refunded} + 0 } } });
}

sub dispute_event {
    my %o = @_;
    return $JsonC->encode({ id => $o{id} // unique_id('evt_dp'), object => 'event',
                            type => $o{type} // 'charge.dispute.created',
                            data => { object => { id => $o{dispute}, object => 'dispute',
                                                  amount => $o{amount} + 0, charge => "ch_$o{pi}",
                                                  payment_intent => $o{pi}, currency => 'usd',
                                                  status => $o{status} // 'needs_response' } } });
}

sub fund_purchase {
    my ($user, $micros) = @_;
    my $pid = purchase_insert($user, $micros);
    my $meta = stripe_event_sql(payment_event(purchase => $pid, pi => "pi_fund_$pid",
                                              id => "evt_fund_$pid"));
    croak "fund_purchase($user): $meta" unless $meta eq 'processed';
    return $pid;
}

sub parallel_requests_multi {
    my ($requests, $concurrency, $timeout) = @_;
    $concurrency ||= scalar @$requests;
    $timeout ||= 30;
    my @results;
    my @queue = (0 .. $#$requests);
    my %conn;
    my $sel = IO::Select->new;
    my $deadline = time + $timeout;
    my $launch = sub {
        my @wave;
        while (@queue && keys(%conn) + @wave < $concurrency) {
            my $i = shift @queue;
            my $port = $requests->[$i]{port} or croak "parallel_requests_multi: request $i has no port";
            my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
                                             Proto => 'tcp', Timeout => 5);
            if (!$sock) { $results[$i] = [0, {}, "connect failed: $!"]; next }
            push @wave, [$sock, $i];
        }
        for my $w (@wave) {
            my ($sock, $i) = @$w;
            my $data = _build_request($requests->[$i]);
            my $off = 0;
            while ($off < length $data) {
                my $n = syswrite($sock, $data, length($data) - $off, $off);
                last unless defined $n;
                $off += $n;
            }
            $sock->blocking(0);
            $conn{ fileno $sock } = { sock => $sock, idx => $i, buf => '' };
            $sel->add($sock);
        }
    };
    $launch->();
    while (keys %conn) {
        my $left = $deadline - time;
        last if $left <= 0;
        for my $s ($sel->can_read($left)) {
            my $c = $conn{ fileno $s };
            my $n = sysread($s, my $buf, 65536);
            next if !defined $n && ($!{EAGAIN} || $!{EINTR});
            if ($n) { $c->{buf} .= $buf; next }
            $results[ $c->{idx} ] = [_parse_response($c->{buf})];
            $sel->remove($s);
            delete $conn{ fileno $s };
            close $s;
        }
        $launch->() if @queue;
    }
    for my $c (values %conn) {
        $results[ $c->{idx} ] = [_parse_response($c->{buf})];
        $results[ $c->{idx} ][0] = 0 unless length $c->{buf};
        close $c->{sock};
    }
    my @answers = map { $_ // [0, {}, ''] } @results[0 .. $#$requests];
    _check_answers($requests, \@answers);
    return @answers;
}

sub parse_metrics {
    my ($text) = @_;
    my %m;
    for my $l (split /\n/, $text // '') {
        next if $l =~ /^\s*(#|$)/;
        my ($series, $v) = $l =~ /^(\S+(?:\{.*\})?)\s+(\S+)(?:\s+\d+)?\s*$/ or next;
        $m{$series} = $v;
    }
    return \%m;
}

sub promtool_check {
    my ($text) = @_;
    my $promtool;
    for my $d (split /:/, $ENV{PATH} // '/usr/bin:/bin') {
        if (-x "$d/promtool") { $promtool = "$d/promtool"; last }
    }
    return () unless $promtool;
    my ($fh, $file) = tempfile('billing-metrics-XXXXXX', TMPDIR => 1, UNLINK => 1);
    print $fh $text;
    close $fh;
    my $out = `$promtool check metrics < $file 2>&1`;
    my $ok = $? == 0 ? 1 : 0;
    unlink $file;
    return ($ok, $out);
}

sub pg_port {
    my ($p) = ($ENV{TEST_NGINX_DATABASE_URL} // '') =~ m{\@[^/:]*:(\d+)/};
    return $p // $ENV{BILLING_PG_PORT} // 5432;
}

sub instance_pg_ports {
    my ($name) = @_;
    my $pgp = pg_port();
    my %inodes;
    for my $pid (nginx_pids($name)) {
        opendir(my $d, "/proc/$pid/fd") or next;
        for my $fd (readdir $d) {
            my $l = readlink("/proc/$pid/fd/$fd") // next;
            $inodes{$1} = 1 if $l =~ /^socket:\[(\d+)\]$/;
        }
        closedir $d;
    }
    my @ports;
    for my $f ('/proc/net/tcp', '/proc/net/tcp6') {
        open my $fh, '<', $f or next;
        <$fh>;
        while (my $l = <$fh>) {
            my @c = split ' ', $l;
            my ($lport) = $c[1] =~ /:([0-9A-F]{4})$/i or next;
            my ($rport) = $c[2] =~ /:([0-9A-F]{4})$/i or next;
            next unless hex($rport) == $pgp && $c[3] eq '01' && $inodes{ $c[9] };
            push @ports, hex $lport;
        }
    }
    return sort { $a <=> $b } @ports;
}

1;

# ================================================================ appended:
# what several .t files set up alike.
#
#   block_http_config(pool => 'min=1 max=1') -> the http-level lines of a
#       block that talks to the test database and takes mint_token()'s
#       tokens: billing_database_url, [billing_pool,] billing_jwt_key,
#       _issuer, _audience
#   service_token(%claims)        -> the AI backend's token (sub ai-backend,
#                                    scope billing:usage), as mint_token
#   gpt4o_reconcile_req($svc, $user, $key, %fields) -> the reconcile the
#       files charge with: gpt-4o, 1000 in / 500 out = 7500 micros at the
#       seeded price; %fields override or add body fields
#   metrics_at($port)             -> parse_metrics() of GET /metrics, undef
#                                    unless it answered 200
#   wait_until($cond, $timeout)   -> 1 once $cond->() is true, polled until
#                                    $timeout seconds passed; else 0
#   uuid_v4()                     -> a random RFC 9562 version 4 UUID

push @EXPORT, qw(
    block_http_config service_token gpt4o_reconcile_req metrics_at wait_until uuid_v4
);

sub block_http_config {
    my %o = @_;
    my $pool = defined $o{pool} ? "    billing_pool $o{pool};\n" : '';
    return "\n    billing_database_url $ENV{TEST_NGINX_DATABASE_URL};\n$pool"
         . "    billing_jwt_key file:$ENV{TEST_NGINX_JWT_PUBLIC_KEY_FILE};\n"
         . "    billing_jwt_issuer $ISS;\n"
         . "    billing_jwt_audience $AUD;\n";
}

sub service_token {
    return mint_token(sub => 'ai-backend', scope => 'billing:usage', @_);
}

sub gpt4o_reconcile_req {
    my ($svc, $user, $key, %fields) = @_;
    return reconcile_req($svc, { userId => $user, model => 'gpt-4o', inputTokens => 1000,
                                 outputTokens => 500, idempotencyKey => $key, %fields });
}

sub metrics_at {
    my ($port) = @_;
    my ($s, undef, $b) = http_request($port, { method => 'GET', path => '/metrics' });
    return $s == 200 ? parse_metrics($b) : undef;
}

sub wait_until {
    my ($cond, $timeout) = @_;
    my $end = time + $timeout;
    while (time < $end) {
        return 1 if $cond->();
        sleep 0.05;
    }
    return $cond->() ? 1 : 0;
}

sub uuid_v4 {
    my @h = map { sprintf '%02x', int rand 256 } 1 .. 16;
    $h[6] = '4' . substr($h[6], 1);
    $h[8] = (qw(8 9 a b))[rand 4] . substr($h[8], 1);
    my $s = join '', @h;
    return join '-', substr($s, 0, 8), substr($s, 8, 4), substr($s, 12, 4),
                     substr($s, 16, 4), substr($s, 20);
}

1;
