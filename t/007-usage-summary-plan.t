# The usage summary (docs/spec.md §4.6) is served by an index, never by a
# scan of the ledger: on a scratch database with a ledger of 60,000 entries
# of 300 users, the plan PostgreSQL uses for the query inside
# billing.api_usage_summary (logged by auto_explain, for the first calls'
# custom plans and the later generic one) reads the user's usage through
# ledger_usage_summary_idx and looks each entry's reversal up through the
# ledger's unique (user_id, idempotency_key) index. The answer is the one an
# independent query gives.
#
# Also: sql/migrate.sh builds that index with CREATE INDEX CONCURRENTLY
# (sql/online/) on a database whose ledger exists before migration 011, and
# drops and rebuilds an INVALID leftover of a failed build.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use File::Temp ();
use BillingTest;

my $root = $ENV{BILLING_ROOT} // '.';
$ENV{BILLING_TEST_ADMIN_URL} or plan skip_all => 'BILLING_TEST_ADMIN_URL not set';

my $scratch = scratch_db('t007');

sub psql_all { return psql_script($scratch, $_[0]) }    # stdout and stderr (NOTICEs) of a script

# ---------------------------------------------------------------- the index, built online

# the schema before 011 (the ledger exists), then today's files: the online
# step builds the index before the migration's transaction. The files before
# 011 come from git: the parent of the commit that added 011.
my $pre011 = `git -C '$root' log --format=%H -1 --first-parent --diff-merges=first-parent --diff-filter=A --no-patch -- sql/011_admin_disputes.sql 2>/dev/null`;
chomp $pre011;

SKIP: {
    skip 'no git history with the commit that added migration 011', 6 unless $pre011;
    my $tree = File::Temp::tempdir(CLEANUP => 1);
    system("git -C '$root' archive $pre011^ sql | tar -x -C '$tree'") == 0 or die 'git archive failed';
    my ($ok, $out) = migrate_db($scratch, sql_dir => "$tree/sql");
    ok($ok, 'the schema before migration 011') or diag $out;
    psql_all(q{INSERT INTO billing.accounts (user_id) VALUES ('pre-011')});

    # the online step alone (ahead of a deployment): the index, no migration
    ($ok, $out) = migrate_db($scratch, args => ['--online-only']);
    ok($ok, 'migrate.sh --online-only on a database with a ledger') or diag $out;
    is(psql_all(q{SELECT indisvalid::text || ' ' || (SELECT max(version) FROM billing.schema_migrations)
                    FROM pg_index WHERE indexrelid = 'billing.ledger_usage_summary_idx'::regclass}),
       'true ' . scalar(() = glob("$tree/sql/[0-9][0-9][0-9]_*.sql")) . "\n",
       '... builds the summary index (valid) and applies no migration');
    ($ok, $out) = migrate_db($scratch);
    ok($ok, 'today\'s migrate.sh then') or diag $out;

    # a failed concurrent build leaves an INVALID index: the next run replaces it
    psql_all(q{UPDATE pg_index SET indisvalid = false
                WHERE indexrelid = 'billing.ledger_usage_summary_idx'::regclass});
    my $oid = psql_all(q{SELECT 'billing.ledger_usage_summary_idx'::regclass::oid});
    ($ok, $out) = migrate_db($scratch);
    ok($ok, 'migrate.sh with an invalid leftover index') or diag $out;
    is(psql_all(q{SELECT indisvalid AND oid <> } . ($oid + 0) . q{ FROM pg_index JOIN pg_class ON oid = indexrelid
                   WHERE indexrelid = 'billing.ledger_usage_summary_idx'::regclass}), "t\n",
       '... drops it and builds a valid one');
}

# a fresh database: the migration's transaction builds it
scratch_db('t007');    # dropped and made anew, empty
my ($ok, $out) = migrate_db($scratch);
ok($ok, 'migrate.sh on an empty database') or diag $out;
is(psql_all(q{SELECT indisvalid FROM pg_index
               WHERE indexrelid = 'billing.ledger_usage_summary_idx'::regclass}), "t\n",
   '... builds the summary index in its transaction');

# ---------------------------------------------------------------- the plan

