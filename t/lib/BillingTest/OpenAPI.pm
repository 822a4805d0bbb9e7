package BillingTest::OpenAPI;

# Every answer the test suite receives is checked against docs/openapi.yaml,
# so that the document and the code cannot drift apart: an undocumented
# status, a content type the status does not list, a missing required
# header or a body that does not match its schema fails the test that
# received it.
#
#   response_errors(%res)   the check itself (no Test::More): takes
#       method, target (the request line's URI), status, headers (name =>
#       value, any case), body; answers undef when the document does not
#       describe the request (a test's own location), else an arrayref of
#       the mismatches (empty when the answer matches).
#   test_nginx_check        the add_response_body_check() hook, registered
#       by BillingTest for every Test::Nginx file that loads it: one test
#       per described answer.
#   check_answer($req, $status, \%headers, $body)
#       for BillingTest's own request helpers: fails (and diagnoses) a
#       mismatch, says nothing otherwise, so scripts' plans are untouched.
#
# How a request is matched: the path (query removed) against the
# document's path templates, the most literal first; HEAD as the GET
# operation without a body. A method the path does not list must get the
# MethodNotAllowed answer with an Allow header naming exactly the listed
# methods; OPTIONS gets CorsPreflight or MethodNotAllowed. An answer to a
# path the document does not know is still checked when it is a problem
# document: against the Problem schema of its status.
#
# The schemas are validated by JSON::Validator (Debian's
# libjson-validator-perl, which reads OpenAPI 3.0, `nullable` included),
# with coercion off: "1" is not an integer here.

use strict;
use warnings;

use Carp qw(croak);
use File::Basename qw(dirname);
use File::Spec ();
use JSON::PP ();
use Scalar::Util qw(blessed);
use Test::More ();

our $Document = $ENV{BILLING_OPENAPI_DOCUMENT}
    // File::Spec->catfile(dirname(__FILE__), File::Spec->updir, File::Spec->updir,
                           File::Spec->updir, 'docs', 'openapi.yaml');

# how many answers were checked, by kind: what a test of this module reads
our %Checked;

my ($Schema, $LoadError, @Routes);

my %METHODS = map { $_ => 1 } qw(get put post delete options head patch trace);

