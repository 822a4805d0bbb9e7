# The outbox stays bounded (docs/spec.md §4.4; sql/functions/outbox.sql), on
# a scratch database of its own:
#   * a notification that keeps failing becomes a dead letter after
#     settings.outbox_max_attempts attempts, or once outbox_max_age has
#     passed since it was written (or re-driven); a due row whose attempts
#     are used up is buried instead of claimed; dead letters are neither
#     claimed nor in the backlog, and are counted;
#   * an operator's outbox_redrive() delivers them again;
#   * delivered rows go after settings.outbox_retention, a batch at a time,
#     oldest first; undelivered rows and dead letters are never pruned;
#   * through nginx: billing_outbox_dead_letters shows a dead letter, a
#     re-drive delivers it, and the delivery rounds prune.
use strict;
use warnings;
use lib 't/lib', 'dev/lib';
use Test::More;
use BillingTest;
use StripeStandIn;

$ENV{BILLING_TEST_ADMIN_URL} or plan skip_all => 'BILLING_TEST_ADMIN_URL not set';

my $url = migrated_scratch_db('t019');

sub sq { psql_url($url, $_[0]) }
sub row { [split /\|/, sq($_[0])] }

is(sq('SELECT outbox_retention, outbox_max_attempts, outbox_max_age FROM billing.settings'),
   '7 days|100|3 days', 'defaults: delivered rows kept 7 days; dead after 100 attempts or 3 days');

# a notification of the test's own, due now
sub emit {
    my ($type, %o) = @_;
    return sq(qq{INSERT INTO billing.outbox (type, payload, next_attempt_at, created_at)
                 VALUES ('$type', '{"x":1}', now() - interval '1 second',
                         now() - interval '$o{age}') RETURNING id}) if $o{age};
    return sq(qq{INSERT INTO billing.outbox (type, payload, next_attempt_at)
                 VALUES ('$type', '{"x":1}', now() - interval '1 second') RETURNING id});
}
sub claim { [map { (split /\|/)[0] } split /\n/, sq('SELECT id FROM billing.outbox_claim(100, 30)')] }
sub due_now { sq("UPDATE billing.outbox SET next_attempt_at = now() - interval '1 second' WHERE id = $_[0]") }
sub state_of { row("SELECT attempts, dead_at IS NOT NULL, next_attempt_at = 'infinity', coalesce(last_error, '') FROM billing.outbox WHERE id = $_[0]") }

# ------------------------------------------------------------ dead letters

sq('UPDATE billing.settings SET outbox_max_attempts = 2');

my $spent = emit('test.attempts');
is_deeply(claim(), [$spent], 'a due notification is claimed');
is(sq("SELECT billing.outbox_retry($spent, 'HTTP 500')"), 't', 'its first attempt failed');
is_deeply(state_of($spent), [1, 'f', 'f', 'HTTP 500'], '... it waits for the next one');
due_now($spent);
is_deeply(claim(), [$spent], 'claimed again');
is(sq("SELECT billing.outbox_retry($spent, 'HTTP 502')"), 't', 'the second attempt failed too');
is_deeply(state_of($spent), [2, 't', 't', 'HTTP 502'], 'two attempts of two: a dead letter, never due again');
due_now($spent);
is_deeply(claim(), [], 'a dead letter is not claimed, even when its time has come');
sq("UPDATE billing.outbox SET next_attempt_at = 'infinity' WHERE id = $spent");
is(sq("SELECT billing.outbox_retry($spent, 'again')"), 'f', 'nor retried');

my $old = emit('test.age', age => '4 days');
is_deeply(claim(), [$old], 'a notification written 4 days ago is claimed');
is(sq("SELECT billing.outbox_retry($old, 'timeout')"), 't', 'its attempt fails');
is_deeply(state_of($old), [1, 't', 't', 'timeout'], 'older than outbox_max_age (3 days): a dead letter');

my $crash = emit('test.crash');
sq("UPDATE billing.outbox SET attempts = 2 WHERE id = $crash");
is_deeply(claim(), [], 'a due row whose attempts are used up (never recorded) is not claimed');
is_deeply(state_of($crash), [2, 't', 't', 'attempts used up'], '... it is buried');

my $live = emit('test.live');
is(sq('SELECT billing.outbox_backlog()'), 1, 'the backlog counts only what will be delivered');
is(sq('SELECT billing.outbox_dead_letters()'), 3, 'the dead letters are counted');
is(sq('SELECT backlog || \'|\' || dead FROM billing.outbox_maintain(10)'), '1|3', 'outbox_maintain answers both');

# ------------------------------------------------------------ re-drive

is(sq("SELECT billing.outbox_redrive(ARRAY[$spent]::bigint[])"), 1, 'a re-drive of one dead letter');
is_deeply(state_of($spent), [0, 'f', 'f', 'HTTP 502'], '... fresh attempts, due again, its last error kept');
is(sq('SELECT billing.outbox_redrive()'), 2, 'a re-drive of all the others');
is_deeply([sort { $a <=> $b } @{ claim() }], [sort { $a <=> $b } $spent, $old, $crash, $live],
          'all four are claimed');
