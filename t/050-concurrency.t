# Ledger API under concurrency (issue "Ledger API"): docs/spec.md §3 invariants 3 and
# 5 whatever the concurrency, the number of workers or the number of nginx
# instances sharing the database; and the ledger cursor walk.
#
#   1. 50 concurrent identical reconciles, five rounds with fresh keys:
#      one ledger entry per round, one fresh 201 and 49 replays, one entryId.
#   2. 100 concurrent distinct reconciles for a user funded for exactly 10:
#      10 x 201, 90 x 402, balance 0, 10 usage entries.
#   3. The same two checks with two nginx instances (2 workers each) on the
#      one database, requests alternating between them.
#   4. Cursor walk with limit=2 (with an entry added mid-walk): every entry
#      exactly once, newest first.
#
# Plain Test::More (several requests against running instances).
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Time::HiRes qw(time);
use BillingTest;

my $T0 = time;
$SIG{ALRM} = sub { die "050-concurrency: watchdog: the test took too long\n" };
alarm 85;
my $RUN = unique_id('conc');
my $CHARGE = 7_500;                   # gpt-4o, 1000 in / 500 out (docs/spec.md §2)
my %BODY = (model => 'gpt-4o', inputTokens => 1000, outputTokens => 500);

my $port1 = free_port();
my $port2 = free_port();
start_billing_nginx('conc1', port => $port1, workers => 2);
start_billing_nginx('conc2', port => $port2, workers => 2);
ok(wait_http_status($port1, '/readyz', 200, 15), 'instance 1 ready');
ok(wait_http_status($port2, '/readyz', 200, 15), 'instance 2 ready');

my $svc = mint_token(sub => 'ai-backend', scope => 'billing:usage');

sub usage_entries {
    my ($user) = @_;
    my $n = psql_admin('SELECT count(*) FROM billing.ledger_entries WHERE type = \'usage\' AND user_id = '
                       . sql_quote($user));
    return $n + 0;
}

