# Chaos, bounded (issue "Proof" §4). Plain Test::More against running nginx
# instances; PostgreSQL is killed and restarted with t/pgserver.sh.
#
#  (a) PostgreSQL killed (-m immediate) in the middle of a load of reconciles
#      with unique keys, then restarted while the load goes on: every key
#      answered 2xx has exactly one entry; a failed key with an entry is an
#      ambiguous commit (answered database_outcome_unknown); retrying every failed key with the same
#      idempotency key yields a fresh 201 or a replay, and afterwards every
#      key has exactly one entry. The module recovers without reload and no
#      worker died.
#  (b) holds and reconciles racing for one user on two instances: statuses
#      are 201/402 only, available never negative, and every hold is
#      resolved exactly once when capture and release race for it.
#  (c) reload (HUP) and kill -9 of a worker during a load: /metrics still
#      answers, no counter went backwards, promtool accepts the scrape, no
#      leaked database connections.
#  (d) Stripe webhook storm: 5 purchases x 3 paying event types x 20
#      deliveries, shuffled and concurrent: each purchase credited once.
#  (e) DNS stall: an instance whose database host is looked up with a DNS
#      server of the test's own; under a load of reconciles its connections
#      are killed while the DNS stops answering, so every reconnect waits
#      for a lookup: every request is answered (201 or 503, none hangs),
#      /health keeps answering, and once the DNS answers again the pool
#      recovers without reload; every key ends with exactly one entry.
#  (g) dispute storm: 6 paid purchases, each disputed (two created events
#      of one dispute) and closed (won for three, lost for three), every
#      event delivered 12 times, shuffled and concurrent on two instances:
#      whatever the order, a won dispute leaves the credits whole (debited
#      and credited back once, or never debited when won came first) and a
#      lost one takes them exactly once.
#  (f) TLS-fallback connect: a second PostgreSQL with TLS on and pg_hba
#      accepting TCP only without it, killed (-m immediate) and restarted
#      under a load of reconciles: every reconnect goes through libpq's
#      sslmode=prefer fallback (a replaced socket); the pool recovers, every
#      key ends with exactly one entry.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Time::HiRes qw(time sleep);
use POSIX ();
use List::Util qw(shuffle sum0);
use JSON::PP ();
use File::Temp qw(tempdir);
use BillingTest;
use DnsStandIn;

my $pgdir = $ENV{BILLING_PG_DIR} or plan skip_all => 'BILLING_PG_DIR not set';
my $root = $ENV{BILLING_ROOT} // '.';
my $pgserver = "$root/t/pgserver.sh";

my $T0 = time;
my $RUN = unique_id('chaos');
my $TMP = tempdir('billing-chaos-XXXXXX', TMPDIR => 1, CLEANUP => 1);
my $TLS = tempdir('billing-chaos-tls-XXXXXX', TMPDIR => 1, CLEANUP => 1);   # (f)'s server
chmod 0755, $TLS;
my $MAIN = $$;
my @Children;
my $CHARGE = 7_500;
my %BODY = (model => 'gpt-4o', inputTokens => 1000, outputTokens => 500);

# whatever happens: no child left, PostgreSQL running again (this END runs
# before BillingTest's, which stops the nginx instances)
END {
    if ($$ == $MAIN) {
        local $?;
        for my $c (@Children) { kill 'KILL', $c; waitpid($c, 0) }
        system("$pgserver stop $TLS/pg >/dev/null 2>&1") if -d "$TLS/pg/data";
        if (system("$pgserver status $pgdir >/dev/null 2>&1") != 0) {
            system($pgserver, 'restart', $pgdir);
        }
    }
}
$SIG{ALRM} = sub { die "060-chaos: watchdog: the test took too long\n" };
alarm 150;

sub pg { my $cmd = shift; system($pgserver, $cmd, $pgdir) == 0 or die "pgserver $cmd failed" }

sub write_file { my ($f, $t) = @_; open my $fh, '>', "$f.tmp" or die $!; print $fh $t; close $fh; rename "$f.tmp", $f }
sub read_file { my ($f) = @_; open my $fh, '<', $f or return undef; local $/; <$fh> }
sub progress { my $v = read_file("$TMP/$_[0]"); defined $v && $v =~ /(\d+)/ ? $1 : 0 }

# runs $code in a child; its return value (a ref) comes back as JSON
sub fork_client {
    my ($name, $code) = @_;
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        $SIG{ALRM} = 'DEFAULT';
        alarm 140;
        my $r = eval { $code->() };
        $r = { error => "$@" } unless $r;
        write_file("$TMP/$name.json", JSON::PP->new->encode($r));
        POSIX::_exit(0);
    }
    push @Children, $pid;
    return $pid;
}

sub join_client {
    my ($name, $pid, $limit) = @_;
    my $end = time + $limit;
    while (time < $end) {
        if (waitpid($pid, POSIX::WNOHANG()) == $pid) {
            @Children = grep { $_ != $pid } @Children;
            my $t = read_file("$TMP/$name.json");
            my $r = $t ? JSON::PP->new->decode($t) : { error => 'no result' };
            die "client $name: $r->{error}" if $r->{error};
            return $r;
        }
        sleep 0.05;
    }
    die "client $name did not finish in $limit s";
}

my $port1 = free_port();
my $port2 = free_port();
my (undef, $wh1) = start_billing_nginx('chaos1', port => $port1, workers => 2, webhook => 1,
                                       timeouts => 'connect=2s query=5s');
