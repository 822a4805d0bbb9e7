package DnsStandIn;

# A DNS server on 127.0.0.1 (UDP) for the ScholarLink Billing tests, to
# look the database host up with (billing_database_resolver): it answers
# as a slow or dead DNS would.
#
#   my $dns = DnsStandIn->start(names => { 'db.billing.test' => '127.0.0.1' },
#                               delay => 3);
#   $dns->port                       the UDP port
#   $dns->control(delay => SECONDS)  wait that long before each answer;
#                                    'never' drops queries unanswered
#   $dns->control(names => {...})    answer with these from now on
#   $dns->queries                    every query received so far, in order:
#                                    [time, id, name, type], recorded on arrival
#   $dns->lookups($name)             how many lookups asked for $name's A
#                                    record: a resolver sends a query again
#                                    with the same id when it retries, a new
#                                    lookup gets a new id
#   $dns->stop                       (also at END of the process that started it)
#
# Names of `names` get their A record (TTL 1 s) and no AAAA; every other name
# is NXDOMAIN. Each answer leaves after its own delay: a slow answer does not
# hold up the queries behind it.

use strict;
use warnings;

use Carp qw(croak);
use File::Temp qw(tempdir);
use IO::Select ();
use IO::Socket::INET ();
use Net::DNS ();
use POSIX ();
use Time::HiRes qw(time);

my @Servers;
my $Owner = $$;

sub start {
    my ($class, %opt) = @_;
    my $self = bless {
        dir   => tempdir('dns-standin-XXXXXX', TMPDIR => 1, CLEANUP => 1),
    }, $class;
    $self->control(delay => $opt{delay} // 0, names => $opt{names} || {});
    open my $log, '>', "$self->{dir}/queries" or croak "DnsStandIn: $!";
    close $log;

    my $sock = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
                                      Proto => 'udp')
        or croak "DnsStandIn: bind: $!";
    $self->{port} = $sock->sockport;

    my $pid = fork // croak "fork: $!";
    if ($pid == 0) {
        eval { $self->_serve($sock) };
        POSIX::_exit(0);
    }
    close $sock;
    $self->{pid} = $pid;
    push @Servers, $self;
    return $self;
}

sub port { $_[0]{port} }

sub control {
    my ($self, %c) = @_;
    _write("$self->{dir}/delay", $c{delay}) if exists $c{delay};
    _write("$self->{dir}/names", join '', map { "$_ $c{names}{$_}\n" } sort keys %{ $c{names} })
        if exists $c{names};
}

sub _write {
    my ($f, $text) = @_;
    open my $fh, '>', "$f.tmp" or croak "DnsStandIn: $!";
    print $fh $text;
    close $fh;
    rename "$f.tmp", $f or croak "DnsStandIn: $!";
}

sub _read {
    my ($f) = @_;
    open my $fh, '<', $f or return '';
    local $/;
    return <$fh> // '';
}

sub queries {
    my ($self) = @_;
    return map { [split / /] } split /\n/, _read("$self->{dir}/queries");
}

sub lookups {
    my ($self, $name) = @_;
    my %ids = map { $_->[1] => 1 } grep { $_->[2] eq lc $name && $_->[3] eq 'A' } $self->queries;
    return scalar keys %ids;
}

sub stop {
    my ($self) = @_;
    return unless $self->{pid};
    kill 'KILL', $self->{pid};
    waitpid($self->{pid}, 0);
    delete $self->{pid};
}

END {
    if ($$ == $Owner) {
        local $?;
        $_->stop for @Servers;
    }
}

sub _delay { _read("$_[0]{dir}/delay") || 0 }

sub _names { my %n = map { split / / } split /\n/, _read("$_[0]{dir}/names"); \%n }

sub _serve {
    my ($self, $sock) = @_;
    my $sel = IO::Select->new($sock);
    my @pending;     # [when, peer, bytes], in order of when

    while (1) {
        my $wait = @pending ? $pending[0][0] - time : 1;
        $wait = 0 if $wait < 0;
        if ($sel->can_read($wait)) {
            my $peer = $sock->recv(my $buf, 4096);
            my $q = defined $peer ? Net::DNS::Packet->new(\$buf) : undef;
            my ($question) = $q ? $q->question : ();
            if ($question) {
                my ($name, $type) = (lc $question->qname, $question->qtype);
                open my $log, '>>', "$self->{dir}/queries";
                printf $log "%.3f %d %s %s\n", time, $q->header->id, $name, $type;
                close $log;

                my $names = $self->_names;
                my $r = $q->reply;
                $r->header->aa(1);
                $r->header->ra(1);
                if (exists $names->{$name}) {
                    $r->header->rcode('NOERROR');
                    $r->push(answer => Net::DNS::RR->new("$name 1 IN A $names->{$name}"))
                        if $type eq 'A';
                } else {
                    $r->header->rcode('NXDOMAIN');
                }

                my $delay = $self->_delay;
                if ($delay ne 'never') {
                    @pending = sort { $a->[0] <=> $b->[0] }
                               @pending, [time + $delay, $peer, $r->data];
                }
            }
        }
        while (@pending && $pending[0][0] <= time) {
            my $p = shift @pending;
            $sock->send($p->[2], 0, $p->[1]);
        }
    }
}

1;
