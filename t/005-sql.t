# The database alone (sql/README.md):
#  * sql/migrate.sh run again changes nothing, and concurrent runs on a new
#    database both succeed;
#  * every function of sql/ is defined once, in sql/functions/, and the
#    database holds exactly those;
#  * a failing run commits nothing (migrations and functions are one
#    transaction);
#  * a database of the previous layout (main at 20111f7, where 006 re-created
#    functions of 003/004 and wrapped api_stripe_event) migrated with today's
#    files equals a fresh migration: the same schema, functions and grants
#    (pg_dump), the same answers (t/sql/lib/scenario.psql, also against the
#    old functions), and its old data reads the same;
#  * every t/sql/*.sql script (ASSERT-based: pricing, idempotency, holds,
#    Stripe events, the append-only trigger, least privilege, validation)
#    passes against the migrated schema as its owner.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use File::Temp qw(tempdir);
use POSIX ();
use BillingTest;

my $root = $ENV{BILLING_ROOT} // '.';
my $url = $ENV{BILLING_TEST_ADMIN_URL} or plan skip_all => 'BILLING_TEST_ADMIN_URL not set';

# the last commit of main before sql/functions/
my $OLD_LAYOUT = '20111f7';

# the schema as pg_dump sees it, minus the per-run \restrict key
sub schema_of {
    my ($u) = @_;
    my $d = `pg_dump --schema-only -d '$u' 2>&1`;
    die "pg_dump failed: $d" if $?;
    return join '', grep { !/^\\(un)?restrict / } split /^/, $d;
}