# ---------------------------------------------------------------- identical
sub identical_rounds {
    my ($label, @ports) = @_;
    my $user = "$RUN-$label-same";
    fund_user($user, 10_000_000);
    for my $round (1 .. 5) {
        my $key = "same-$round-" . unique_id('k');
        my $body = { userId => $user, %BODY, idempotencyKey => $key };
        my @reqs = map { +{ %{ reconcile_req($svc, $body) }, port => $ports[$_ % @ports] } } 0 .. 49;
        my @res = parallel_requests_multi(\@reqs, 50, 30);

        my (%status, %entry, $fresh, $replayed, $bad_body);
        $fresh = $replayed = $bad_body = 0;
        for my $r (@res) {
            my ($s, $h, $b) = @$r;
            $status{$s}++;
            my $j = json_decode($b);
            if ($s != 201 || !$j) { next }
            $entry{ $j->{entryId} // 'none' }++;
            my $hdr = lc($h->{'idempotent-replayed'} // '');
            if ($hdr eq 'true' && $j->{replayed}) { $replayed++ }
            elsif ($hdr eq '' && !$j->{replayed}) { $fresh++ }
            else { $bad_body++ }
            $bad_body++ unless ($j->{chargedMicros} // -1) == $CHARGE && ($j->{userId} // '') eq $user;
        }
        my $tag = "$label round $round";
        is_deeply(\%status, { 201 => 50 }, "$tag: all 50 answers are 201")
            or diag explain [map { "$_->[0] $_->[2]" } grep { $_->[0] != 201 } @res];
        is($fresh, 1, "$tag: exactly one fresh answer");
        is($replayed, 49, "$tag: 49 replays with Idempotent-Replayed: true and replayed:true");
        is($bad_body, 0, "$tag: replay header and body flag agree, bodies carry the charge");
        is(scalar keys %entry, 1, "$tag: every body carries the same entryId") or diag explain \%entry;
        is(usage_entries($user), $round, "$tag: exactly one ledger entry for the key");
        my $n = psql_admin("SELECT count(*) FROM billing.ledger_entries WHERE user_id = "
                           . sql_quote($user) . " AND idempotency_key = " . sql_quote($key));
        is($n + 0, 1, "$tag: one entry under that key");
    }
    is(balance_of($user), 10_000_000 - 5 * $CHARGE, "$label: five charges, balance exact");
}

# ---------------------------------------------------------------- overdraw
sub overdraw {
    my ($label, @ports) = @_;
    my $user = "$RUN-$label-ten";
    fund_user($user, 10 * $CHARGE);
    my @reqs = map {
        +{ %{ reconcile_req($svc, { userId => $user, %BODY, idempotencyKey => "d-$_-" . unique_id('k') }) },
          port => $ports[$_ % @ports] }
    } 0 .. 99;
    my @res = parallel_requests_multi(\@reqs, 100, 45);
    my %status;
    $status{ $_->[0] }++ for @res;
    is_deeply(\%status, { 201 => 10, 402 => 90 }, "$label: 10 x 201 and 90 x 402")
        or diag explain \%status;
    my @codes = map { (json_decode($_->[2]) // {})->{code} // '' } grep { $_->[0] == 402 } @res;
    is(scalar(grep { $_ eq 'insufficient_credits' } @codes), scalar @codes,
       "$label: every 402 is insufficient_credits");
    my %after = map { ((json_decode($_->[2]) // {})->{balanceMicros} // 'x') => 1 }
                grep { $_->[0] == 201 } @res;
    is_deeply([sort { $a <=> $b } keys %after], [map { $_ * $CHARGE } 0 .. 9],
              "$label: the ten charges saw the ten distinct balances 67500 .. 0");
    is(balance_of($user), 0, "$label: balance ends at exactly 0");
    is(usage_entries($user), 10, "$label: 10 usage entries");
    is(entries_of($user), 11, "$label: and nothing else besides the credit");
    my $min = psql_admin('SELECT min(balance_after_micros) FROM billing.ledger_entries WHERE user_id = '
                         . sql_quote($user));
    is($min + 0, 0, "$label: no entry ever took the balance below zero");
}

identical_rounds('one', $port1);
overdraw('one', $port1);

# the same with two instances (4 workers) on one database
identical_rounds('two', $port1, $port2);
overdraw('two', $port1, $port2);

# both instances really served requests
for my $p ($port1, $port2) {
    my (undef, undef, $m) = http_request($p, { method => 'GET', path => '/metrics' });
    my $met = parse_metrics($m);
    my $n = 0;
    $n += $met->{$_} for grep { /^billing_http_requests_total\{.*endpoint="reconcile"/ } keys %$met;
    ok($n > 0, "instance on port $p served reconciles ($n)");
}

# ---------------------------------------------------------------- cursor walk
{
    my $user = "$RUN-walk";
    fund_user($user, 1_000_000);
    for my $i (1 .. 8) {
        my $o = psql_admin("SELECT status FROM billing.api_reconcile(" . sql_quote($user)
                           . ", 'gpt-4o-mini', " . (1000 * $i) . ", 0, 'walk-$i', NULL)");
        die "seed charge $i: $o" unless $o =~ /^201/;
    }
    my @expect = split /\n/, psql_admin('SELECT id FROM billing.ledger_entries WHERE user_id = '
                                        . sql_quote($user) . ' ORDER BY id DESC');
    is(scalar @expect, 9, 'walk: 9 entries (a credit and 8 charges)');

    my $tok = mint_token(sub => $user);
    my ($cursor, @seen, $pages, $ok_pages, $added);
    $pages = $ok_pages = 0;
    while (1) {
        my $path = '/api/ledger?limit=2' . (defined $cursor ? "&cursor=$cursor" : '');
        my ($s, undef, $b) = http_request($port1, user_get($tok, $path));
        my $j = json_decode($b);
        $pages++;
        last unless $s == 200 && $j && ref $j->{entries} eq 'ARRAY';
        $ok_pages++;
        push @seen, map { $_->{id} } @{ $j->{entries} };
        if (!$added) {
            # a new entry after the first page: newer than the cursor, so it
            # must not appear in later pages nor shift them
            my $o = psql_admin("SELECT status FROM billing.api_reconcile(" . sql_quote($user)
                               . ", 'gpt-4o-mini', 1, 0, 'walk-late', NULL)");
            die "late charge: $o" unless $o =~ /^201/;
            $added = 1;
        }
        last if $pages > 20;
        $cursor = $j->{nextCursor};
        last unless defined $cursor;
        if (@{ $j->{entries} } != 2) { fail('walk: a page with a next cursor has limit entries'); last }
    }
    is($ok_pages, $pages, 'walk: every page answered 200 with entries');
    is($pages, 5, 'walk: 9 entries in pages of 2 is 5 pages, the last with nextCursor null');
    is_deeply(\@seen, \@expect, 'walk: every entry exactly once, newest first');
    my %dup; $dup{$_}++ for @seen;
    is(scalar(grep { $dup{$_} > 1 } keys %dup), 0, 'walk: no entry twice');
    my ($s, undef, $b) = http_request($port1, user_get($tok, '/api/ledger?limit=200'));
    is(scalar @{ (json_decode($b) // {})->{entries} // [] }, 10, 'walk: a fresh first page sees the late entry');
}

stop_nginx('conc1');
stop_nginx('conc2');
invariants_ok('invariants hold after the concurrency tests');
diag(sprintf 'run time %.1f s', time - $T0);
done_testing();
