# Group commit (billing_batch, docs/architecture.md "Group commit"):
# reconciles, holds and balance reads waiting for a pooled connection go
# to the database as one statement, and each is answered exactly as it
# would be alone.
#
# How a batch is made to happen, deterministically: the pool has ONE
# connection; a lock holder (psql, in a transaction) locks user X's account
# row; the first request, X's, takes the connection and waits for that
# lock; the others are sent one by one, each once the previous one waits in
# the pool's queue (the billing_db_pool_waiters gauge), so their arrival
# order is known; then the lock holder commits: X's request completes, the
# connection frees up, and the queued requests leave as batches of at most
# max. No sleeps, no timing in any assertion: every wait polls a state.
use strict;
use warnings;
use lib 't/lib';
use Test::Nginx::Socket 'no_plan';
use BillingTest;
use IO::Socket::INET ();
use IO::Handle ();
use File::Spec ();
use JSON::PP ();
use Time::HiRes qw(time);

our $U = "bat-" . time() . "-$$";
our $HttpConfig = block_http_config(pool => 'min=1 max=1');
our $Config = q{
    location = /metrics { billing metrics; }
    location = /api/usage/reconcile { billing reconcile; }
};

our $Svc = service_token();
my $Json = JSON::PP->new->canonical;

sub user { "$U-$_[0]" }

# a reconcile of gpt-4o 1000/500 (7500 micros) for user($id)
sub rec { my ($id, $key, %o) = @_; return gpt4o_reconcile_req($::Svc, user($id), $key, %o) }

# GET /api/balance as user($id)
sub bal { my ($id) = @_; return user_get(mint_token(sub => user($id)), '/api/balance') }

sub port { $ENV{TEST_NGINX_SERVER_PORT} }

