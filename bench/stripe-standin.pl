#!/usr/bin/env perl
# Runs t/lib/StripeStandIn (the loopback Stripe of the tests) for
# bench/run.sh: every Checkout request stalls STALL seconds before it is
# answered. Writes the base URL to URL_FILE, then waits for SIGTERM (the
# stand-in's END block stops its server process).
#   bench/stripe-standin.pl ROOT URL_FILE STALL
use strict;
use warnings;
my ($root, $url_file, $stall) = @ARGV;
die "usage: $0 ROOT URL_FILE STALL\n" unless defined $stall;
unshift @INC, "$root/t/lib";
require StripeStandIn;
my $s = StripeStandIn->start;
$s->control(stall => $stall, stall_count => 1_000_000) if $stall > 0;
open my $fh, '>', "$url_file.tmp" or die "$url_file: $!";
print $fh $s->url, "\n";
close $fh;
rename "$url_file.tmp", $url_file or die "rename: $!";
my $stop = 0;
$SIG{TERM} = $SIG{INT} = sub { $stop = 1 };
sleep 1 until $stop;
$s->stop;
exit 0;
