# Stripe disputes through the webhook (docs/spec.md §4.2, §3.4-5): a
# charge.dispute.created debits the disputed share of the purchase's credits
# once per dispute id, even into a debt; a charge.dispute.closed with status
# won credits it back once; every order and repetition of these events ends
# in the same state (debited unless won), duplicates of an event are
# duplicates; a debt refuses usage until the balance is positive again.
# t/060-chaos.t (g) delivers them as a concurrent storm on two instances.
use strict;
use warnings;
use lib 't/lib';
use Test::Nginx::Socket 'no_plan';
use BillingTest;
use JSON::PP ();

# Blocks run shuffled. Each has its own user, user('tN'), and purchase,
# paid when the file is read (before the blocks run), and its own events,
# signed then: the configured tolerance leaves a margin far beyond the run
# time of the file.
our $Run = join '', map { ('a' .. 'z')[rand 26] } 1 .. 8;
our $Secret = 'whsec_test_disputes_41';
our $J = JSON::PP->new->canonical;
our (%P, %R);

our $HttpConfig = qq{
    billing_database_url $ENV{TEST_NGINX_DATABASE_URL};
    billing_jwt_key file:$ENV{TEST_NGINX_JWT_PUBLIC_KEY_FILE};
    billing_jwt_issuer https://student-pilot.replit.app;
    billing_jwt_audience https://billing.scholarlink.app;
    billing_stripe_webhook_secret $Secret;
    billing_stripe_webhook_tolerance 2h;
};
our $Config = q{
    location = /webhooks/stripe { client_max_body_size 1m; billing webhook; }
    location = /api/usage/reconcile { billing reconcile; }
    location = /api/ledger { billing ledger; }
    location = /metrics { billing metrics; }
};

sub user { "user-041-$Run-$_[0]" }

# a purchase of user('id'): $cents for $micros, paid (payment_intent.succeeded)
# unless $pending; its ids in $P{id}
sub purchase {
    my ($id, $cents, $micros, $pending) = @_;
    my $pid = purchase_insert(user($id), $micros, $cents);
    $P{$id} = { id => $pid, tag => "${Run}_$id", cents => $cents, micros => $micros };
    if ($pending) {
        psql_admin("UPDATE billing.purchases SET payment_intent_id = 'pi_${Run}_$id' WHERE id = '$pid'");
    } else {
        my $m = stripe_event_sql(payment_event(purchase => $pid, pi => "pi_${Run}_$id", id => "evt_pay_${Run}_$id"));
        die "purchase($id): $m" unless $m eq 'processed';
    }
}