# Reads and checks the document once per process; BillingTest calls it when
# it is loaded, so that no timed request pays for it.
sub load {
    return if $Schema || $LoadError;
    my $ok = eval {
        require JSON::Validator::Schema::OpenAPIv3;
        1;
    };
    if (!$ok) {
        $LoadError = "JSON::Validator is missing (Debian: libjson-validator-perl; "
                   . "./build.sh deps installs it): $@";
        return;
    }
    my $s = eval { JSON::Validator::Schema::OpenAPIv3->new($Document) };
    if (!$s) {
        $LoadError = "cannot read $Document: $@";
        return;
    }
    if (my @e = @{ $s->errors }) {
        $LoadError = "$Document is not valid OpenAPI 3.0: @e";
        return;
    }
    # answers are checked as sent: no string is an integer, no 0 a false
    $s->coerce({});
    $s->resolve;
    $Schema = $s;

    my $paths = $s->get('/paths') || {};
    for my $template (keys %$paths) {
        my @parts = split m!(\{[^}/]+\})!, $template;
        my $params = grep { /^\{/ } @parts;
        my $re = join '', map { /^\{/ ? '[^/]+' : quotemeta } @parts;
        push @Routes, { template => $template, re => qr{^$re$}, params => $params,
                        item => $paths->{$template} };
    }
    # the most literal template first: /a/b before /a/{x}
    @Routes = sort { $a->{params} <=> $b->{params} || $a->{template} cmp $b->{template} } @Routes;
}

# the object a {"$ref": "#/..."} names, or the node itself
sub _deref {
    my ($node) = @_;
    for (1 .. 10) {
        last unless ref $node eq 'HASH' && defined $node->{'$ref'};
        (my $pointer = $node->{'$ref'}) =~ s/^#//;
        $node = $Schema->get($pointer);
    }
    return $node;
}

sub _route {
    my ($path) = @_;
    for my $r (@Routes) {
        return $r if $path =~ $r->{re};
    }
    return undef;
}

sub _media_type {
    my ($ct) = @_;
    return '' unless defined $ct;
    $ct =~ s/;.*//s;
    $ct =~ s/^\s+|\s+$//g;
    return lc $ct;
}

sub _is_json { $_[0] =~ m{^application/(?:[\w.+-]+\+)?json$} }

# Checks one answer against one response object of the document.
sub _check_response_object {
    my ($errors, $what, $response, %res) = @_;
    $response = _deref($response);

    my %h = map { lc($_) => $res{headers}{$_} } keys %{ $res{headers} || {} };
    my $headers = $response->{headers} || {};
    for my $name (sort keys %$headers) {
        my $spec = _deref($headers->{$name});
        my $value = $h{ lc $name };
        if (!defined $value) {
            push @$errors, "$what: header $name is required but missing" if $spec->{required};
            next;
        }
        my @e = $Schema->validate($value, $spec->{schema} || {});
        push @$errors, map { "$what: header $name: $_" } @e;
    }

    my $body = $res{body} // '';
    my $content = $response->{content};
    my $mt = _media_type($h{'content-type'});
    if (!$content || !%$content) {
        push @$errors, "$what: the document describes no body, but one came ("
                       . length($body) . " bytes)" if length $body;
        return;
    }
    my $media = $content->{$mt};
    if (!$media) {
        push @$errors, "$what: content type '" . ($h{'content-type'} // '(none)')
                       . "' is not one of " . join(', ', sort keys %$content);
        return;
    }
    return if $res{head};   # HEAD: the headers of GET, no body
    return unless _is_json($mt);
    my $data = eval { JSON::PP->new->allow_nonref->decode($body) };
    if (!defined $data && $@) {
        (my $err = $@) =~ s/ at \S+ line \d+.*//s;
        push @$errors, "$what: the body is not JSON ($err): " . substr($body, 0, 200);
        return;
    }
    return unless $media->{schema};
    push @$errors, map { "$what: body$_" } $Schema->validate($data, $media->{schema});
    push @$errors, _problem_type($what, $data) if $mt eq 'application/problem+json';
}

# what no schema can say: a problem's type names its code
sub _problem_type {
    my ($what, $data) = @_;
    return () unless ref $data eq 'HASH' && defined $data->{code} && defined $data->{type};
    my $want = "https://billing.scholarlink.app/problems/$data->{code}";
    return $data->{type} eq $want ? () : ("$what: type is '$data->{type}', not '$want'");
}

sub response_errors {
    my (%res) = @_;
    for my $k (qw(method target status)) {
        croak "response_errors: $k is required" unless defined $res{$k};
    }
    load();
    return ["cannot check against docs/openapi.yaml: $LoadError"] if $LoadError;

    my $method = lc $res{method};
    (my $path = $res{target}) =~ s/[?#].*//s;
    # nginx refuses a NUL in the path (400, its own page) before any
    # location: no endpoint of the document answers such a request
    return undef if $path =~ /%00/;
    my $status = $res{status};
    my @errors;
    my $route = _route($path);

    if (!$route) {
        # a path the document does not describe: only a problem is checked
        my %h = map { lc($_) => $res{headers}{$_} } keys %{ $res{headers} || {} };
        return undef unless _media_type($h{'content-type'}) eq 'application/problem+json';
        my $schema = $Schema->get("/components/schemas/Problem$status");
        if (!$schema) {
            return ["problem with status $status: the document has no Problem$status schema"];
        }
        my $data = eval { JSON::PP->new->decode($res{body} // '') };
        return ["problem with status $status: the body is not JSON"] unless ref $data;
        $Checked{problem}++;
        return [(map { "problem $status: body$_" }
                 $Schema->validate($data, $schema)),
                _problem_type("problem $status", $data)];
    }

    my $item = $route->{item};
    my $what = uc($method) . " $route->{template} -> $status";
    my $op_method = $method eq 'head' && !$item->{head} ? 'get' : $method;
    my $op = $METHODS{$op_method} ? $item->{$op_method} : undef;

    if (!$op) {
        my @listed = map { uc } grep { $METHODS{$_} } keys %$item;
        push @listed, 'HEAD' if $item->{get} && !$item->{head};
        my $kind = 'MethodNotAllowed';
        if ($method eq 'options' && $status == 204) {
            $kind = 'CorsPreflight';
        } elsif ($status != 405) {
            return ["$what: the path takes " . join(', ', sort @listed)
                    . "; any other method must be answered 405"];
        } else {
            my %h = map { lc($_) => $res{headers}{$_} } keys %{ $res{headers} || {} };
            my %allow = map { $_ => 1 } split /\s*,\s*/, $h{allow} // '';
            my %want = map { $_ => 1 } @listed;
            if (join(',', sort keys %allow) ne join(',', sort keys %want)) {
                push @errors, "$what: Allow is '" . ($h{allow} // '') . "', the document lists "
                              . join(', ', sort @listed);
            }
        }
        $Checked{$kind}++;
        _check_response_object(\@errors, "$what ($kind)",
                               $Schema->get("/components/responses/$kind"), %res,
                               head => 0);
        return \@errors;
    }

    my $responses = $op->{responses} || {};
    my $response = $responses->{$status} // $responses->{ substr($status, 0, 1) . 'XX' };
    if (!$response) {
        return ["$what: status $status is not documented (documented: "
                . join(', ', sort keys %$responses) . ")"];
    }
    $Checked{operation}++;
    _check_response_object(\@errors, $what, $response, %res, head => $method eq 'head');
    return \@errors;
}

# ---------------------------------------------------------------- Test::Nginx

# The request line of the block's request number $idx: (method, target).
sub _block_request {
    my ($block, $idx) = @_;
    my $req = $block->request;
    $req = $req->[$idx] if ref $req eq 'ARRAY';
    # a request given as raw pieces: [[piece, {value => piece}...]]
    $req = join '', map { ref $_ eq 'HASH' ? $_->{value} : $_ } @$req if ref $req eq 'ARRAY';
    return () unless defined $req;
    1 while $req =~ s/^\s*\#[^\n]*\n|^\s+//s;
    my ($method, $target) = $req =~ /^(\S+)[ \t]+(\S+)/ or return ();
    return ($method, $target);
}

# The HTTP::Response the runner is checking. The hook's interface passes
# the body only; both runners hand the response object to the sub that
# calls the hook (upstream check_response_body($block, $res, ...), the
# fallback check_response($block, $res, ...)), where `caller` from package
# DB can see it (perlfunc "caller": @DB::args). Found by what it is and by
# its body, not by position, so it does not depend on either runner's
# argument order.
sub _runner_response {
    my ($body) = @_;
    $body //= '';
    for my $level (1 .. 30) {
        my @frame;
        {
            package DB;
            @frame = caller($level);
        }
        last unless @frame;
        for my $arg (@DB::args) {
            next unless blessed($arg) && $arg->isa('HTTP::Response');
            return $arg if ($arg->content // '') eq $body;
        }
    }
    return undef;
}

sub test_nginx_check {
    my ($block, $body, $req_idx, $rep, $dry_run) = @_;
    return if $dry_run;
    my $name = $block->name;
    my ($method, $target) = _block_request($block, $req_idx);
    return unless defined $method;
    my $res = _runner_response($body);
    if (!$res) {
        Test::More::fail("$name - the answer's status and headers are not visible to "
                         . "the docs/openapi.yaml check (req $req_idx)");
        return;
    }
    return unless $res->code;   # no answer: the runner reports it
    my %headers;
    for my $h ($res->headers->header_field_names) {
        $headers{$h} = join ', ', $res->header($h);
    }
    my $errors = response_errors(method => $method, target => $target, status => $res->code,
                                 headers => \%headers, body => $body);
    return unless $errors;
    Test::More::ok(!@$errors, "$name - answer matches docs/openapi.yaml "
                              . "($method $target -> " . $res->code . ", req $req_idx)")
        or Test::More::diag(join "\n", @$errors);
}

# ---------------------------------------------------------------- helpers

sub check_answer {
    my ($method, $target, $status, $headers, $body) = @_;
    return 1 unless $status;   # no answer at all: nothing to compare
    my $errors = response_errors(method => $method, target => $target, status => $status,
                                 headers => $headers, body => $body);
    return 1 if !$errors || !@$errors;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    Test::More::fail("answer to $method $target ($status) matches docs/openapi.yaml");
    Test::More::diag(join "\n", @$errors);
    return 0;
}

1;
