# An error that arrives after the rows decides the request's outcome: a
# statement's transaction may fail at commit (a deferred constraint, a
# serialization failure) after the function's row went out, and then it
# wrote nothing. The server sends the row, then the error; the answer must
# be the error (5xx), never the row's 2xx: the AI backend would think the
# usage was charged, and Stripe would never retry a webhook.
#
# The failure at commit is a constraint trigger deferred to commit, in a
# schema of this test's own, on the ledger's rows of this test's users only:
# the real endpoints, the real functions and the pool's real result loop.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use BillingTest;

my $pid = $$;
my $schema = "t016_$pid";
my $user = unique_id('commit-fail');
my $buyer = unique_id('commit-buyer');
my $Main = $$;

fund_user($user, 10_000_000);

psql_admin(<<"SQL");
CREATE SCHEMA $schema;
CREATE FUNCTION $schema.refuse() RETURNS trigger LANGUAGE plpgsql AS \$\$
BEGIN
    RAISE EXCEPTION 'refused at commit by t/016' USING ERRCODE = 'P0001';
END
\$\$;
CREATE CONSTRAINT TRIGGER ${schema}_refuse AFTER INSERT ON billing.ledger_entries
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    WHEN (NEW.user_id IN (@{[ sql_quote($user) ]}, @{[ sql_quote($buyer) ]}))
    EXECUTE FUNCTION $schema.refuse();
SQL

sub drop_trigger {
    psql_admin("DROP TRIGGER IF EXISTS ${schema}_refuse ON billing.ledger_entries");
}

END {
    if ($$ == $Main) {
        local $?;
        eval { drop_trigger(); psql_admin("DROP SCHEMA IF EXISTS $schema CASCADE") };
    }
}

my $port = free_port();
my (undef, $webhooks) = start_billing_nginx('commit', port => $port, workers => 1,
                                            webhook => 1, pool => 'min=1 max=2');
$webhooks or BAIL_OUT('this build has no webhook endpoint');

my $svc = mint_token(sub => 'ai-backend', scope => 'billing:usage');
my %usage = (userId => $user, model => 'gpt-4o', inputTokens => 1000, outputTokens => 500,
             idempotencyKey => 'commit-1');

# --- reconcile: the row says 201, the commit fails
my ($s, $h, $b) = http_request($port, reconcile_req($svc, \%usage));
is($s, 500, 'a reconcile whose transaction fails at commit is not 201');
like($h->{'content-type'} // '', qr{^application/problem\+json}, '... it is a problem');
like($b, qr/"code":"database_error"/, '... saying the database refused it');
is(entries_of($user), 1, 'nothing was written (only the funding entry)');
is(balance_of($user), 10_000_000, 'the balance is unchanged');

# --- a Stripe webhook: the row says 200 {"received":true}, the commit fails
my $purchase = purchase_insert($buyer, 5_000_000);
my $event = payment_event(purchase => $purchase);
($s, $h, $b) = http_request($port, webhook_req('whsec_test', $event));
is($s, 500, 'a webhook whose transaction fails at commit is not 200 (Stripe retries it)');
is(entries_of($buyer), 0, 'nothing was credited');
my $status = psql_admin('SELECT status FROM billing.purchases WHERE id = ' . sql_quote($purchase));
is($status, 'pending', 'the purchase is still pending');

my $log = do { local $/; open my $fh, '<', nginx_prefix('commit') . '/logs/error.log'; <$fh> } // '';
like($log, qr/billing: query failed: ERROR:  refused at commit by t\/016/, 'the error is logged');

# --- the same requests once the commit can succeed: written now, not replays
drop_trigger();
($s, $h, $b) = http_request($port, reconcile_req($svc, \%usage));
is($s, 201, 'the retried reconcile is charged');
ok(!$h->{'idempotent-replayed'}, '... as a first write, not a replay');
is(entries_of($user), 2, '... once');
($s, $h, $b) = http_request($port, webhook_req('whsec_test', $event));
is($s, 200, 'the retried webhook is accepted');
is(entries_of($buyer), 1, '... and credits once');

stop_nginx('commit');
invariants_ok();
done_testing();
