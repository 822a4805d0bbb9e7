# The incremental ledger audit in the database (sql/functions/audit.sql), on
# a scratch database of its own so that it may break the ledger on purpose:
#   * a run's cost follows the new entries: it examines exactly the entries
#     written since the last run, whatever the ledger's size, a chunk at a
#     time within its budget, and says when more are waiting;
#   * an entry committed late, below ids already audited, is still audited
#     (the checkpoint never passes a transaction that is still writing);
#   * one runner per cluster: while another session holds the audit's lock
#     a run skips and reports the last success unchanged;
#   * what it finds is kept until a full pass (billing.audit_full()) finds
#     the ledger consistent; a balance changed without an entry is found by
#     the rotating sweep; the append-only checks are live;
#   * disputes, usage reversals and adjustments are judged as the full pass
#     judges them (a dispute may leave a debt; a reversal credits its charge),
#     and a ledger with one tampered item of each kind gives the runs exactly
#     the findings of invariant_violations() and of audit_full();
#   * billing_app may run the audit but not the full pass.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use POSIX ();
use Time::HiRes qw(sleep time);
use BillingTest;

$ENV{BILLING_TEST_ADMIN_URL} or plan skip_all => 'BILLING_TEST_ADMIN_URL not set';

my $url = migrated_scratch_db('t018');

sub sq { psql_url($url, $_[0]) }

# one run: { ran, examined, more, violations, last_success }
sub run_audit {
    my (%o) = @_;
    my $r = sq(sprintf 'SELECT ran, examined, more, violations, coalesce(last_success, 0) '
                    . 'FROM billing.audit_run(%d, %d, %d)',
              $o{budget} // 60000, $o{sweep} // 1000, $o{chunk} // 5000);
    my @f = split /\|/, $r;
    return { ran => $f[0] eq 't', examined => $f[1], more => $f[2] eq 't',
             violations => $f[3], last_success => $f[4] };
}

# runs until nothing is waiting; the entries examined on the way
sub settle {
    my (%o) = @_;
    my $n = 0;
    my $quiet = 0;
    for (1 .. 200) {
        my $r = run_audit(%o);
        die 'the audit skipped' unless $r->{ran};
        $n += $r->{examined};
        $quiet = ($r->{examined} == 0 && !$r->{more}) ? $quiet + 1 : 0;
        return $n if $quiet == 2;   # the last horizon was promoted and empty
    }
    die 'the audit never settled';
}

sub findings { sq('SELECT count(*) FROM billing.audit_findings') }

# money through the real paths: a paid purchase, then usage charges
my $U = "aud-$$";
sub fund { fund_user($_[0], $_[1], $url) }
sub charges {
    my ($user, $n, $tag) = @_;
    my $u = sql_quote($user);
    sq(qq{DO \$\$ BEGIN FOR i IN 1 .. $n LOOP
        IF (billing.api_reconcile($u, 'gpt-4o', 1, 1, '$tag-' || i, NULL)).status <> 201 THEN
            RAISE EXCEPTION 'charge % refused', i;
        END IF;
    END LOOP; END \$\$});
}

# ------------------------------------------------------------ cost follows new entries

fund("$U-big", 1_000_000_000);
charges("$U-big", 1200, 'k');
my $first = settle();
is($first, 1201, 'the first runs audit the whole ledger (1201 entries)');
is(findings(), 0, '... and find nothing');

fund("$U-a", 10_000_000);
charges("$U-a", 6, 'k');
is(settle(), 7, 'later runs examine only the 7 new entries, not the ledger\'s 1208');

# a chunk at a time: the budget stops a run after one chunk, keeping its work
charges("$U-big", 25, 'chunked');
run_audit();    # promotes the horizon before the new entries, notes a new one
my @runs = map { run_audit(budget => 1, chunk => 10) } 1 .. 3;
is_deeply([map { $_->{examined} } @runs], [10, 10, 5], 'a 1 ms budget: one chunk of 10 per run');
is_deeply([map { $_->{more} ? 1 : 0 } @runs], [1, 1, 0], '... and "more" while final entries wait');
is(findings(), 0, 'chunked runs find nothing in a consistent ledger');

# ------------------------------------------------------------ an entry committed late

# A session writes an entry with a wrong balance_after and stays open; other
# entries, with higher ids, commit and are audited meanwhile. The late entry
# must be audited once it commits, not skipped by a checkpoint that passed it.
fund("$U-late", 5_000_000);
fund("$U-other", 5_000_000);
settle();
sq('CREATE TABLE public.gate (open boolean)');
my $price = sq(q{SELECT id FROM billing.model_prices WHERE model = 'gpt-4o' ORDER BY effective_from DESC LIMIT 1});
my $late = sql_quote("$U-late");
my $pid = fork // die "fork: $!";
if (!$pid) {
    $ENV{PGAPPNAME} = 'audit-late';
    open STDOUT, '>', '/dev/null';
    { exec 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', $url,
        '-c', 'BEGIN',
        '-c', "SELECT 1 FROM billing.accounts WHERE user_id = $late FOR UPDATE",
        '-c', "INSERT INTO billing.ledger_entries (user_id, type, amount_micros, balance_after_micros,
                   idempotency_key, request_fingerprint, price_id, model, input_tokens, output_tokens)
               VALUES ($late, 'usage', -1, 12345, 'late-bogus', 'x', $price, 'gpt-4o', 0, 0)",
        '-c', q{DO $$ BEGIN WHILE NOT EXISTS (SELECT 1 FROM public.gate) LOOP PERFORM pg_sleep(0.02); END LOOP; END $$},
        '-c', 'COMMIT'; }
    POSIX::_exit(127);
}
# the late entry has its id once the session waits at the gate
my $deadline = time + 20;
sleep 0.05 while time < $deadline
    && sq(q{SELECT count(*) FROM pg_stat_activity WHERE application_name = 'audit-late'
            AND query LIKE '%public.gate%' AND state = 'active'}) ne '1';