sub metrics { metrics_at(port()) // die "GET /metrics did not answer 200\n" }

sub metric { my ($name) = @_; return metrics()->{$name} // 0 }

# polls until $cond is true; dies (failing the block) after a generous deadline
sub wait_for {
    my ($what, $cond) = @_;
    wait_until($cond, 60) or die "036-batch: waited in vain for $what\n";
}

# A psql session that runs $sql in an open transaction; release_lock()
# commits it. Returns once $sql has run, unless nowait => 1 (a lock
# request that is to queue behind another).
sub psql_session {
    my ($sql, %o) = @_;
    my $flag = File::Spec->tmpdir . "/billing-036-locked-$$-" . int(rand 1e9);
    unlink $flag;
    open(my $ph, '|-', 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-o', '/dev/null',
         '-d', $ENV{BILLING_TEST_ADMIN_URL}) or die "psql: $!";
    $ph->autoflush(1);
    print $ph "BEGIN;\n$sql\n" . ($o{nowait} ? '' : "\\! touch $flag\n");
    return $ph if $o{nowait};
    wait_for('the lock holder', sub { -e $flag });
    unlink $flag;
    return $ph;
}

# A psql session holding the account rows of @users locked (FOR UPDATE) in
# an open transaction; release_lock() commits it.
sub hold_lock {
    my (@users) = @_;
    my $list = join ', ', map { sql_quote(user($_)) } @users;
    return psql_session("SELECT user_id FROM billing.accounts WHERE user_id IN ($list) FOR UPDATE;");
}

sub release_lock {
    my ($ph) = @_;
    print $ph "COMMIT;\n";
    close $ph;
}

# sessions of the module's pool waiting for a lock, whose statement matches
sub lock_waiters {
    my ($like) = @_;
    return psql_admin("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'ngx_billing' "
                      . "AND wait_event_type = 'Lock' AND query LIKE " . sql_quote($like)) + 0;
}

sub send_req {
    my ($req) = @_;
    my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => port(), Proto => 'tcp',
                                      Timeout => 10) or die "connect: $!";
    my $data = BillingTest::_build_request($req);
    syswrite($sock, $data) == length $data or die "short write";
    return $sock;
}

sub read_answer {
    my ($sock) = @_;
    local $SIG{ALRM} = sub { die "036-batch: no answer in time\n" };
    alarm 60;
    my $raw = do { local $/; <$sock> };
    alarm 0;
    close $sock;
    my ($s, $h, $b) = BillingTest::_parse_response($raw);
    return [$s, $h, $b];
}

# The scenario of the file header: $first (X's request) blocks on the lock
# of X's account (user($lock)), @rest queue in order behind it; $before runs once they
# all wait (with the lock still held), $after once X's lock is released.
# Answers in the order of ($first, @rest), each checked against
# docs/openapi.yaml.
sub queued {
    my (%o) = @_;
    my @rest = @{ $o{rest} };
    my $ph = hold_lock($o{lock});
    my @socks = (send_req($o{first}));
    wait_for('the first request to wait for the lock', sub { lock_waiters('%api_reconcile(%') == 1 });
    for my $i (0 .. $#rest) {
        push @socks, send_req($rest[$i]);
        wait_for("request " . ($i + 2) . " in the queue",
                 sub { metric('billing_db_pool_waiters') == $i + 1 });
    }
    $o{before}->() if $o{before};
    release_lock($ph);
    $o{after}->() if $o{after};
    my @answers = map { read_answer($_) } @socks;
    BillingTest::_check_answers([$o{first}, @rest], \@answers);
    return @answers;
}

# queued(%o) while the runtime role may not execute $fn (the batch function:
# the server then refuses the batch as a whole); EXECUTE is granted back
# whatever happens
sub queued_revoked {
    my ($fn, %o) = @_;
    my @answers = eval {
        queued(%o, before => sub { psql_admin("REVOKE EXECUTE ON FUNCTION $fn FROM billing_app") });
    };
    my $err = $@;
    psql_admin("GRANT EXECUTE ON FUNCTION $fn TO billing_app");
    die $err if $err;
    return @answers;
}

sub body_of { my $j = eval { $Json->decode($_[0][2]) }; return $j // {} }

# [status, replayed header, code or chargedMicros] of an answer
sub outcome {
    my ($a) = @_;
    my $j = body_of($a);
    return [$a->[0], ($a->[1]{'idempotent-replayed'} // ''), $j->{code} // $j->{chargedMicros}];
}

sub usage_keys {
    my ($id) = @_;
    return psql_admin("SELECT coalesce(string_agg(idempotency_key, ' ' ORDER BY id), '') "
                      . "FROM billing.ledger_entries WHERE type = 'usage' AND user_id = "
                      . sql_quote(user($id)));
}

sub hold_for {
    my ($id, $micros) = @_;
    my $body = psql_admin("SELECT (billing.api_hold_create(" . sql_quote(user($id))
                          . ", $micros, 'hold-1', 600)).body");
    return $Json->decode($body)->{holdId};
}

add_response_body_check(\&BillingTest::after_requests_check);
run_tests();

invariants_ok('invariants hold after the group commit tests');

__DATA__

=== TEST 1: one batch of 8 with every outcome: each answered as it would be alone, in arrival order per user
--- http_config eval: $::HttpConfig . "billing_batch max=8;"
--- config eval: $::Config
--- init
main::fund_user(main::user($_), 1_000_000) for qw(x1 a c d);
main::fund_user(main::user('b'), 5_000);
--- request
GET /metrics
--- error_code: 200
--- after_requests
my $hold = main::hold_for('c', 20_000);
my @a = main::queued(lock => 'x1', first => main::rec('x1', 'k-1'), rest => [
    main::rec('a', 'k-1'),
    main::rec('a', 'k-1'),                          # same key, same body: a replay
    main::rec('a', 'k"2\\{,}'),                     # a key PostgreSQL's array syntax must not split
    main::rec('a', 'k"2\\{,}', outputTokens => 501), # same key, another body: 409
    main::rec('b', 'k-1', model => 'no-such-model'), # 422
    main::rec('b', 'k-2'),                          # 7500 > 5000: 402
    main::rec('c', 'k-1', holdId => $hold),         # captures the hold
    main::rec('d', 'k-1'),
]);
is_deeply([map { main::outcome($_) } @a], [
    [201, '', 7500],
    [201, '', 7500], [201, 'true', 7500], [201, '', 7500], [409, '', 'idempotency_key_reused'],
    [422, '', 'unknown_model'], [402, '', 'insufficient_credits'],
    [201, '', 7500], [201, '', 7500],
], 'every item answered as alone, in arrival order');
is(main::body_of($a[2])->{entryId}, main::body_of($a[1])->{entryId}, 'the replay names the same entry');
is(main::body_of($a[1])->{balanceMicros}, 992_500, 'the first charge of a');
is(main::body_of($a[3])->{balanceMicros}, 985_000, 'the second charge of a sees the first');
my $m = main::metrics();
is($m->{billing_db_batches_total}, 1, 'one batch statement');
is($m->{billing_db_batched_requests_total}, 8, 'carrying the 8 queued requests');
is($m->{billing_db_batch_retries_total}, 0, 'none sent again');
ledger_is(main::user('a'), 3, 985_000, 'a: two charges');
is(main::usage_keys('a'), 'k-1 k"2\\{,}', 'a: the keys stored byte for byte');
ledger_is(main::user('b'), 1, 5_000, 'b: nothing written for the 422 and the 402');
ledger_is(main::user('c'), 2, 992_500, 'c: charged');
is(psql_admin("SELECT status FROM billing.holds WHERE id = '$hold'"), 'captured', 'c: the hold captured');
ledger_is(main::user('d'), 2, 992_500, 'd: charged');
ledger_is(main::user('x1'), 2, 992_500, 'x: charged once its lock was free');
--- no_error_log
[error]



=== TEST 2: ten queued with max=8: a batch of 8, then one of the 2 left
--- http_config eval: $::HttpConfig . "billing_batch max=8;"
--- config eval: $::Config
--- init
main::fund_user(main::user($_), 1_000_000) for qw(x2 e);
--- request
GET /metrics
--- error_code: 200
--- after_requests
my @a = main::queued(lock => 'x2', first => main::rec('x2', 'k-1'),
                     rest => [map { main::rec('e', "k-$_") } 1 .. 10]);
is_deeply([map { $_->[0] } @a], [(201) x 11], 'all charged');
is_deeply([map { main::body_of($_)->{balanceMicros} } @a[1 .. 10]],
          [map { 1_000_000 - 7_500 * $_ } 1 .. 10], 'in arrival order');
my $m = main::metrics();
is($m->{billing_db_batches_total}, 2, 'two batch statements');
is($m->{billing_db_batched_requests_total}, 10, 'carrying the 10');
ledger_is(main::user('e'), 11, 925_000, 'e: ten charges');
--- no_error_log
[error]



=== TEST 3: billing_batch max=0: the same queue goes one by one
--- http_config eval: $::HttpConfig . "billing_batch max=0;"
--- config eval: $::Config
--- init
main::fund_user(main::user($_), 1_000_000) for qw(x3 f);
--- request
GET /metrics
--- error_code: 200
--- after_requests
my @a = main::queued(lock => 'x3', first => main::rec('x3', 'k-1'), rest => [
    main::rec('f', 'k-1'), main::rec('f', 'k-1'), main::rec('f', 'k-1', outputTokens => 501)]);
is_deeply([map { main::outcome($_) } @a],
          [[201, '', 7500], [201, '', 7500], [201, 'true', 7500], [409, '', 'idempotency_key_reused']],
          'the same answers');
is(main::metric('billing_db_batches_total'), 0, 'no batch');
ledger_is(main::user('f'), 2, 992_500, 'f: charged once');
--- no_error_log
[error]



=== TEST 4: a batch the database refuses as a whole: every item sent again alone, answered as alone
--- http_config eval: $::HttpConfig . "billing_batch max=8;"
--- config eval: $::Config
--- init
main::fund_user(main::user($_), 1_000_000) for qw(x4 g);
main::fund_user(main::user('h'), 5_000);
--- request
GET /metrics
--- error_code: 200
--- after_requests
# the runtime role loses the batch function: permission denied
my @a = main::queued_revoked('billing.api_reconcile_batch(text[], text[], bigint[], bigint[], text[], uuid[])',
    lock => 'x4', first => main::rec('x4', 'k-1'), rest => [
        main::rec('g', 'k-1'), main::rec('g', 'k-1'), main::rec('g', 'k-1', outputTokens => 501),
        main::rec('h', 'k-1'), main::rec('g', 'k-2', model => 'no-such-model')]);
is_deeply([map { main::outcome($_) } @a], [
    [201, '', 7500],
    [201, '', 7500], [201, 'true', 7500], [409, '', 'idempotency_key_reused'],
    [402, '', 'insufficient_credits'], [422, '', 'unknown_model'],
], 'every item answered as alone, in arrival order');
my $m = main::metrics();
is($m->{billing_db_batches_total}, 1, 'the batch was tried');
is($m->{billing_db_batch_retries_total}, 5, 'its 5 requests were sent again alone');
ledger_is(main::user('g'), 2, 992_500, 'g: charged once');
ledger_is(main::user('h'), 1, 5_000, 'h: nothing written');
--- error_log
permission denied for function api_reconcile_batch
a batch of 5 requests failed as a whole, 5 of them are sent again one by one



=== TEST 5: the connection lost while a batch is out: every item is database_outcome_unknown, nothing committed, a retry tells
--- http_config eval: $::HttpConfig . "billing_batch max=8;"
--- config eval: $::Config
--- init
main::fund_user(main::user($_), 1_000_000) for qw(x5 i z);
--- request
GET /metrics
--- error_code: 200
--- after_requests
# z's account is locked too: the batch charges i, then waits for z's lock;
# then its backend is terminated
my @rest = (main::rec('i', 'k-1'), main::rec('z', 'k-1'), main::rec('i', 'k-2'));
my $z = main::hold_lock('z');
my @a = main::queued(lock => 'x5', first => main::rec('x5', 'k-1'), rest => \@rest,
    after => sub {
        main::wait_for('the batch to wait for z', sub { main::lock_waiters('%api_reconcile_batch%') == 1 });
        psql_admin("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                   . "WHERE application_name = 'ngx_billing' AND query LIKE '%api_reconcile_batch%'");
        main::release_lock($z);
    });
is_deeply([map { main::outcome($_) } @a],
          [[201, '', 7500], map { [503, '', 'database_outcome_unknown'] } 1 .. 3],
          'x charged; each batched item: outcome unknown');
ledger_is(main::user('i'), 1, 1_000_000, 'i: the batch rolled back');
ledger_is(main::user('z'), 1, 1_000_000, 'z: the batch rolled back');
# the retry with the same keys: the outcome (here: not written, so now charged)
my @r = map { [http_request(main::port(), $_)] } @rest;
is_deeply([map { main::outcome($_) } @r], [map { [201, '', 7500] } 1 .. 3], 'the retries charge');
ledger_is(main::user('i'), 3, 985_000, 'i: charged twice');
--- error_log
database connection lost



=== TEST 9: holds queued together: one batch, each answered as alone
--- http_config eval: $::HttpConfig . "billing_batch max=8;"
--- config eval: $::Config . "location /api/usage/holds { billing holds; }"
--- init
main::fund_user(main::user('x9'), 1_000_000);
main::fund_user(main::user($_), 10_000) for qw(j k);
--- request
GET /metrics
--- error_code: 200
--- after_requests
sub hold { my ($id, $key, $micros) = @_;
           hold_req($::Svc, { userId => main::user($id), amountMicros => $micros,
                              idempotencyKey => $key, ttlSeconds => 600 }) }
my @a = main::queued(lock => 'x9', first => main::rec('x9', 'k-1'), rest => [
    hold('j', 'h-1', 6_000), hold('j', 'h-1', 6_000), hold('j', 'h-2', 6_000),
    hold('j', 'h-1', 5_000), hold('k', 'h-1', 1_000)]);
is_deeply([map { [$_->[0], $_->[1]{'idempotent-replayed'} // '', main::body_of($_)->{code} // ''] } @a], [
    [201, '', ''],
    [201, '', ''], [201, 'true', ''], [402, '', 'insufficient_credits'], [409, '', 'idempotency_key_reused'],
    [201, '', ''],
], 'every hold answered as alone, in arrival order');
is(main::body_of($a[2])->{holdId}, main::body_of($a[1])->{holdId}, 'the replay names the same hold');
is(main::body_of($a[1])->{availableMicros}, 4_000, 'j: 4000 left available');
my $m = main::metrics();
is($m->{billing_db_batches_total}, 1, 'one batch statement');
is($m->{billing_db_batched_requests_total}, 5, 'carrying the 5 holds');
is(psql_admin("SELECT count(*) FROM billing.holds WHERE user_id = " . sql_quote(main::user('j'))), 1,
   'j: one hold');
is(psql_admin("SELECT count(*) FROM billing.holds WHERE user_id = " . sql_quote(main::user('k'))), 1,
   'k: one hold');
--- no_error_log
[error]



=== TEST 10: balance reads queued together: one statement, each the balance of its own caller
--- http_config eval: $::HttpConfig . "billing_batch max=8;"
--- config eval: $::Config . "location = /api/balance { billing balance; }"
--- init
main::fund_user(main::user('x10'), 1_000_000);
main::fund_user(main::user('l'), 20_000);
main::fund_user(main::user('m'), 30_000);
--- request
GET /metrics
--- error_code: 200
--- after_requests
my $hold = main::hold_for('m', 5_000);
my @a = main::queued(lock => 'x10', first => main::rec('x10', 'k-1'),
                     rest => [main::bal('l'), main::bal('m'), main::bal('n'), main::bal('l')]);
is_deeply([map { my $j = main::body_of($_);
                 [$_->[0], $j->{userId}, $j->{balanceMicros}, $j->{heldMicros}, $j->{availableMicros}] } @a[1 .. 4]],
          [[200, main::user('l'), 20_000, 0, 20_000], [200, main::user('m'), 30_000, 5_000, 25_000],
           [200, main::user('n'), 0, 0, 0], [200, main::user('l'), 20_000, 0, 20_000]],
          'each caller its own balance, held and available');
my $m = main::metrics();
is($m->{billing_db_batches_total}, 1, 'one batch statement');
is($m->{billing_db_batched_requests_total}, 4, 'carrying the 4 reads');
--- no_error_log
[error]



=== TEST 11: a batch of reads the database refuses: each read sent again alone, answered
--- http_config eval: $::HttpConfig . "billing_batch max=8;"
--- config eval: $::Config . "location = /api/balance { billing balance; }"
--- init
main::fund_user(main::user('x11'), 1_000_000);
main::fund_user(main::user('o'), 40_000);
--- request
GET /metrics
--- error_code: 200
--- after_requests
my @a = main::queued_revoked('billing.api_balance_batch(text[])',
    lock => 'x11', first => main::rec('x11', 'k-1'), rest => [main::bal('o'), main::bal('p')]);
is_deeply([map { [$_->[0], main::body_of($_)->{balanceMicros}] } @a[1 .. 2]], [[200, 40_000], [200, 0]],
          'both answered as alone');
is(main::metric('billing_db_batch_retries_total'), 2, 'both sent again alone');
--- error_log
permission denied for function api_balance_batch



=== TEST 12: a batch of reads whose connection is lost is run again elsewhere, like a single read
--- http_config eval: $::HttpConfig . "billing_batch max=8;"
--- config eval: $::Config . "location = /api/balance { billing balance; }"
--- init
main::fund_user(main::user('q'), 50_000);
main::fund_user(main::user('r'), 60_000);
--- request
GET /metrics
--- error_code: 200
--- after_requests
# Reads wait only for table locks: session A holds billing.holds, the first
# read takes the pool's one connection and waits for A; two more queue.
# Session B asks for the same lock behind them, so it is granted the moment
# the first read ends, and the batch of the two queued reads waits for B.
# Its backend is terminated there; the pool runs the batch again on a new
# connection, which answers once B commits.
my $lock = 'LOCK TABLE billing.holds IN ACCESS EXCLUSIVE MODE;';
my @reqs = (main::bal('q'), main::bal('r'), main::bal('q'));
my $a = main::psql_session($lock);
my @socks = (main::send_req($reqs[0]));
main::wait_for('the first read to wait', sub { main::lock_waiters('%api_balance(%') == 1 });
for my $i (1, 2) {
    push @socks, main::send_req($reqs[$i]);
    main::wait_for("read $i in the queue", sub { main::metric('billing_db_pool_waiters') == $i });
}
my $b = main::psql_session($lock, nowait => 1);
main::wait_for('B to wait for the lock', sub {
    psql_admin("SELECT count(*) FROM pg_locks WHERE relation = 'billing.holds'::regclass "
               . "AND mode = 'AccessExclusiveLock' AND NOT granted") == 1 });
main::release_lock($a);
main::wait_for('the batch to wait for B', sub { main::lock_waiters('%api_balance_batch%') == 1 });
my $batch = "application_name = 'ngx_billing' AND query LIKE '%api_balance_batch%'";
my $pid = psql_admin("SELECT pid FROM pg_stat_activity WHERE $batch");
psql_admin("SELECT pg_terminate_backend($pid)");
main::wait_for('the batch to wait again, on a new connection', sub {
    psql_admin("SELECT count(*) FROM pg_stat_activity WHERE $batch AND wait_event_type = 'Lock' "
               . "AND pid <> $pid") == 1 });
main::release_lock($b);
my @a = map { main::read_answer($_) } @socks;
BillingTest::_check_answers(\@reqs, \@a);
is_deeply([map { [$_->[0], main::body_of($_)->{balanceMicros}] } @a], [[200, 50_000], [200, 60_000], [200, 50_000]],
          'every read answered: the batch ran again, no 503');
is(main::metric('billing_db_batches_total'), 1, 'one batch statement');
--- error_log
database connection lost



=== TEST 6: billing_batch takes max=0..100 once
--- http_config
billing_batch max=101;
--- config
--- must_die
--- error_log
invalid value "max=101" (max=0..100)



=== TEST 7: billing_batch without max= is refused
--- http_config
billing_batch 8;
--- config
--- must_die
--- error_log
invalid parameter "8"



=== TEST 8: billing_batch twice is refused
--- http_config
billing_batch max=4;
billing_batch max=8;
--- config
--- must_die
--- error_log
"billing_batch" directive is duplicate
