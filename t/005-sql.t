# The database alone: migrations are idempotent, and every t/sql/*.sql
# script (ASSERT-based: pricing for every seeded model, idempotency, holds,
# Stripe events, the append-only trigger, least privilege) passes against
# the migrated schema as its owner.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use BillingTest;

my $root = $ENV{BILLING_ROOT} // '.';
my $url = $ENV{BILLING_TEST_ADMIN_URL} or plan skip_all => 'BILLING_TEST_ADMIN_URL not set';

my $out = `$root/sql/migrate.sh '$url' 2>&1`;
is($?, 0, 'migrate.sh runs again on a migrated database') or diag $out;
unlike($out, qr/applying/i, '... and applies nothing the second time') or diag $out;

my $v = psql_admin('SELECT max(version) FROM billing.schema_migrations');
chomp $v;
my @files = glob("$root/sql/[0-9][0-9][0-9]_*.sql");
is($v, scalar @files, 'every migration file is recorded in schema_migrations');

for my $script (sort glob("$root/t/sql/*.sql")) {
    my $res = `psql -X -q -v ON_ERROR_STOP=1 -d '$url' -f '$script' 2>&1`;
    is($?, 0, "t/sql/" . (split m{/}, $script)[-1]) or diag $res;
}

invariants_ok('invariants hold after the SQL scripts');
done_testing();