my (undef, $wh2) = start_billing_nginx('chaos2', port => $port2, workers => 2, webhook => 1,
                                       timeouts => 'connect=2s query=5s');
ok(wait_http_status($port1, '/readyz', 200, 15), 'instance 1 ready');
ok(wait_http_status($port2, '/readyz', 200, 15), 'instance 2 ready');
my $svc = mint_token(sub => 'ai-backend', scope => 'billing:usage');

# ============================================================ (a) kill -9 PostgreSQL
{
    my $user = "$RUN-a";
    fund_user($user, 1_000_000_000);
    my @pids_before = nginx_pids('chaos1');

    # client: chunks of 32 unique keys at concurrency 16; keeps going until
    # the database has been killed and restarted (markers from the parent)
    # and then a few more chunks; at least 300 keys, at most 60 chunks
    my $client = fork_client('a', sub {
        my (%res, $chunks, $after_kill, $after_restart);
        $chunks = $after_kill = $after_restart = 0;
        while ($chunks < 60) {
            my @keys = map { sprintf 'a-%04d-%s', $chunks * 32 + $_, $RUN } 0 .. 31;
            my @r = parallel_requests($port1,
                [map { reconcile_req($svc, { userId => $user, %BODY, idempotencyKey => $_ }) } @keys], 16, 20);
            for my $i (0 .. $#keys) {
                my ($s, $h, $b) = @{ $r[$i] };
                my $j = json_decode($b) // {};
                $res{ $keys[$i] } = [$s + 0, ($h->{'idempotent-replayed'} // '') eq 'true' ? 1 : 0,
                                     $j->{code} // '', $j->{entryId} // ''];
            }
            $chunks++;
            $after_kill++ if -e "$TMP/killed";
            $after_restart++ if -e "$TMP/restarted";
            write_file("$TMP/a.progress", $chunks);
            last if $chunks * 32 >= 300 && $after_restart >= 3;
        }
        return { res => \%res, chunks => $chunks, after_kill => $after_kill };
    });

    ok(wait_until(sub { progress('a.progress') >= 3 }, 30), '(a) the load is running');
    pg('kill');
    write_file("$TMP/killed", 1);
    my $at_kill = progress('a.progress');
    wait_until(sub { progress('a.progress') >= $at_kill + 2 }, 30);
    pg('restart');
    write_file("$TMP/restarted", 1);
    my $r = join_client('a', $client, 60);
    my %res = %{ $r->{res} };
    note(sprintf '(a) %d keys in %d chunks; killed after chunk %d', scalar keys %res, $r->{chunks}, $at_kill);
    ok($r->{after_kill} >= 2, '(a) requests kept coming after the kill');

    ok(wait_http_status($port1, '/readyz', 200, 30), '(a) ready again within 30 s, without reload');
    ok(wait_http_status($port2, '/readyz', 200, 30), '(a) the other instance too');
    my @pids_after = nginx_pids('chaos1');
    is_deeply(\@pids_after, \@pids_before, '(a) same master and workers: no reload, no worker died');

    my %by;
    $by{ $_->[0] }++ for values %res;
    note('(a) first-pass statuses: ' . join ', ', map { "$_ x $by{$_}" } sort keys %by);
    my @bad = grep { my $s = $res{$_}[0]; !($s == 201 || $s == 0 || $s >= 500) } keys %res;
    is(scalar @bad, 0, '(a) every answer is 201, 5xx or no answer (no 4xx under a database crash)')
        or diag explain [map { "$_: @{ $res{$_} }" } @bad[0 .. ($#bad < 9 ? $#bad : 9)]];
    is(scalar(grep { $_->[1] } values %res), 0, '(a) no replays among unique keys');
    ok(($by{201} // 0) > 0 && scalar(grep { $_->[0] != 201 } values %res) > 0,
       '(a) the crash hit the load: some keys succeeded, some failed');

    my %count = map { split /\|/ } split /\n/,
        psql_admin('SELECT idempotency_key, count(*) FROM billing.ledger_entries WHERE user_id = '
                   . sql_quote($user) . " AND type = 'usage' GROUP BY 1");
    my @ok_keys = grep { $res{$_}[0] == 201 } keys %res;
    my @fail_keys = grep { $res{$_}[0] != 201 } keys %res;
    is(scalar(grep { ($count{$_} // 0) != 1 } @ok_keys), 0, '(a) every key answered 201 has exactly one entry');
    # A commit can reach the database just before the connection dies: no
    # server can tell the client which. The module must then say
    # "database_outcome_unknown" (or the client saw no answer at all);
    # every other failure must mean nothing was written (docs/spec.md §3.6).
    my @ambiguous = grep { $count{$_} } @fail_keys;
    my @lying = grep { $res{$_}[0] != 0 && $res{$_}[2] ne 'database_outcome_unknown' } @ambiguous;
    is(scalar @lying, 0, '(a) a failed key that committed was answered database_outcome_unknown (or not at all)')
        or diag('(a) committed but answered: ' . join(', ', map { "$_ => $res{$_}[0] $res{$_}[2]" } @lying));
    note('(a) ' . scalar(@ambiguous) . ' committed-but-unconfirmed keys, resolved by the retry below') if @ambiguous;
    is(scalar(grep { $_ > 1 } values %count), 0, '(a) no duplicates');

    # the client's answer to an ambiguous failure: retry with the same key
    my %retry;
    my @todo = @fail_keys;
    for my $pass (1 .. 6) {
        last unless @todo;
        my @r = parallel_requests($port1,
            [map { reconcile_req($svc, { userId => $user, %BODY, idempotencyKey => $_ }) } @todo], 16, 20);
        my @left;
        for my $i (0 .. $#todo) {
            my ($s, $h, $b) = @{ $r[$i] };
            if ($s == 201) {
                $retry{ $todo[$i] } = (($h->{'idempotent-replayed'} // '') eq 'true') ? 'replay' : 'fresh';
            } else {
                push @left, $todo[$i];
            }
        }
        note("(a) retry pass $pass: " . scalar(@todo) . ' keys, ' . scalar(@left) . ' still failing') if @left;
        @todo = @left;
        sleep 0.5 if @todo;
    }
    is(scalar @todo, 0, '(a) every failed key retried after recovery is answered 201')
        or diag("still failing: @todo[0 .. ($#todo < 5 ? $#todo : 5)]");
    is(scalar(grep { ($retry{$_} // '') ne 'replay' } @ambiguous), 0,
       '(a) retrying an ambiguous (committed) key is a replay');
    is(scalar(grep { ($retry{$_} // '') ne 'fresh' } grep { !$count{$_} } @fail_keys), 0,
       '(a) retrying a key that wrote nothing charges it now (fresh 201)');

    %count = map { split /\|/ } split /\n/,
        psql_admin('SELECT idempotency_key, count(*) FROM billing.ledger_entries WHERE user_id = '
                   . sql_quote($user) . " AND type = 'usage' GROUP BY 1");
    is(scalar(grep { ($count{$_} // 0) != 1 } keys %res), 0, '(a) after the retries every key has exactly one entry');
    is(scalar keys %count, scalar keys %res, '(a) and no entry under any other key');
    is(balance_of($user), 1_000_000_000 - $CHARGE * scalar(keys %res), '(a) balance = credit - one charge per key');
    my $log = read_file(nginx_prefix('chaos1') . '/logs/error.log') // '';
    unlike($log, qr/exited on signal/, '(a) no worker crashed');
    invariants_ok('(a) invariants hold after the database crash');
}

# ============================================================ (b) holds vs reconciles, two instances
{
    my $user = "$RUN-b";
    my $fund = 100_000;
    my $HOLD = 6_000;
    fund_user($user, $fund);
    my @ops = shuffle((map { ['hold', $_] } 1 .. 30), (map { ['rec', $_] } 1 .. 30));
    my @reqs = map {
        my ($kind, $i) = @{ $ops[$_] };
        my $req = $kind eq 'hold'
            ? hold_req($svc, { userId => $user, amountMicros => $HOLD, idempotencyKey => "bh-$i", ttlSeconds => 300 })
            : reconcile_req($svc, { userId => $user, %BODY, idempotencyKey => "br-$i" });
        +{ %$req, port => ($_ % 2 ? $port2 : $port1) };
    } 0 .. $#ops;
    my @res = parallel_requests_multi(\@reqs, 60, 30);
    my (%st, @holds, $R);
    $R = 0;
    for my $i (0 .. $#ops) {
        my ($s, undef, $b) = @{ $res[$i] };
        $st{"$ops[$i][0] $s"}++;
        next unless $s == 201;
        if ($ops[$i][0] eq 'hold') { push @holds, json_decode($b)->{holdId} } else { $R++ }
    }
    note('(b) phase 1: ' . join ', ', map { "$_ x $st{$_}" } sort keys %st);
    is(scalar(grep { !/ (201|402)$/ } keys %st), 0, '(b) holds and reconciles answer 201 or 402 only');
    my $H = @holds;
    ok($H * $HOLD + $R * $CHARGE <= $fund, "(b) holds ($H) and charges ($R) never exceed the credit");
    my $bal = json_decode((http_request($port2, user_get(mint_token(sub => $user), '/api/balance')))[2]) // {};
    is($bal->{balanceMicros}, $fund - $R * $CHARGE, '(b) balance = credit - charges');
    is($bal->{heldMicros}, $H * $HOLD, '(b) held = the holds granted');
    ok(($bal->{availableMicros} // -1) >= 0, '(b) available is not negative');
    # available only shrinks in this phase: a refusal means it was already too small
    ok(!$st{'hold 402'} || $bal->{availableMicros} < $HOLD, '(b) a refused hold: what is left is below a hold');
    ok(!$st{'rec 402'} || $bal->{availableMicros} < $CHARGE, '(b) a refused charge: what is left is below a charge');

    # phase 2: capture and release race for every hold, on different
    # instances, with more plain charges competing for the released money
    my $CAP = 750;   # gpt-4o-mini 1000/1000
    my @ops2 = shuffle(
        (map { ['cap', $_] } 0 .. $#holds), (map { ['rel', $_] } 0 .. $#holds),
        (map { ['rec', $_] } 1 .. 10));
    @reqs = map {
        my ($kind, $i) = @{ $ops2[$_] };
        my $req = $kind eq 'cap'
            ? reconcile_req($svc, { userId => $user, model => 'gpt-4o-mini', inputTokens => 1000,
                                    outputTokens => 1000, idempotencyKey => "bc-$i", holdId => $holds[$i] })
            : $kind eq 'rel' ? hold_release_req($svc, $holds[$i])
            : reconcile_req($svc, { userId => $user, %BODY, idempotencyKey => "br2-$i" });
        +{ %$req, port => ((($kind eq 'cap') xor ($i % 2)) ? $port1 : $port2) };
    } 0 .. $#ops2;
    @res = parallel_requests_multi(\@reqs, 80, 30);
    my (%win, %st2, $R2);
    $R2 = 0;
    for my $i (0 .. $#ops2) {
        my ($kind, $n) = @{ $ops2[$i] };
        my $s = $res[$i][0];
        $st2{"$kind $s"}++;
        if ($kind eq 'rec') { $R2++ if $s == 201; next }
        push @{ $win{$n} }, $kind if ($kind eq 'cap' && $s == 201) || ($kind eq 'rel' && $s == 200);
    }
    note('(b) phase 2: ' . join ', ', map { "$_ x $st2{$_}" } sort keys %st2);
    is(scalar(grep { !/^(cap (201|409)|rel (200|409)|rec (201|402))$/ } keys %st2), 0,
       '(b) capture 201/409, release 200/409, charge 201/402 only');
    is(scalar(grep { @{ $win{$_} || [] } != 1 } 0 .. $#holds), 0, '(b) every hold resolved exactly once');
    my $C = grep { $win{$_} && $win{$_}[0] eq 'cap' } 0 .. $#holds;
    my %dbst = map { split /\|/ } split /\n/, psql_admin(
        'SELECT id, status FROM billing.holds WHERE user_id = ' . sql_quote($user));
    is(scalar(grep { ($dbst{ $holds[$_] } // '') ne ($win{$_} && $win{$_}[0] eq 'cap' ? 'captured' : 'released') }
              0 .. $#holds), 0, '(b) the database agrees with the winner of every race');
    is(balance_of($user), $fund - ($R + $R2) * $CHARGE - $C * $CAP, "(b) balance exact ($C captures, $R2 late charges)");
    is(psql_admin('SELECT min(balance_after_micros) >= 0 FROM billing.ledger_entries WHERE user_id = ' . sql_quote($user)),
       't', '(b) the balance never went below zero');
    is(psql_admin('SELECT coalesce(min(available_after_micros), 0) >= 0 FROM billing.holds WHERE user_id = '
                  . sql_quote($user)), 't', '(b) no hold took available below zero');
    invariants_ok('(b) invariants hold after the hold races');
}

# ============================================================ (c) reload and kill -9 of a worker
{
    my $user = "$RUN-c";
    fund_user($user, 1_000_000_000);
    my $tok = mint_token(sub => $user);
    my (undef, undef, $m0) = http_request($port1, { method => 'GET', path => '/metrics' });
    my $before = parse_metrics($m0);
    my @gen0 = nginx_pids('chaos1');
    my $master = $gen0[0];

    # the load: balance reads and reconciles with unique keys, 8 in flight
    my $client = fork_client('c', sub {
        my (%st, %rec, $chunks);
        $chunks = 0;
        while ($chunks < 400 && !-e "$TMP/c.stop") {
            my @keys = map { sprintf 'c-%04d-%d', $chunks, $_ } 1 .. 8;
            my @reqs = map { (user_get($tok, '/api/balance'),
                              reconcile_req($svc, { userId => $user, %BODY, idempotencyKey => $_ })) } @keys;
            my @r = parallel_requests($port1, \@reqs, 8, 10);
            for my $i (0 .. $#r) {
                if ($i % 2) { $rec{ $keys[($i - 1) / 2] } = $r[$i][0] + 0; $st{"reconcile $r[$i][0]"}++ }
                else { $st{"balance $r[$i][0]"}++ }
            }
            write_file("$TMP/c.progress", ++$chunks);
        }
        return { st => \%st, rec => \%rec, chunks => $chunks };
    });
    ok(wait_until(sub { progress('c.progress') >= 2 }, 20), '(c) the load is running');

    kill 'HUP', $master;
    my %old = map { $_ => 1 } @gen0[1 .. $#gen0];
    ok(wait_until(sub { my @p = nginx_pids('chaos1'); @p == 3 && !grep { $old{$_} } @p[1 .. 2] }, 20),
       '(c) reload: a new generation of workers replaced the old one');
    my $p = progress('c.progress');
    wait_until(sub { progress('c.progress') >= $p + 2 }, 20);

    my @gen1 = nginx_pids('chaos1');
    my $victim = $gen1[1];
    kill 'KILL', $victim;
    ok(wait_until(sub { my @q = nginx_pids('chaos1'); @q == 3 && !grep { $_ == $victim } @q }, 20),
       '(c) the master replaced the killed worker');
    $p = progress('c.progress');
    wait_until(sub { progress('c.progress') >= $p + 2 }, 20);
    write_file("$TMP/c.stop", 1);
    my $r = join_client('c', $client, 30);
    note('(c) load statuses: ' . join ', ', map { "$_ x $r->{st}{$_}" } sort keys %{ $r->{st} });
    is(scalar(grep { !/^(balance (200|0)|reconcile (201|0))$/ } keys %{ $r->{st} }), 0,
       '(c) answers are 200/201, or none for requests on the killed worker');
    # a reconcile cut off by the crash may or may not have committed: the
    # retry with its key settles it, and every key ends with one entry
    my @cut = grep { $r->{rec}{$_} != 201 } sort keys %{ $r->{rec} };
    my @again = parallel_requests($port1,
        [map { reconcile_req($svc, { userId => $user, %BODY, idempotencyKey => $_ }) } @cut], 8, 20);
    is(scalar(grep { $_->[0] != 201 } @again), 0, '(c) ' . scalar(@cut) . ' cut-off reconciles retried: 201 (fresh or replay)');
    note(sprintf '(c) retries of cut-off reconciles: %d replayed (had committed), %d fresh',
         scalar(grep { ($_->[1]{'idempotent-replayed'} // '') eq 'true' } @again),
         scalar(grep { ($_->[1]{'idempotent-replayed'} // '') ne 'true' } @again));
    my %cnt = map { split /\|/ } split /\n/,
        psql_admin('SELECT idempotency_key, count(*) FROM billing.ledger_entries WHERE user_id = '
                   . sql_quote($user) . " AND type = 'usage' GROUP BY 1");
    is(scalar(grep { ($cnt{$_} // 0) != 1 } keys %{ $r->{rec} }), 0, '(c) every reconcile key has exactly one entry');
    is(scalar keys %cnt, scalar keys %{ $r->{rec} }, '(c) and no other usage entries');
    my @now = nginx_pids('chaos1');
    is($now[0], $master, '(c) the same master throughout');

    ok(wait_http_status($port1, '/readyz', 200, 15), '(c) ready after the reload and the crash');
    my ($s, undef, $m1) = http_request($port1, { method => 'GET', path => '/metrics' });
    is($s, 200, '(c) /metrics answers');
    my $after = parse_metrics($m1);
    my @back = grep { /^billing_\w+(_total|_count|_sum|_bucket)(\{|$)/
                      && (!defined $after->{$_} || $after->{$_} < $before->{$_}) } keys %$before;
    is(scalar @back, 0, '(c) no counter went backwards or vanished')
        or diag explain [map { "$_: $before->{$_} -> " . ($after->{$_} // 'missing') } @back];
    for my $c (['balance', 200], ['reconcile', 201]) {
        my ($ep, $code) = @$c;
        my $series = (grep { /^billing_http_requests_total\{/ && /endpoint="$ep"/ && /status="$code"/ } keys %$after)[0];
        ok($series, "(c) billing_http_requests_total{endpoint=\"$ep\",status=\"$code\"} is exported");
        my $delta = ($after->{ $series // '' } // 0) - ($before->{ $series // '' } // 0);
        my $seen = $r->{st}{"$ep $code"} // 0;
        $seen += scalar @cut if $ep eq 'reconcile';   # the retries
        # at most the requests in flight on the killed worker (8) may have
        # been answered and not counted
        ok($delta >= $seen - 8, "(c) $ep $code counter grew with the answers seen ($delta for $seen)");
    }
    my @bad = grep { !/^billing_\S+ \S+$/ && !/^billing_\S+\{[^{}]*\} \S+$/ && !/^# (HELP|TYPE) billing_/ }
              split /\n/, $m1;
    is(scalar @bad, 0, '(c) every line of the scrape is a billing sample or HELP/TYPE')
        or diag explain [@bad[0 .. ($#bad < 5 ? $#bad : 5)]];
    if (my ($pok, $pout) = promtool_check($m1)) {
        ok($pok, '(c) promtool check metrics passes') or diag $pout;
    } else {
        diag('(c) promtool not installed: format check skipped');
    }

    # no leaked connections: each instance holds at most workers x max
    # (2 x 10), and no ngx_billing backend is left without a live client
    my %held;
    my $orphans = sub {
        %held = ();
        for my $fd (glob '/proc/[0-9]*/fd/*') {
            my $l = readlink($fd) // next;
            $held{$1} = 1 if $l =~ /^socket:\[(\d+)\]$/;
        }
        my %live_ports;
        for my $f ('/proc/net/tcp', '/proc/net/tcp6') {
            open my $fh, '<', $f or next;
            <$fh>;
            while (my $l = <$fh>) {
                my @c = split ' ', $l;
                my ($lp) = $c[1] =~ /:([0-9A-F]{4})$/i or next;
                my ($rp) = $c[2] =~ /:([0-9A-F]{4})$/i or next;
                $live_ports{ hex $lp } = 1 if hex($rp) == pg_port() && $held{ $c[9] };
            }
        }
        my @ports = split /\n/, psql_admin(
            "SELECT client_port FROM pg_stat_activity WHERE application_name = 'ngx_billing' AND client_port > 0");
        return grep { !$live_ports{$_} } @ports;
    };
    if ($> == 0) {   # needs to see every process's sockets
        ok(wait_until(sub { !$orphans->() }, 15), '(c) no database session left behind by a dead worker')
            or diag('orphan backends on client ports: ' . join ' ', $orphans->());
    } else {
        diag('(c) not root: orphan-session check skipped');
    }
    for my $name ('chaos1', 'chaos2') {
        my @ports = instance_pg_ports($name);
        ok(@ports <= 2 * 10, "(c) $name holds " . scalar(@ports) . ' database connections (<= 2 workers x max 10)');
        if (@ports) {
            my $n = psql_admin("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'ngx_billing' "
                               . 'AND client_port IN (' . join(',', @ports) . ')');
            ok($n <= 2 * 10, "(c) $name: $n ngx_billing sessions in pg_stat_activity");
        }
    }
    invariants_ok('(c) invariants hold after reload and crash');
}

# ============================================================ (d) Stripe webhook storm
{
    my $via_http = $wh1 && $wh2 && !$ENV{BILLING_CHAOS_WEBHOOK_SQL}
                   && http_webhook_works($port1, 'whsec_test') && http_webhook_works($port2, 'whsec_test');
    note('(d) webhooks delivered ' . ($via_http ? 'over HTTP (billing webhook)' : 'through psql (billing webhook not available)'));
    my (@purchases, @payloads);
    for my $n (1 .. 5) {
        my $user = "$RUN-d$n";
        my $out = psql_admin('SELECT body FROM billing.api_purchase_create(' . sql_quote($user) . ", 'starter')");
        my $pid = (json_decode($out) // {})->{purchaseId} or die "purchase_create: $out";
        push @purchases, [$user, $pid];
        my $pi = "pi_storm_$n" . "_$RUN";
        for my $type ('checkout.session.completed', 'checkout.session.async_payment_succeeded',
                      'payment_intent.succeeded') {
            my $ev = payment_event(type => $type, purchase => $pid, pi => $pi, session => "cs_storm_$n" . "_$RUN",
                                   id => "evt_storm_${n}_${type}_$RUN");
            push @payloads, ($ev) x 20;
        }
    }
    @payloads = shuffle @payloads;
    my %st;
    if ($via_http) {
        my @res = parallel_requests_multi(
            [map { +{ %{ webhook_req('whsec_test', $payloads[$_]) }, port => ($_ % 2 ? $port2 : $port1) } } 0 .. $#payloads],
            64, 45);
        $st{ $_->[0] }++ for @res;
        is_deeply(\%st, { 200 => scalar @payloads }, '(d) every delivery answered 200') or diag explain \%st;
    } else {
        # 16 concurrent sessions, each a shuffled share of the deliveries
        my @kids;
        for my $k (0 .. 15) {
            my @mine = @payloads[grep { $_ % 16 == $k } 0 .. $#payloads];
            push @kids, fork_client("d$k", sub {
                my $sql = join '', map { 'SELECT (billing.api_stripe_event(' . sql_quote($_) . "::jsonb)).status;\n" } @mine;
                my $o = psql_admin($sql);
                my %s; $s{$_}++ for split /\n/, $o;
                return { st => \%s };
            });
        }
        for my $k (0 .. 15) {
            my $r = join_client("d$k", $kids[$k], 60);
            $st{$_} += $r->{st}{$_} for keys %{ $r->{st} };
        }
        is_deeply(\%st, { 200 => scalar @payloads }, '(d) every delivery answered 200') or diag explain \%st;
    }
    for my $p (@purchases) {
        my ($user, $pid) = @$p;
        is(balance_of($user), 5_000_000, "(d) $user credited exactly once (5,000,000)");
        is(psql_admin("SELECT count(*) FROM billing.ledger_entries WHERE purchase_id = '$pid'"), 1,
           "(d) one ledger entry for purchase $pid");
        is(psql_admin("SELECT status FROM billing.purchases WHERE id = '$pid'"), 'paid', '(d) purchase paid');
    }
    is(psql_admin("SELECT count(*) FROM billing.stripe_events WHERE id LIKE 'evt_storm_%' AND id LIKE '%_$RUN'"),
       15, '(d) fifteen distinct events recorded');
}

# ============================================================ (g) dispute storm
{
    my $via_http = $wh1 && $wh2 && !$ENV{BILLING_CHAOS_WEBHOOK_SQL}
                   && http_webhook_works($port1, 'whsec_test') && http_webhook_works($port2, 'whsec_test');
    my (@disputes, @payloads);
    for my $n (1 .. 6) {
        my $user = "$RUN-g$n";
        my $pid = purchase_insert($user, 5_000_000, 500);
        my $pi = "pi_gstorm_${n}_$RUN";
        my $m = stripe_event_sql(payment_event(purchase => $pid, pi => $pi, id => "evt_gpay_${n}_$RUN"));
        die "(g) payment: $m" unless $m eq 'processed';
        my $outcome = $n <= 3 ? 'won' : 'lost';
        push @disputes, [$user, $pid, $outcome];
        for my $ev (dispute_event(id => "evt_gstorm_${n}_a_$RUN", dispute => "dp_gstorm_${n}_$RUN", pi => $pi,
                                  amount => 500),
                    dispute_event(id => "evt_gstorm_${n}_b_$RUN", dispute => "dp_gstorm_${n}_$RUN", pi => $pi,
                                  amount => 500),
                    dispute_event(id => "evt_gstorm_${n}_c_$RUN", dispute => "dp_gstorm_${n}_$RUN", pi => $pi,
                                  amount => 500, type => 'charge.dispute.closed', status => $outcome)) {
            push @payloads, ($ev) x 12;
        }
    }
    @payloads = shuffle @payloads;
    my %st;
    if ($via_http) {
        my @res = parallel_requests_multi(
            [map { +{ %{ webhook_req('whsec_test', $payloads[$_]) }, port => ($_ % 2 ? $port2 : $port1) } } 0 .. $#payloads],
            64, 45);
        $st{ $_->[0] }++ for @res;
    } else {
        my @kids;
        for my $k (0 .. 7) {
            my @mine = @payloads[grep { $_ % 8 == $k } 0 .. $#payloads];
            push @kids, fork_client("g$k", sub {
                my $sql = join '', map { 'SELECT (billing.api_stripe_event(' . sql_quote($_) . "::jsonb)).status;\n" } @mine;
                my %s; $s{$_}++ for split /\n/, psql_admin($sql);
                return { st => \%s };
            });
        }
        for my $k (0 .. 7) {
            my $r = join_client("g$k", $kids[$k], 60);
            $st{$_} += $r->{st}{$_} for keys %{ $r->{st} };
        }
    }
    is_deeply(\%st, { 200 => scalar @payloads }, '(g) every dispute delivery answered 200') or diag explain \%st;
    for my $d (@disputes) {
        my ($user, $pid, $outcome) = @$d;
        my ($debits, $credits) = split /\|/, psql_admin(
            "SELECT count(*) FILTER (WHERE type = 'dispute') || '|' || count(*) FILTER (WHERE type = 'dispute_reversal') "
            . "FROM billing.ledger_entries WHERE purchase_id = '$pid'");
        if ($outcome eq 'won') {
            is(balance_of($user), 5_000_000, "(g) $user: won, the credits are whole");
            ok($debits == $credits && $debits <= 1, "(g) $user: debited and credited back as often ($debits, $credits), at most once");
        } else {
            is(balance_of($user), 0, "(g) $user: lost, the credits are gone");
            is("$debits $credits", '1 0', "(g) $user: debited exactly once");
        }
        is(psql_admin("SELECT status FROM billing.disputes WHERE purchase_id = '$pid'"), $outcome,
           "(g) $user: the dispute is $outcome");
    }
    is(psql_admin("SELECT count(*) FROM billing.stripe_events WHERE id LIKE 'evt_gstorm_%' AND id LIKE '%_$RUN'"),
       18, '(g) eighteen distinct events recorded');
    invariants_ok('(g) invariants hold after the dispute storm');
}

# a load of reconciles with unique keys on $port until $stop exists (or
# 2000 chunks of 8: far more than the phases need); a chunk with failures
# is followed by a pause, so that a refusing instance is not hammered
# into a few thousand keys to settle; returns { key => [status, code] }
sub reconcile_load {
    my ($name, $port, $user, $stop) = @_;
    return fork_client($name, sub {
        my (%res, $chunks);
        $chunks = 0;
        while ($chunks < 2000 && !-e $stop) {
            my @keys = map { sprintf '%s-%04d-%d-%s', $name, $chunks, $_, $RUN } 1 .. 8;
            my @r = parallel_requests($port,
                [map { reconcile_req($svc, { userId => $user, %BODY, idempotencyKey => $_ }) } @keys], 8, 20);
            for my $i (0 .. $#keys) {
                $res{ $keys[$i] } = [$r[$i][0] + 0, (json_decode($r[$i][2]) // {})->{code} // ''];
            }
            write_file("$TMP/$name.progress", ++$chunks);
            sleep 0.1 if grep { $_->[0] != 201 } @r;
        }
        return { res => \%res };
    });
}

# every key answered 201 has one entry; a failure that committed said so;
# after retries with the same keys every key has exactly one entry
sub settle_keys {
    my ($tag, $port, $user, $res) = @_;
    my %entries = map { split /\|/ } split /\n/,
        psql_admin('SELECT idempotency_key, count(*) FROM billing.ledger_entries WHERE user_id = '
                   . sql_quote($user) . " AND type = 'usage' GROUP BY 1");
    my @ok = grep { $res->{$_}[0] == 201 } keys %$res;
    is(scalar(grep { ($entries{$_} // 0) != 1 } @ok), 0, "($tag) every key answered 201 has exactly one entry");
    my @lying = grep { $res->{$_}[0] != 201 && $res->{$_}[0] != 0 && $entries{$_}
                       && $res->{$_}[1] ne 'database_outcome_unknown' } keys %$res;
    is(scalar @lying, 0, "($tag) a failed key that committed was answered database_outcome_unknown");
    my @todo = grep { $res->{$_}[0] != 201 } keys %$res;
    for my $pass (1 .. 6) {
        last unless @todo;
        my @r = parallel_requests($port,
            [map { reconcile_req($svc, { userId => $user, %BODY, idempotencyKey => $_ }) } @todo], 8, 20);
        @todo = @todo[grep { $r[$_][0] != 201 } 0 .. $#todo];
        sleep 0.5 if @todo;
    }
    is(scalar @todo, 0, "($tag) every failed key retried is answered 201");
    %entries = map { split /\|/ } split /\n/,
        psql_admin('SELECT idempotency_key, count(*) FROM billing.ledger_entries WHERE user_id = '
                   . sql_quote($user) . " AND type = 'usage' GROUP BY 1");
    is(scalar(grep { ($entries{$_} // 0) != 1 } keys %$res), 0, "($tag) every key has exactly one entry");
    is(scalar keys %entries, scalar keys %$res, "($tag) and no entry under another key");
}

# ============================================================ (e) DNS stall
{
    my $user = "$RUN-e";
    fund_user($user, 1_000_000_000);
    my $name = 'db.chaos.test';
    my $dns = DnsStandIn->start(names => { $name => '127.0.0.1' });
    (my $url = $ENV{TEST_NGINX_DATABASE_URL}) =~ s{\@127\.0\.0\.1:}{\@$name:};
    my $port3 = free_port();
    {
        local $ENV{TEST_NGINX_DATABASE_URL} = $url;
        start_billing_nginx('chaos3', port => $port3, workers => 2, pool => 'min=2 max=4',
                            timeouts => 'connect=1s query=5s',
                            extra => '    billing_database_resolver 127.0.0.1:' . $dns->port . ";\n");
    }
    ok(wait_http_status($port3, '/readyz', 200, 15), '(e) the instance that looks its host up is ready');

    my $client = reconcile_load('e', $port3, $user, "$TMP/e.stop");
    ok(wait_until(sub { progress('e.progress') >= 3 }, 20), '(e) the load is running');

    # the DNS stops answering, and every connection of the instance is lost
    $dns->control(delay => 'never');
    my @ports = instance_pg_ports('chaos3');
    psql_admin('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE client_port IN ('
               . join(',', @ports, 0) . ')');
    my ($health, $worst) = (0, 0);
    my $t = time;
    while (time - $t < 3) {
        my $t0 = time;
        my ($s) = http_request($port3, 'GET /health', 5);
        $health++ if $s == 200;
        $worst = time - $t0 if time - $t0 > $worst;
        sleep 0.1;
    }
    ok($health >= 20, "(e) /health answered 200 throughout the stall ($health times, slowest "
                      . sprintf('%.1f ms)', $worst * 1000));
    my $p = progress('e.progress');
    ok(wait_until(sub { progress('e.progress') >= $p + 2 }, 20), '(e) requests are answered during the stall');

    $dns->control(delay => 0);
    ok(wait_http_status($port3, '/readyz', 200, 30), '(e) ready again once the DNS answers, without reload');
    $p = progress('e.progress');
    wait_until(sub { progress('e.progress') >= $p + 2 }, 20);
    write_file("$TMP/e.stop", 1);
    my $r = join_client('e', $client, 60);
    my %by;
    $by{"$_->[0] $_->[1]"}++ for values %{ $r->{res} };
    note('(e) statuses: ' . join ', ', map { "$_ x $by{$_}" } sort keys %by);
    is(scalar(grep { !/^(201 |503 database_(unavailable|outcome_unknown)|504 database_\w+)$/ } keys %by), 0,
       '(e) every request was answered 201, or 503/504 naming the database');
    ok(($by{'201 '} // 0) > 0 && grep({ /^50/ } keys %by), '(e) the stall hit the load: some 201, some 503');
    settle_keys('e', $port3, $user, $r->{res});
    stop_nginx('chaos3');
    $dns->stop;
}

# ============================================================ (f) TLS-fallback connect
{
    my $dir = "$TLS/pg";
    system("$pgserver start $dir >/dev/null") == 0 or die 'pgserver start (tls) failed';
    my %env;
    {
        system("$pgserver tls-nossl $dir >/dev/null") == 0 or die 'pgserver tls-nossl failed';
        open my $fh, '<', "$dir/env" or die;
        while (<$fh>) { $env{$1} = $2 if /^export (\w+)=(.*)$/ }
    }
    local $ENV{BILLING_TEST_ADMIN_URL} = $env{BILLING_TEST_ADMIN_URL};
    {
        local $ENV{DATABASE_URL} = $env{TEST_NGINX_DATABASE_URL};
        system("$root/sql/migrate.sh --grant-runtime '$env{BILLING_TEST_ADMIN_URL}' >/dev/null") == 0
            or die 'migrations (tls) failed';
    }
    my $user = "$RUN-f";
    fund_user($user, 1_000_000_000);
    my $port4 = free_port();
    {
        local $ENV{TEST_NGINX_DATABASE_URL} = $env{TEST_NGINX_DATABASE_URL};
        start_billing_nginx('chaos4', port => $port4, workers => 2, pool => 'min=2 max=4',
                            timeouts => 'connect=2s query=5s');
    }
    ok(wait_http_status($port4, '/readyz', 200, 15), '(f) ready through the TLS fallback');

    my $client = reconcile_load('f', $port4, $user, "$TMP/f.stop");
    ok(wait_until(sub { progress('f.progress') >= 3 }, 20), '(f) the load is running');
    system($pgserver, 'kill', $dir) == 0 or die 'pgserver kill (tls) failed';
    my $p = progress('f.progress');
    wait_until(sub { progress('f.progress') >= $p + 2 }, 20);
    system($pgserver, 'restart', $dir) == 0 or die 'pgserver restart (tls) failed';
    ok(wait_http_status($port4, '/readyz', 200, 30), '(f) ready again after the restart, without reload');
    $p = progress('f.progress');
    wait_until(sub { progress('f.progress') >= $p + 3 }, 20);
    write_file("$TMP/f.stop", 1);
    my $r = join_client('f', $client, 60);
    my %by;
    $by{ $_->[0] }++ for values %{ $r->{res} };
    note('(f) statuses: ' . join ', ', map { "$_ x $by{$_}" } sort keys %by);
    my $log = read_file("$dir/postgres.log") // '';
    like($log, qr/no pg_hba\.conf entry for host "127\.0\.0\.1", user "billing_rt", database "billing", SSL encryption/,
         '(f) the connects went through the refused TLS attempt');
    settle_keys('f', $port4, $user, $r->{res});
    my $errors = read_file(nginx_prefix('chaos4') . '/logs/error.log') // '';
    ok($errors !~ /\[alert\]/, '(f) no alert (no epoll registration lost with a replaced socket)');
    stop_nginx('chaos4');
    invariants_ok('(f) invariants hold on the TLS server');
    system("$pgserver stop $dir >/dev/null 2>&1");
}

stop_nginx('chaos1');
stop_nginx('chaos2');
invariants_ok('invariants hold after the chaos');
diag(sprintf 'run time %.1f s', time - $T0);
done_testing();