is(sq("SELECT billing.outbox_retry($old, 'once more')"), 't', 'the old one fails again');
is_deeply(state_of($old), [1, 'f', 'f', 'once more'], 'its age counts from the re-drive: not dead yet');
sq("UPDATE billing.outbox SET delivered_at = now() WHERE delivered_at IS NULL");

# ------------------------------------------------------------ pruning

sq('TRUNCATE billing.outbox');
my $dead = emit('test.dead-old', age => '30 days');
sq("UPDATE billing.outbox SET dead_at = now() - interval '20 days', next_attempt_at = 'infinity' WHERE id = $dead");
my $waiting = emit('test.waiting-old', age => '30 days');
sq(q{INSERT INTO billing.outbox (type, payload, created_at, delivered_at)
     SELECT 'test.old', '{}', now() - interval '9 days', now() - interval '8 days' FROM generate_series(1, 1200)});
sq(q{INSERT INTO billing.outbox (type, payload, created_at, delivered_at)
     SELECT 'test.recent', '{}', now() - interval '2 days', now() - interval '1 day' FROM generate_series(1, 5)});
is_deeply([map { sq('SELECT billing.outbox_prune(500)') } 1 .. 4], [500, 500, 200, 0],
          'rows delivered 8 days ago go in batches of 500; then nothing is left to prune');
is(sq(q{SELECT string_agg(type || ':' || n, ' ' ORDER BY type)
          FROM (SELECT type, count(*) AS n FROM billing.outbox GROUP BY type) t}),
   'test.dead-old:1 test.recent:5 test.waiting-old:1',
   'rows delivered within the retention, dead letters and undelivered rows stay');
sq(q{UPDATE billing.settings SET outbox_retention = '12 hours'});
is(sq('SELECT billing.outbox_prune(500)'), 5, 'a shorter retention prunes more');

# ------------------------------------------------------------ who may do what

is(sq(q{SET ROLE billing_app; SELECT pruned FROM billing.outbox_maintain(10)}), 0,
   'billing_app runs the delivery rounds\' maintenance');
ok(!eval { sq(q{SET ROLE billing_app; SELECT billing.outbox_redrive()}); 1 } && $@ =~ /permission denied/,
   'billing_app may not re-drive dead letters');

# ------------------------------------------------------------ through nginx

sq('TRUNCATE billing.outbox');
sq(q{UPDATE billing.settings SET outbox_retention = '7 days', outbox_max_attempts = 2});
my $secret = 'notify-secret-019';
my $recv = StripeStandIn->start(mode => 'notify', secret => $secret);
$recv->control(fail => 1000, fail_status => 500);
my $rt_url = database_url($ENV{TEST_NGINX_DATABASE_URL}, database_name($url));
my $port = free_port();
my $prefix = start_nginx('outbox019', qq{
    billing_database_url $rt_url;
    billing_notify_url @{[ $recv->url ]}/hooks;
    billing_notify_secret $secret;
    billing_notify_interval 200ms;
    billing_audit_interval 0;
    server {
        listen 127.0.0.1:$port;
        location = /metrics { billing metrics; }
    }
}, workers => 2);

# a gauge of the instance; -1 when /metrics does not show it
sub gauge { (metrics_at($port) // {})->{$_[0]} // -1 }

my $n1 = sq(q{SELECT count(*) FROM (SELECT billing._emit('test.notify', '{"k":"v"}'::jsonb)) e});
my $id = sq(q{SELECT id FROM billing.outbox WHERE type = 'test.notify'});
ok(wait_until(sub { gauge('billing_outbox_dead_letters') == 1 }, 20),
   'a receiver that keeps failing: after 2 attempts the notification is a dead letter (gauge 1)');
is(scalar(grep { ($_->{body} // '') =~ /test\.notify/ } $recv->requests), 2, '... attempted exactly twice');
is(gauge('billing_outbox_backlog'), 0, '... and no longer in the backlog');

$recv->reset;
is(sq('SELECT billing.outbox_redrive()'), 1, 'the receiver is fixed; the operator re-drives');
ok(wait_until(sub { sq("SELECT delivered_at IS NOT NULL FROM billing.outbox WHERE id = $id") eq 't' }, 10),
   'the dead letter is delivered');
ok(wait_until(sub { gauge('billing_outbox_dead_letters') == 0 }, 10), 'the gauge returns to 0');
my @got = grep { ($_->{body} // '') =~ /test\.notify/ } $recv->requests;
ok(@got == 1 && $got[0]{signature_ok}, 'one signed delivery after the re-drive');

sq(q{UPDATE billing.settings SET outbox_retention = '0 seconds'});
ok(wait_until(sub { sq('SELECT count(*) FROM billing.outbox') eq '0' }, 10),
   'with a retention of 0 the delivery rounds prune the delivered row');

stop_nginx('outbox019');
$recv->stop;
my $log = do { local $/; open my $f, '<', "$prefix/logs/error.log"; <$f> } // '';
like($log, qr/outbox: notification \S+ not delivered: HTTP 500/, 'the failures are logged');
unlike($log, qr/\Q$secret\E/, 'the secret is not');
done_testing();