my $late_id = sq(q{SELECT last_value FROM billing.ledger_entries_id_seq});
charges("$U-other", 5, 'after');
my $other_max = sq(qq{SELECT max(id) FROM billing.ledger_entries WHERE user_id = '$U-other'});
ok($other_max > $late_id, "entries after the open one have higher ids ($other_max > $late_id)");
run_audit() for 1 .. 3;
my $checked = sq('SELECT checked_through FROM billing.audit_state');
ok($checked < $late_id, "while it is open the checkpoint stays below it ($checked < $late_id)");

sq('INSERT INTO public.gate VALUES (true)');
waitpid $pid, 0;
is($?, 0, 'the late session committed');
settle();
like(sq(qq{SELECT string_agg(detail, ' / ') FROM billing.audit_findings WHERE user_id = $late}),
     qr/entry $late_id: balance_after 12345 <> previous 5000000 \+ amount -1/,
     'the late entry was audited: its broken chain is a finding');
is(sq(qq{SELECT through_id FROM billing.audit_accounts WHERE user_id = $late}), $late_id,
   '... and the account\'s running sum includes it');
ok(run_audit()->{violations} >= 1, 'the run reports it');
ok(run_audit()->{violations} >= 1, '... and keeps reporting it');

# the owner repairs what the test broke (possible only with the trigger off)
sq(qq{ALTER TABLE billing.ledger_entries DISABLE TRIGGER ledger_entries_no_update_delete;
     DELETE FROM billing.ledger_entries WHERE id = $late_id;
     ALTER TABLE billing.ledger_entries ENABLE ALWAYS TRIGGER ledger_entries_no_update_delete});
ok(run_audit()->{violations} >= 1, 'a finding stays after the repair ...');
is(sq('SELECT count(*) FROM billing.audit_full()'), 0, '... until a full pass finds the ledger consistent');
is(run_audit()->{violations}, 0, 'then the runs report 0');
charges("$U-late", 3, 'after-full');
settle();
is(findings(), 0, 'and go on from the full pass without false findings');

# ------------------------------------------------------------ one runner at a time

my $before = run_audit()->{last_success};
sleep 1.1;      # last_success has a resolution of one second
$pid = fork // die "fork: $!";
if (!$pid) {
    $ENV{PGAPPNAME} = 'audit-lock';
    open STDOUT, '>', '/dev/null';
    { exec 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', $url,
        '-c', 'BEGIN',
        '-c', 'SELECT pg_advisory_xact_lock(billing._audit_lock_key())',
        '-c', q{DO $$ BEGIN WHILE NOT EXISTS (SELECT 1 FROM public.gate WHERE NOT open) LOOP PERFORM pg_sleep(0.02); END LOOP; END $$},
        '-c', 'COMMIT'; }
    POSIX::_exit(127);
}
$deadline = time + 20;
sleep 0.05 while time < $deadline
    && sq(q{SELECT count(*) FROM pg_stat_activity WHERE application_name = 'audit-lock'
            AND query LIKE '%public.gate%' AND state = 'active'}) ne '1';
