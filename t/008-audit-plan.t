# The incremental audit's cost follows its chunk, not the ledger: on a
# scratch database with a ledger of some 60,000 entries (usage, purchases,
# disputes, usage reversals, adjustments), the plans PostgreSQL uses inside
# billing.audit_run() (logged by auto_explain, custom and generic plans
# alike) read the ledger only through indexes: the predicates it shares with
# the full pass (sql/functions/_scoped_invariants.sql) are planned with the
# run's id range and dispute ids, never as a scan. The full pass
# (billing.invariant_violations()) may scan; it finds what the runs find.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use BillingTest;

$ENV{BILLING_TEST_ADMIN_URL} or plan skip_all => 'BILLING_TEST_ADMIN_URL not set';

my $scratch = migrated_scratch_db('t008');

sub psql_all { return psql_script($scratch, $_[0]) }    # stdout and stderr (NOTICEs) of a script

# entries of every type the shared predicates look at, for users u<n>;
# balances are not kept: the plans are the point, not the findings
sub entries {
    my ($tag, $n) = @_;
    return qq{
INSERT INTO billing.ledger_entries (user_id, type, amount_micros, balance_after_micros, idempotency_key,
       request_fingerprint, price_id, model, input_tokens, output_tokens)
SELECT 'u' || (g % 300), 'usage', -1, 0, '$tag-' || g, 'x',
       (SELECT id FROM billing.model_prices LIMIT 1), 'gpt-4o', 1, 1
  FROM generate_series(1, $n) g;
WITH p AS (INSERT INTO billing.purchases (user_id, package_code, amount_cents, credits_micros, status)
           SELECT 'u' || (g % 300), 'pro', 5000, 5000000, 'paid'
             FROM generate_series(1, greatest($n / 100, 1)) g RETURNING id, user_id),
     c AS (INSERT INTO billing.ledger_entries (user_id, type, amount_micros, balance_after_micros,
                                               idempotency_key, purchase_id)
           SELECT user_id, 'purchase', 5000000, 0, 'purchase ' || id, id FROM p RETURNING purchase_id),
     d AS (INSERT INTO billing.disputes (id, purchase_id, user_id, amount_cents, status, debited_micros)
           SELECT 'dp_' || id, id, user_id, 5000, 'lost', 5000000 FROM p RETURNING id, purchase_id, user_id)
INSERT INTO billing.ledger_entries (user_id, type, amount_micros, balance_after_micros, idempotency_key,
                                    purchase_id, dispute_id)
SELECT user_id, 'dispute', -5000000, 0, 'dispute ' || id, purchase_id, id FROM d;
INSERT INTO billing.ledger_entries (user_id, type, amount_micros, balance_after_micros, idempotency_key,
       reversed_entry_id, actor, reason, request_fingerprint)
SELECT user_id, 'usage_reversal', 1, 0, 'usage_reversal ' || id, id, 'support', 'plan test', 'x'
  FROM billing.ledger_entries WHERE type = 'usage' AND idempotency_key LIKE '$tag-%'
 ORDER BY id LIMIT greatest($n / 100, 1);
INSERT INTO billing.ledger_entries (user_id, type, amount_micros, balance_after_micros, idempotency_key,
       actor, reason, request_fingerprint)
SELECT 'u' || (g % 300), 'adjustment', -1, -1, 'adjustment $tag-' || g, 'support', 'plan test', 'x'
  FROM generate_series(1, greatest($n / 100, 1)) g;
};
}

psql_all(q{INSERT INTO billing.accounts (user_id) SELECT 'u' || g FROM generate_series(0, 299) g;}
         . entries('old', 60000) . q{ANALYZE;});
# the runs start after the ledger that is there now
# (the first notes the horizon, the second moves the checkpoint to it)
psql_all(q{SELECT count(*) FROM billing.audit_full(); SELECT count(*) FROM billing.audit_full();});
psql_all(entries('new', 200));

# the runs' nested plans, custom then generic: one block per statement
for my $mode (qw(force_custom_plan force_generic_plan)) {
    psql_all(entries($mode, 200));
    my $log = psql_all(qq{
LOAD 'auto_explain';
SET auto_explain.log_min_duration = 0;
SET auto_explain.log_nested_statements = on;
SET auto_explain.log_level = notice;
SET client_min_messages = notice;
SET plan_cache_mode = $mode;
-- a horizon, then the entries below it, 10 a chunk
SELECT examined FROM billing.audit_run(60000, 1000, 10);
SELECT examined FROM billing.audit_run(60000, 1000, 10);
SELECT examined FROM billing.audit_run(60000, 1000, 10);
});
    my @plans = split /NOTICE:\s+duration: /, $log;
    my @entries = grep { /_reversal_violations\(p_from, p_to\)/ } @plans;
    my @disputes = grep { /_dispute_violations\(p_ids\)/ } @plans;
    ok(@entries >= 5 && !grep({ !/Index Cond: \(\(id > \S+\) AND \(id <= \S+\)\)/ } @entries),
       "$mode: the runs plan the shared entry predicates with their range ("
       . scalar(@entries) . ' chunks)');
    ok(@disputes >= 1 && !grep({ !/Index Scan (?:using|on) ledger_purchase_idx/ } @disputes),
       "$mode: ... and a dispute's entries through its purchase") or diag @disputes;
    my @scans = $log =~ /(Seq Scan on ledger_entries.*)/g;
    is(scalar @scans, 0, "$mode: no plan of a run scans the ledger") or diag join "\n", @scans;
}

is(psql_all(q{SELECT count(*) FROM billing.invariant_violations() WHERE invariant = 5 AND detail LIKE 'adjustment entry %'}),
   psql_all(q{SELECT count(*) FROM billing.ledger_entries WHERE type = 'adjustment'}),
   'the full pass over everything finds every debit adjustment into a debt');
done_testing();
