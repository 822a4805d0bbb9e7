# Least privilege by default: the server's sessions run as billing_app even
# when the login in the URL owns the schema (as with the one DATABASE_URL of
# the deployment checklist), because every connection opens with SET ROLE
# billing_app. A login that may not is refused with a clear error and 503,
# until sql/migrate.sh --grant-runtime grants it. billing.invariant_violations()
# checks the role the module's sessions run as.
#
# What a pooled session runs as is seen from inside its own transaction: a
# trigger of this test's schema on the ledger rows of this test's user
# records the session's role (SET ROLE) and login while the module charges.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Time::HiRes qw(sleep time);
use BillingTest;

my $root = $ENV{BILLING_ROOT} // '.';
my $schema = "t017_$$";
my $login = "t017_login_$$";
my $password = 'pw-' . unique_id('t017');
my $user = unique_id('role');
my $Main = $$;

fund_user($user, 10_000_000);

psql_admin(<<"SQL");
CREATE SCHEMA $schema;
CREATE TABLE $schema.seen (role text, login text);
CREATE FUNCTION $schema.record() RETURNS trigger LANGUAGE plpgsql AS \$\$
BEGIN
    INSERT INTO $schema.seen VALUES (current_setting('role'), session_user);
    RETURN NULL;
END
\$\$;
CREATE TRIGGER ${schema}_record AFTER INSERT ON billing.ledger_entries
    FOR EACH ROW WHEN (NEW.user_id = @{[ sql_quote($user) ]})
    EXECUTE FUNCTION $schema.record();
CREATE ROLE $login LOGIN PASSWORD '$password';
SQL

END {
    if ($$ == $Main) {
        local $?;
        eval {
            psql_admin("DROP TRIGGER IF EXISTS ${schema}_record ON billing.ledger_entries;"
                       . "DROP SCHEMA IF EXISTS $schema CASCADE;");
        };
        eval { psql_admin("DROP ROLE IF EXISTS $login") };
    }
}

my $svc = mint_token(sub => 'ai-backend', scope => 'billing:usage');
my $owner_url = $ENV{BILLING_TEST_ADMIN_URL};
my $owner = psql_url($owner_url, 'SELECT session_user');
is(psql_admin("SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'billing'"), $owner,
   'the owner URL\'s login owns the schema');

# --- one owner URL: the module still charges as billing_app
my $port = free_port();
{
    local $ENV{TEST_NGINX_DATABASE_URL} = $owner_url;
    start_billing_nginx('owner', port => $port, workers => 1, pool => 'min=1 max=2');
}
my ($s, $h, $b) = http_request($port, reconcile_req($svc, { userId => $user, model => 'gpt-4o',
    inputTokens => 1000, outputTokens => 500, idempotencyKey => 'role-1' }));
is($s, 201, 'a reconcile through a pool whose URL is the owner\'s is charged');

my $seen = psql_admin("SELECT role || ' ' || login FROM $schema.seen");
my ($role, $seen_login) = split ' ', $seen;
is($seen_login, $owner, 'the pooled session logged in as the owner');
is($role, 'billing_app', '... and runs as billing_app');
my $runs_as = $role eq 'none' ? $seen_login : $role;     # no SET ROLE: its login
for my $priv (qw(UPDATE DELETE TRUNCATE)) {
    is(psql_admin("SELECT has_table_privilege('$runs_as', 'billing.ledger_entries', '$priv')"), 'f',
       "the role the session runs as cannot $priv the ledger");
}
is(psql_admin("SELECT has_table_privilege('$owner', 'billing.ledger_entries', 'UPDATE')"), 't',
   '... which its login could');
stop_nginx('owner');

# --- the invariant check looks at the role a module session runs as
my $probe = sub {
    my ($set_role) = @_;
    my $n = psql_url($owner_url, "SET application_name = 'ngx_billing';"
                                 . ($set_role ? 'SET ROLE billing_app;' : '')
                                 . "SELECT count(*) FROM billing.invariant_violations() "
                                 . "WHERE invariant = 1 AND detail LIKE '% on billing.ledger_entries'");
    return $n;
};
is($probe->(0), 3, 'a module session running as the owner is a violation (UPDATE, DELETE, TRUNCATE)');
is($probe->(1), 0, 'a module session running as billing_app is not');
is(psql_admin("SELECT count(*) FROM billing.invariant_violations() WHERE invariant = 1"), 0,
   'asked from elsewhere, billing_app is checked, and holds none of them');

# --- a login that may not SET ROLE billing_app: refused, clearly
(my $login_url = $ENV{TEST_NGINX_DATABASE_URL}) =~ s{//[^@]+@}{//$login:$password@};
$port = free_port();
{
    local $ENV{TEST_NGINX_DATABASE_URL} = $login_url;
    start_billing_nginx('nogrant', port => $port, workers => 1, pool => 'min=1 max=2',
                        timeouts => 'connect=2s query=2s');
}
($s, $h, $b) = http_request($port, 'GET /readyz');
is($s, 503, 'readyz: 503 while the login is not a member of billing_app');
is($b, '{"status":"not_ready","checks":{"database":"unavailable","migrations":"unknown"}}',
   '... not ready, the database unavailable');
($s, $h, $b) = http_request($port, user_get(mint_token(sub => $user), '/api/balance'));
is($s, 503, 'API calls: 503');
like($b, qr/"code":"database_unavailable"/, '... database_unavailable');
my $log = do { local $/; open my $fh, '<', nginx_prefix('nogrant') . '/logs/error.log'; <$fh> } // '';
like($log, qr/\[error\].*billing: database session setup failed: "SET ROLE billing_app": ERROR:  permission denied to set role "billing_app" \(the login must be a member of billing_app/,
     'the log says why, and what to do');
unlike($log, qr/\Q$password\E/, '... without the password');

# --- migrate.sh --grant-runtime grants it; the pool recovers by itself
{
    local $ENV{DATABASE_URL} = $login_url;
    is(system("$root/sql/migrate.sh --grant-runtime '$owner_url' >/dev/null"), 0,
       'migrate.sh --grant-runtime with the server\'s URL');
}
is(psql_admin("SELECT pg_has_role('$login', 'billing_app', 'MEMBER')"), 't',
   '... made its login a member of billing_app');
ok(wait_http_status($port, '/readyz', 200, 10), 'ready then, without a reload');
stop_nginx('nogrant');

invariants_ok();
done_testing();