charges("$U-a", 2, 'locked');
my @skipped = map { run_audit() } 1 .. 3;
is_deeply([map { $_->{ran} ? 1 : 0 } @skipped], [0, 0, 0], 'another session holds the lock: runs skip');
is_deeply([map { $_->{examined} } @skipped], [0, 0, 0], '... and examine nothing');
is_deeply([map { $_->{last_success} } @skipped], [($before) x 3], '... and the last success stays');
sq('INSERT INTO public.gate VALUES (false)');
waitpid $pid, 0;
my $after = run_audit();
ok($after->{ran} && $after->{last_success} > $before, 'the lock released: the next run runs');
is(settle(), 2, '... and audits what was written meanwhile');

# ------------------------------------------------------------ the sweep, live checks

fund("$U-tamper", 2_000_000);
settle();
sq(qq{UPDATE billing.accounts SET balance_micros = balance_micros + 1 WHERE user_id = '$U-tamper'});
my $r = run_audit(sweep => 100000);
ok($r->{violations} >= 1, 'a balance changed without an entry is found by the sweep');
like(sq(qq{SELECT detail FROM billing.audit_findings WHERE user_id = '$U-tamper'}),
     qr/^balance differs from the last entry's balance_after by 1$/, '... named');
sq(qq{UPDATE billing.accounts SET balance_micros = balance_micros - 1 WHERE user_id = '$U-tamper'});
is(sq('SELECT count(*) FROM billing.audit_full()'), 0, 'repaired: the full pass finds nothing');

sq('ALTER TABLE billing.ledger_entries DISABLE TRIGGER ledger_entries_no_truncate');
is(run_audit()->{violations}, 1, 'a disabled append-only trigger counts at once');
sq('ALTER TABLE billing.ledger_entries ENABLE ALWAYS TRIGGER ledger_entries_no_truncate');
is(run_audit()->{violations}, 0, '... and no longer once enabled (not kept as a finding)');

# ------------------------------------------------------------ disputes, reversals, adjustments

# The runs judge these entries as the full pass does: a dispute may leave a
# debt, an administrator may credit and reverse; none of it is a finding.
my $D = sql_quote("$U-debt");
fund("$U-debt", 5_000_000);
my $pi = sq(qq{SELECT 'pi_fund_' || id FROM billing.purchases WHERE user_id = $D});   # fund_user's
charges("$U-debt", 2, 'before-dispute');
sub stripe_dispute {
    my ($event, $type, $status) = @_;
    return sq(qq{SELECT (billing.api_stripe_event(jsonb_build_object(
        'id', '$event', 'type', '$type', 'object', 'event',
        'data', jsonb_build_object('object', jsonb_build_object(
            'id', 'dp_$$', 'object', 'dispute', 'amount', 5000, 'charge', 'ch_x',
            'payment_intent', '$pi', 'currency', 'usd', 'status', '$status'))))).meta});
}
is(stripe_dispute("evt_dp_open_$$", 'charge.dispute.created', 'needs_response'), 'processed',
   'a dispute of the whole purchase after some usage ...');
ok(sq(qq{SELECT balance_micros FROM billing.accounts WHERE user_id = $D}) < 0, '... leaves a debt');
settle(sweep => 100000);
is(findings(), 0, 'a debt a dispute left is no finding')
    or diag sq('SELECT string_agg(detail, E\'\n\') FROM billing.audit_findings');
my $usage = sq(qq{SELECT min(id) FROM billing.ledger_entries WHERE user_id = $D AND type = 'usage'});
is(sq(qq{SELECT (billing.api_admin_usage_reversal('support', $usage, 'audit test', 'rev-$$')).status}), 201,
   'a usage reversal');
is(sq(qq{SELECT (billing.api_admin_adjustment('support', $D, 100, 'audit test', 'adj-$$')).status}), 201,
   'a credit adjustment');
is(stripe_dispute("evt_dp_won_$$", 'charge.dispute.closed', 'won'), 'processed', 'the dispute won');
settle(sweep => 100000);
is(findings(), 0, 'the runs find nothing in a ledger with a debt from a dispute, a reversal, an adjustment')
    or diag sq('SELECT string_agg(detail, E\'\n\') FROM billing.audit_findings');

# a usage reversal that credits more than its charge (written by the owner
# past the functions) is found by the runs as by the full pass
my $charge = sq(qq{SELECT -amount_micros FROM billing.ledger_entries WHERE user_id = $D AND id > $usage
                   AND type = 'usage' ORDER BY id LIMIT 1});
my $second = sq(qq{SELECT id FROM billing.ledger_entries WHERE user_id = $D AND id > $usage
                   AND type = 'usage' ORDER BY id LIMIT 1});
my $bad = sq(qq{WITH a AS (SELECT balance_micros AS b FROM billing.accounts WHERE user_id = $D FOR UPDATE),
                     e AS (INSERT INTO billing.ledger_entries (user_id, type, amount_micros, balance_after_micros,
                                  idempotency_key, reversed_entry_id, actor, reason, request_fingerprint)
                           SELECT $D, 'usage_reversal', $charge + 1, a.b + $charge + 1,
                                  'usage_reversal $second', $second, 'owner', 'tampered', 'x'
                             FROM a RETURNING id, balance_after_micros)
                UPDATE billing.accounts SET balance_micros = e.balance_after_micros FROM e
                 WHERE user_id = $D RETURNING e.id});
settle();
like(sq(qq{SELECT string_agg(detail, ' / ') FROM billing.audit_findings WHERE user_id = $D}),
     qr/usage_reversal $bad of entry $second: credits ${\($charge + 1)} for a charge of $charge/,
     'a reversal crediting more than its charge is a finding');
sq(qq{ALTER TABLE billing.ledger_entries DISABLE TRIGGER ledger_entries_no_update_delete;
     DELETE FROM billing.ledger_entries WHERE id = $bad;
     UPDATE billing.accounts SET balance_micros = balance_micros - $charge - 1 WHERE user_id = $D;
     ALTER TABLE billing.ledger_entries ENABLE ALWAYS TRIGGER ledger_entries_no_update_delete});
is(sq('SELECT count(*) FROM billing.audit_full()'), 0, 'repaired: the full pass finds nothing');

# ------------------------------------------------------------ both paths, one judgement

# One tampered item of each kind the runs and the full pass share
# (sql/functions/_scoped_invariants.sql): a refund its purchase does not
# record, a dispute that debited other than it says, a dispute entry naming
# no dispute of its user, a "reversal" of a purchase credit, an
# administrator's debit into a debt. Each is written by
# the owner past the functions, with its balance and (for admin entries) its
# admin request, so nothing else is wrong; the runs' findings must be
# exactly what invariant_violations() finds, and what audit_full() answers.
settle(sweep => 100000);
is(findings(), 0, 'before tampering: no finding');
my %T = map { $_ => sql_quote("$U-t$_") } qw(pur dsp rev adj);
fund("$U-t$_", 5_000_000) for qw(pur dsp rev adj);
my %P = map { $_ => sq(qq{SELECT id FROM billing.purchases WHERE user_id = $T{$_}}) } keys %T;

# an entry of user $u (quoted) with its balance; answers its id
sub tamper_entry {
    my ($u, $cols, $vals, $amount) = @_;
    return sq(qq{WITH a AS (SELECT balance_micros AS b FROM billing.accounts WHERE user_id = $u FOR UPDATE),
                      e AS (INSERT INTO billing.ledger_entries (user_id, amount_micros, balance_after_micros, $cols)
                            SELECT $u, $amount, a.b + $amount, $vals FROM a
                            RETURNING id, balance_after_micros)
                 UPDATE billing.accounts SET balance_micros = e.balance_after_micros FROM e
                  WHERE user_id = $u RETURNING e.id});
}
my $refund = tamper_entry($T{pur}, 'type, idempotency_key, purchase_id',
                          "'refund', 'refund $P{pur} tamper', '$P{pur}'", -1);
my ($dp_half, $dp_ghost) = ("dp_half_$$", "dp_ghost_$$");
sq(qq{INSERT INTO billing.disputes (id, purchase_id, user_id, amount_cents, status, debited_micros)
      VALUES ('$dp_half', '$P{dsp}', $T{dsp}, 5000, 'lost', 1000)});
my $half = tamper_entry($T{dsp}, 'type, idempotency_key, purchase_id, dispute_id',
                        "'dispute', 'dispute $dp_half', '$P{dsp}', '$dp_half'", -999);
my $ghost = tamper_entry($T{dsp}, 'type, idempotency_key, purchase_id, dispute_id',
                         "'dispute', 'dispute $dp_ghost', '$P{dsp}', '$dp_ghost'", -1);
my $credit = sq(qq{SELECT id FROM billing.ledger_entries WHERE user_id = $T{rev} AND type = 'purchase'});
my $rev = tamper_entry($T{rev}, 'type, idempotency_key, reversed_entry_id, actor, reason, request_fingerprint',
                       "'usage_reversal', 'usage_reversal $credit', $credit, 'owner', 'tampered', 'x'", 1);
my $adj = tamper_entry($T{adj}, 'type, idempotency_key, actor, reason, request_fingerprint',
                       "'adjustment', 'adjustment tamper-$$', 'owner', 'tampered', 'x'", -6_000_000);
sq(qq{INSERT INTO billing.admin_requests (idempotency_key, operation, request_fingerprint, actor, reason, entry_id)
      VALUES ('tamper-rev-$$', 'usage_reversal', 'x', 'owner', 'tampered', $rev),
             ('tamper-adj-$$', 'adjustment', 'x', 'owner', 'tampered', $adj)});

# the distinct findings of a query, one "invariant|user|detail" a line, sorted
sub finding_set {
    my ($from) = @_;
    return sq(qq{SELECT string_agg(DISTINCT f, E'\n' ORDER BY f)
                   FROM (SELECT concat_ws('|', invariant, user_id, detail) AS f FROM $from) s});
}
my $want = finding_set('billing.invariant_violations() WHERE invariant <> 1');
like($want, qr/^4\|\Q$U\E-tpur\|purchase $P{pur} refunded_micros 0 <> refund entries 1$/m,
     'the full pass finds the refund its purchase does not record');
like($want, qr/^4\|\Q$U\E-tdsp\|dispute $dp_half \(lost\): debited 1000, credited back 0; entries: 1 debits of 999, 0 credits of 0$/m,
     '... the dispute that debited other than it says');
like($want, qr/^4\|\Q$U\E-tdsp\|dispute entry $ghost names dispute $dp_ghost, which belongs to nothing of its user$/m,
     '... the dispute entry of no dispute');
like($want, qr/^4\|\Q$U\E-trev\|usage_reversal $rev of entry $credit: not a usage entry$/m,
     '... the reversal of a purchase credit');
like($want, qr/^5\|\Q$U\E-tadj\|adjustment entry $adj left balance -1000000$/m,
     '... the administrator\'s debit into a debt');
is(scalar(() = $want =~ /^\d/mg), 6, '... and the debt itself, nothing else')
    or diag $want;
settle(sweep => 100000);
is(finding_set('billing.audit_findings'), $want, 'the runs find exactly what the full pass finds');
is(finding_set('billing.audit_full()'), $want, '... and audit_full() answers the same');

# the owner removes what the test wrote (possible only with the triggers off)
sq(qq{ALTER TABLE billing.ledger_entries DISABLE TRIGGER ledger_entries_no_update_delete;
     ALTER TABLE billing.admin_requests DISABLE TRIGGER admin_requests_no_update_delete;
     DELETE FROM billing.admin_requests WHERE entry_id IN ($rev, $adj);
     DELETE FROM billing.ledger_entries WHERE id IN ($refund, $half, $ghost, $rev, $adj);
     DELETE FROM billing.disputes WHERE id = '$dp_half';
     UPDATE billing.accounts a
        SET balance_micros = (SELECT l.balance_after_micros FROM billing.ledger_entries l
                               WHERE l.user_id = a.user_id ORDER BY l.id DESC LIMIT 1)
      WHERE a.user_id IN ($T{pur}, $T{dsp}, $T{rev}, $T{adj});
     ALTER TABLE billing.admin_requests ENABLE ALWAYS TRIGGER admin_requests_no_update_delete;
     ALTER TABLE billing.ledger_entries ENABLE ALWAYS TRIGGER ledger_entries_no_update_delete});
is(sq('SELECT count(*) FROM billing.audit_full()'), 0, 'repaired: the full pass finds nothing');

# ------------------------------------------------------------ who may run what

is(sq(q{SET ROLE billing_app; SELECT ran FROM billing.audit_run(1000)}), 't',
   'billing_app runs the audit');
ok(!eval { sq(q{SET ROLE billing_app; SELECT count(*) FROM billing.audit_full()}); 1 }
   && $@ =~ /permission denied/, 'billing_app may not run the full pass');
ok(!eval { sq(q{SET ROLE billing_app; SELECT count(*) FROM billing.audit_findings}); 1 }
   && $@ =~ /permission denied/, 'nor read the audit\'s tables');

is(sq('SELECT count(*) FROM billing.invariant_violations()'), 0, 'the scratch ledger is consistent');
done_testing();