# is() for two schema dumps, showing a diff rather than both dumps
sub same_schema {
    my ($got, $want, $name) = @_;
    return pass($name) if $got eq $want;
    my $dir = tempdir(CLEANUP => 1);
    for (['got', $got], ['want', $want]) {
        open my $fh, '>', "$dir/$_->[0]" or die $!;
        print $fh $_->[1];
        close $fh;
    }
    my @diff = split /^/, `diff -u '$dir/want' '$dir/got'`;
    fail($name);
    diag(join '', @diff[0 .. ($#diff < 80 ? $#diff : 80)]);
    return 0;
}

sub scenario {
    my ($u) = @_;
    my $out = `psql -X -q -v ON_ERROR_STOP=1 -d '$u' -f '$root/t/sql/lib/scenario.psql' 2>&1`;
    return $? == 0 ? $out : "scenario failed:\n$out";
}

sub query {
    my ($u, $sql) = @_;
    return psql_url($u, $sql);
}

# ---------------------------------------------------------------- the test database

my $before = schema_of($url);
my ($ok, $out) = migrate_db($url);
ok($ok, 'migrate.sh runs again on a migrated database') or diag $out;
unlike($out, qr/^migration /m, '... applies no migration the second time') or diag $out;
same_schema(schema_of($url), $before, '... and changes nothing (pg_dump)');

my @files = glob("$root/sql/[0-9][0-9][0-9]_*.sql");
is(psql_admin('SELECT max(version) FROM billing.schema_migrations'), scalar @files,
   'every migration file is recorded in schema_migrations');

# ---------------------------------------------------------------- one place per function

my (%defined, @misplaced);
for my $f (glob("$root/sql/*.sql"), glob("$root/sql/functions/*.sql")) {
    open my $fh, '<', $f or die "$f: $!";
    my $text = do { local $/; <$fh> };
    (my $rel = $f) =~ s{^\Q$root\E/}{};
    while ($text =~ /^CREATE\s+(OR\s+REPLACE\s+)?FUNCTION\s+billing\.(\w+)\s*\(/mig) {
        my ($replace, $name) = ($1, $2);
        push @{ $defined{$name} }, $rel;
        push @misplaced, "$name in $rel" unless $rel =~ m{^sql/functions/} && $replace;
    }
}
my @twice = map { "$_: @{ $defined{$_} }" } grep { @{ $defined{$_} } > 1 } sort keys %defined;
is_deeply(\@twice, [], 'no function is defined in two places');
is_deeply(\@misplaced, [], 'functions are defined only in sql/functions/, with CREATE OR REPLACE');
my @in_db = split /\n/, psql_admin(q{
    SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
     WHERE n.nspname = 'billing' ORDER BY 1});
is_deeply(\@in_db, [sort keys %defined],
          'the database holds exactly the functions of sql/functions/ (no leftovers)');

# ---------------------------------------------------------------- one transaction

{
    my $fresh = scratch_db('t005_fresh');
    # two runs at once on an empty database: the lock serialises them
    my @pids = map {
        my $pid = fork // die "fork: $!";
        if (!$pid) {
            my ($ok) = migrate_db($fresh);
            POSIX::_exit($ok ? 0 : 1);
        }
        $pid;
    } 1 .. 2;
    my @rc = map { waitpid($_, 0); $? } @pids;
    is_deeply(\@rc, [0, 0], 'two concurrent runs on a new database both succeed');
    is(query($fresh, 'SELECT count(*) FROM billing.schema_migrations'), scalar @files,
       '... and record each migration once');

    # a run whose new migration works but whose functions fail commits neither
    my $broken = tempdir(CLEANUP => 1);
    system('cp', '-R', "$root/sql/.", $broken) == 0 or die 'cp failed';
    open my $m, '>', "$broken/999_probe.sql" or die $!;
    print $m "CREATE TABLE billing.probe (id int);\n";
    close $m;
    open my $f, '>', "$broken/functions/zz_broken.sql" or die $!;
    print $f "CREATE OR REPLACE FUNCTION billing.zz_broken() RETURNS int LANGUAGE sql AS \$\$ SELECT nope \$\$;\n";
    close $f;
    my $schema = schema_of($fresh);
    my ($ok, $out) = migrate_db($fresh, sql_dir => $broken);
    ok(!$ok, 'a run with a broken function file fails') or diag $out;
    like($out, qr/nothing was committed/, '... and says so');
    same_schema(schema_of($fresh), $schema, '... and commits nothing, not even its migration');
}

# ---------------------------------------------------------------- from the previous layout

SKIP: {
    my $have = system("git -C '$root' cat-file -e '$OLD_LAYOUT^{commit}' 2>/dev/null") == 0;
    skip "no git history with $OLD_LAYOUT here (a shallow clone or an export)", 13 unless $have;

    my $old = tempdir(CLEANUP => 1);
    system("git -C '$root' archive $OLD_LAYOUT sql | tar -x -C '$old'") == 0
        or die 'git archive failed';
    ok(!-d "$old/sql/functions" && -f "$old/sql/006_answers.sql",
       "the old layout ($OLD_LAYOUT) is the one before sql/functions/");

    # A: old layout with data, then today's files
    my $a = scratch_db('t005_a');
    ($ok, $out) = migrate_db($a, sql_dir => "$old/sql");
    ok($ok, 'old layout: its own migrate.sh') or diag $out;
    my $answers_old = scenario($a);
    # as jsonb: the meaning is compared, not the key order (008 changed it)
    my $read = q{SELECT string_agg(concat_ws(' ', (billing.api_ledger(u, 200, NULL)).body::jsonb,
                                             (billing.api_balance(u)).body::jsonb), E'\n' ORDER BY u)
                   FROM (SELECT DISTINCT user_id AS u FROM billing.accounts) s};
    my $reads_before = query($a, $read);
    ($ok, $out) = migrate_db($a);
    ok($ok, 'old layout with data: today\'s migrate.sh') or diag $out;
    like($out, qr/^migration 007_/m, '... applies the new migration');
    is(query($a, $read), $reads_before, '... and what the old functions wrote reads the same');
    is(query($a, 'SELECT count(*) FROM billing.invariant_violations()'), 0, '... invariants hold');
    is(query($a, q{SELECT count(*) FROM pg_proc WHERE proname = '_stripe_event_apply'}), 0,
       '... and the wrapped _stripe_event_apply is gone');

    # B: old layout, then today's files, then the scenario
    my $b = scratch_db('t005_b');
    my ($ok1) = migrate_db($b, sql_dir => "$old/sql");
    my ($ok2, $out2) = migrate_db($b);
    ok($ok1 && $ok2, 'old layout without data, then today\'s migrate.sh') or diag $out2;

    # C: today's files only
    my $c = scratch_db('t005_c');
    ($ok, $out) = migrate_db($c);
    ok($ok, 'fresh database: today\'s migrate.sh') or diag $out;

    my $fresh_schema = schema_of($c);
    same_schema(schema_of($b), $fresh_schema, 'migrated from the old layout = fresh: schema, functions, grants');
    same_schema(schema_of($a), $fresh_schema, '... also with data written before');

    my $answers_fresh = scenario($c);
    is($answers_fresh, $answers_old, 'the new functions answer as the old ones did');
    is(scenario($b), $answers_fresh, 'migrated from the old layout = fresh: answers');
}

# ---------------------------------------------------------------- the SQL scripts

for my $script (sort glob("$root/t/sql/*.sql")) {
    my $res = `psql -X -q -v ON_ERROR_STOP=1 -d '$url' -f '$script' 2>&1`;
    is($?, 0, "t/sql/" . (split m{/}, $script)[-1]) or diag $res;
}

invariants_ok('invariants hold after the SQL scripts');
done_testing();