# 300 users, 200 usage entries each over about a year, a few reversed
psql_all(<<'SQL');
INSERT INTO billing.accounts (user_id, balance_micros)
SELECT 'u' || g, 1000000000 FROM generate_series(1, 300) g;
INSERT INTO billing.ledger_entries (user_id, type, amount_micros, balance_after_micros, idempotency_key,
                                    request_fingerprint, price_id, model, input_tokens, output_tokens,
                                    created_at)
SELECT 'u' || (g % 300 + 1), 'usage', -(g % 1000), 0, 'k' || g, 'fp',
       (SELECT min(id) FROM billing.model_prices), CASE WHEN g % 3 = 0 THEN 'gpt-4o' ELSE 'o3-mini' END,
       g % 5000, g % 700, timestamptz '2025-01-01 00:00:00Z' + (g % 60000) * interval '9 minutes'
  FROM generate_series(1, 60000) g;
INSERT INTO billing.ledger_entries (user_id, type, amount_micros, balance_after_micros, idempotency_key,
                                    request_fingerprint, actor, reason, reversed_entry_id)
SELECT user_id, 'usage_reversal', -amount_micros, 0, 'usage_reversal ' || id, 'fp', 'support', 'test', id
  FROM billing.ledger_entries WHERE type = 'usage' AND id % 97 = 0;
ANALYZE billing.ledger_entries;
SQL

my $calls = join '', map { "SELECT (billing.api_usage_summary('u7', '2025-03-01', '2025-06-30', '"
                           . ($_ % 2 ? 'day' : 'model') . "')).status;\n" } 1 .. 8;
my $log = psql_all(<<"SQL");
LOAD 'auto_explain';
SET auto_explain.log_min_duration = 0;
SET auto_explain.log_nested_statements = on;
SET auto_explain.log_level = notice;
SET client_min_messages = notice;
$calls
SQL
my @plans = grep { /FROM ledger_entries e/ } split /NOTICE:\s+duration: [\d.]+ ms\s+plan:/, $log;
is(scalar @plans, 8, 'auto_explain logged the summary query of each of the 8 calls') or diag $log;
my ($plan) = ($plans[-1] // '') =~ /^(Aggregate.*?)(?:\npsql:|\z)/ms;
note("the plan of the last (generic) call:\n" . ($plan // ''));
for my $i (0 .. $#plans) {
    my $p = $plans[$i];
    like($p, qr/(?:Index Scan|Index Only Scan|Bitmap Index Scan) (?:using|on) ledger_usage_summary_idx/,
         "call " . ($i + 1) . ": the user's usage comes from ledger_usage_summary_idx");
    like($p, qr/Index Only Scan using ledger_user_key_uniq|Index Scan using ledger_user_key_uniq/,
         "call " . ($i + 1) . ": reversals are looked up in ledger_user_key_uniq");
    unlike($p, qr/Seq Scan on ledger_entries/, "call " . ($i + 1) . ': no scan of the ledger');
}

# the answer, against an independent query
my $got = psql_all(q{SELECT (billing.api_usage_summary('u7', '2025-03-01', '2025-06-30', 'model')).body::jsonb});
my $want = psql_all(<<'SQL');
SELECT jsonb_build_object('from', '2025-03-01', 'to', '2025-06-30', 'groupBy', 'model', 'groups',
       coalesce(jsonb_agg(jsonb_build_object('key', model, 'requests', n, 'inputTokens', i, 'outputTokens', o,
                                             'chargedMicros', c) ORDER BY model), '[]'))
  FROM (SELECT model, count(*) n, sum(input_tokens) i, sum(output_tokens) o, -sum(amount_micros) c
          FROM billing.ledger_entries u
         WHERE user_id = 'u7' AND type = 'usage'
           AND created_at >= '2025-03-01 00:00:00Z' AND created_at < '2025-07-01 00:00:00Z'
           AND u.id NOT IN (SELECT reversed_entry_id FROM billing.ledger_entries
                             WHERE type = 'usage_reversal' AND reversed_entry_id IS NOT NULL)
         GROUP BY model) s
SQL
is($got, $want, 'the summary equals an independent computation');
like($want, qr/"requests": [1-9]/, '... of a user with usage in the range');

done_testing();