# a dispute event of the purchase of user('id'), as Stripe sends it
my $N = 0;
sub dispute {
    my ($id, $type, $status, %o) = @_;
    my $tag = $P{$id}{tag};
    return $J->encode({
        id => $o{event} // 'evt_' . $tag . '_' . ++$N, object => 'event', api_version => '2024-06-20',
        type => $type, created => int time, livemode => JSON::PP::false,
        data => { object => {
            id => exists $o{dispute} ? $o{dispute} : "dp_$tag", object => 'dispute',
            amount => exists $o{amount} ? $o{amount} : $P{$id}{cents},
            charge => "ch_$tag", payment_intent => $o{pi} // "pi_$tag", currency => 'usd',
            reason => 'fraudulent', status => $status, metadata => {} } },
    });
}
sub created { dispute($_[0], 'charge.dispute.created', 'needs_response', @_[1 .. $#_]) }
sub won     { dispute($_[0], 'charge.dispute.closed', 'won', @_[1 .. $#_]) }
sub lost    { dispute($_[0], 'charge.dispute.closed', 'lost', @_[1 .. $#_]) }

# the requests of a block: each payload signed, as [requests], [headers]
sub deliver {
    my ($id, @payloads) = @_;
    $R{$id} = { reqs => [map { "POST /webhooks/stripe\n$_" } @payloads],
                hdrs => [map { "Content-Type: application/json\nStripe-Signature: "
                               . stripe_signature($Secret, $_) } @payloads] };
}

# balance, dispute debits and credits of user('id'), its dispute's status
sub state_of {
    my ($id) = @_;
    my $u = sql_quote(user($id));
    return psql_admin("SELECT (SELECT coalesce(sum(amount_micros), 0) FROM billing.ledger_entries WHERE user_id = $u)
                       || ' ' || (SELECT count(*) FROM billing.ledger_entries WHERE user_id = $u AND type = 'dispute')
                       || ' ' || (SELECT count(*) FROM billing.ledger_entries WHERE user_id = $u AND type = 'dispute_reversal')
                       || ' ' || coalesce((SELECT string_agg(status, ',' ORDER BY status) FROM billing.disputes
                                            WHERE purchase_id = '$P{$id}{id}'), '-')");
}

# the blocks' purchases and events
purchase($_, 500, 5_000_000) for qw(t1 t2 t3 t4 t5 t6 t7 t8 t11 t12 t13);
purchase('t9', 2000, 21_000_000);
purchase('t10', 500, 5_000_000, 'pending');
deliver('t1', created('t1'));
{ my $e = created('t2'); deliver('t2', $e, $e); }
deliver('t3', created('t3'), created('t3'));
deliver('t4', created('t4'), won('t4'), won('t4'));
deliver('t5', won('t5'), created('t5'), won('t5'));
deliver('t6', created('t6'), lost('t6'), created('t6'));
deliver('t7', lost('t7'), created('t7'), lost('t7'));
deliver('t8', created('t8'), won('t8'));
deliver('t9', created('t9', amount => 999));
deliver('t10', created('t10'), payment_event(purchase => $P{t10}{id}, pi => "pi_${Run}_t10", id => "evt_pay_${Run}_t10"));
deliver('t11', created('t11', pi => "pi_${Run}_nobody"), created('t11', dispute => undef, amount => undef));
deliver('t12', created('t12'), created('t12', dispute => "dp_${Run}_t12b", amount => 100), won('t12'));
{ my $e = created('t13'); deliver('t13', $e, $e); }

add_response_body_check(\&BillingTest::after_requests_check);
run_tests();

invariants_ok('invariants hold after the dispute tests');

__DATA__

=== TEST 1: a dispute debits the purchase's credits; the user's ledger names it
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- request eval: [@{ $::R{t1}{reqs} }, "GET /api/ledger?limit=1"]
--- more_headers eval: [@{ $::R{t1}{hdrs} }, "Authorization: Bearer " . BillingTest::mint_token(sub => main::user('t1'))]
--- error_code eval: [200, 200]
--- response_body_like eval
['^\{"received":true\}$',
 '^\{"balanceMicros":0,"entries":\[\{"id":"\d+","type":"dispute","amountMicros":-5000000,"balanceAfterMicros":0,"createdAt":"[^"]+","purchaseId":"[0-9a-f-]{36}","disputeId":"dp_\w+_t1"\}\],"nextCursor":"[\w-]+"\}$']
--- no_error_log
[error]
--- after_requests
Test::More::is(main::state_of('t1'), '0 1 0 needs_response', 'debited once');



=== TEST 2: the same event again is a duplicate
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- request eval: $::R{t2}{reqs}
--- more_headers eval: $::R{t2}{hdrs}
--- error_code eval: [200, 200]
--- response_body eval
['{"received":true}', '{"received":true,"duplicate":true}']
--- after_requests
Test::More::is(main::state_of('t2'), '0 1 0 needs_response', 'debited once');



=== TEST 3: another created event of the same dispute debits nothing more
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- request eval: $::R{t3}{reqs}
--- more_headers eval: $::R{t3}{hdrs}
--- error_code eval: [200, 200]
--- response_body eval
['{"received":true}', '{"received":true}']
--- after_requests
Test::More::is(main::state_of('t3'), '0 1 0 needs_response', 'once per dispute id');



=== TEST 4: created, then won: credited back, once however often won arrives
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- request eval: $::R{t4}{reqs}
--- more_headers eval: $::R{t4}{hdrs}
--- error_code eval: [200, 200, 200]
--- after_requests
Test::More::is(main::state_of('t4'), '5000000 1 1 won', 'debited and credited back once');



=== TEST 5: won before created: nothing to debit, nothing to credit back
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- request eval: $::R{t5}{reqs}
--- more_headers eval: $::R{t5}{hdrs}
--- error_code eval: [200, 200, 200]
--- after_requests
Test::More::is(main::state_of('t5'), '5000000 0 0 won', 'a won dispute moves no money in this order');



=== TEST 6: created, lost, created again: debited once, never credited back
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- request eval: $::R{t6}{reqs}
--- more_headers eval: $::R{t6}{hdrs}
--- error_code eval: [200, 200, 200]
--- after_requests
Test::More::is(main::state_of('t6'), '0 1 0 lost', 'lost: debited once');



=== TEST 7: lost before created: debited once (the money is gone)
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- request eval: $::R{t7}{reqs}
--- more_headers eval: $::R{t7}{hdrs}
--- error_code eval: [200, 200, 200]
--- after_requests
Test::More::is(main::state_of('t7'), '0 1 0 lost', 'lost first: debited once');



=== TEST 8: a debt refuses usage, even free, until a won dispute makes the balance positive
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- init
BillingTest::psql_admin("SELECT billing.api_reconcile('" . main::user('t8') . "', 'gpt-4o', 1000000, 200000, 'spend', NULL)");
--- request eval
my $rec = sub { "POST /api/usage/reconcile\n" . $::J->encode({ userId => main::user('t8'), model => 'gpt-4o',
                inputTokens => 0, outputTokens => 0, idempotencyKey => $_[0] }) };
[$::R{t8}{reqs}[0], $rec->('free-1'), $::R{t8}{reqs}[1], $rec->('free-2')]
--- more_headers eval
my $svc = "Content-Type: application/json\nAuthorization: Bearer " . BillingTest::mint_token(sub => 'ai-backend', scope => 'billing:usage');
[$::R{t8}{hdrs}[0], $svc, $::R{t8}{hdrs}[1], $svc]
--- error_code eval: [200, 402, 200, 201]
--- response_body_like eval
['^\{"received":true\}$',
 '"detail":"The balance is -4500000 micros; usage needs a positive balance","code":"insufficient_credits"',
 '^\{"received":true\}$',
 '"chargedMicros":0,"balanceMicros":500000,"replayed":false\}$']
--- after_requests
Test::More::is(main::state_of('t8'), '500000 1 1 won', 'debt, then credited back');



=== TEST 9: the disputed share is floor(credits x dispute amount / charge amount)
21,000,000 credits for 2,000 cents, 999 cents disputed: 10,489,500.
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- request eval: $::R{t9}{reqs}
--- more_headers eval: $::R{t9}{hdrs}
--- error_code: 200
--- after_requests
Test::More::is(main::state_of('t9'), '10510500 1 0 needs_response', 'debited 10,489,500');



=== TEST 10: a dispute before the payment event credits the purchase first; the payment then credits nothing
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- request eval: $::R{t10}{reqs}
--- more_headers eval: $::R{t10}{hdrs}
--- error_code eval: [200, 200]
--- response_body eval
['{"received":true,"creditedMicros":5000000}', '{"received":true}']
--- after_requests
Test::More::is(main::state_of('t10'), '0 1 0 needs_response', 'credited once, debited once');
Test::More::is(BillingTest::psql_admin("SELECT status FROM billing.purchases WHERE id = '$::P{t10}{id}'"), 'paid', 'paid');



=== TEST 11: an unknown payment, a dispute without id and amount: acknowledged, nothing moves
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- request eval: $::R{t11}{reqs}
--- more_headers eval: $::R{t11}{hdrs}
--- error_code eval: [200, 200]
--- response_body eval
['{"received":true}', '{"received":true}']
--- after_requests
Test::More::is(main::state_of('t11'), '5000000 0 0 -', 'nothing debited');



=== TEST 12: two disputes of one purchase are two disputes; a bad signature is 400 and changes nothing
5,000,000 - 5,000,000 - 1,000,000 + 5,000,000 (the first is won).
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- request eval: [@{ $::R{t12}{reqs} }, "POST /webhooks/stripe\n" . main::lost("t12", dispute => "dp_" . $::Run . "_t12b")]
--- more_headers eval: [@{ $::R{t12}{hdrs} }, "Content-Type: application/json\nStripe-Signature: t=" . time . ",v1=" . ('0' x 64)]
--- error_code eval: [200, 200, 200, 400]
--- response_body_like eval
['"received":true', '"received":true', '"received":true', '"code":"invalid_signature"']
--- after_requests
Test::More::is(main::state_of('t12'), '4000000 2 1 needs_response,won', 'two disputes, one won');



=== TEST 13: the dispute events have their own webhook metrics
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- request eval: [@{ $::R{t13}{reqs} }, "GET /metrics"]
--- more_headers eval: [@{ $::R{t13}{hdrs} }, ""]
--- error_code eval: [200, 200, 200]
--- response_body_like eval
['"received":true', '"duplicate":true',
 'billing_stripe_webhooks_total\{type="charge.dispute.created",outcome="processed"\} [1-9].*billing_stripe_webhooks_total\{type="charge.dispute.created",outcome="duplicate"\} [1-9]']
