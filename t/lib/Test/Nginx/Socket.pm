package Test::Nginx::Socket;

# Fallback for Test::Nginx::Socket (openresty/test-nginx), written for the
# ScholarLink Billing tests. Upstream Test::Nginx is not installable here
# (no CPAN), so this file implements the subset of it our .t files use.
#
# Precedence: an installed upstream ALWAYS wins, wherever t/lib sits in @INC.
# At load time this file looks through @INC for another
# Test/Nginx/Socket.pm; if it finds one, it loads that one (`do FILE`) and
# stays out of the way (the fallback lives in package
# Test::Nginx::Socket::Fallback and is never activated). So build.sh can
# simply run
#
#     prove -It/lib -r t/
#
# (t/lib is also where BillingTest.pm lives, so it must be on @INC anyway).
# No `perl -MTest::Nginx::Socket -e1` probe is needed; `-It/lib` is safe
# whether or not upstream is installed.
# TEST_NGINX_FALLBACK_FORCE=1 forces the fallback even if upstream exists.
#
# Supported subset (behaviour copied from upstream's observable semantics,
# code written from scratch):
#   plan/no_plan, blocks(), repeat_each, no_shuffle, env_to_nginx, log_level,
#   no_long_string, master_on/master_off, workers, worker_connections,
#   timeout, no_root_location, server_port, server_root, html_dir,
#   add_block_preprocessor, add_cleanup_handler, add_response_body_check,
#   bail_out, run_tests.
# Sections: main_config, http_config, config, request (string or array via
#   `request eval`), more_headers, error_code, error_code_like,
#   response_body, response_body_like, response_body_unlike,
#   response_headers, response_headers_like, error_log, no_error_log,
#   timeout, init, log_level, wait, user_files, must_die, SKIP (ONLY is not
#   supported).
# Variables: $TEST_NGINX_* from %ENV, $TEST_NGINX_RAND_PORT_N (a free port,
#   fresh per block), $TEST_NGINX_SERVER_PORT (default 1984).
# Environment read when this file is loaded, as upstream reads it:
#   TEST_NGINX_LOAD_MODULES (space-separated .so paths; each becomes
#   `load_module PATH;` in front of the block's --- main_config),
#   TEST_NGINX_BINARY, TEST_NGINX_SERVER_PORT, TEST_NGINX_SERVROOT,
#   TEST_NGINX_NO_SHUFFLE, TEST_NGINX_TIMEOUT, TEST_NGINX_LOG_LEVEL, ...
#
# Like upstream:
#   * blocks are shuffled unless no_shuffle() or TEST_NGINX_NO_SHUFFLE=1;
#   * nginx runs with `daemon on; master_process off;` (TEST_NGINX_MASTER_PROCESS
#     or master_on() switch the master on), one worker, error_log at debug;
#   * nginx is restarted for every block (TEST_NGINX_FORCE_RESTART_ON_TEST=0
#     restarts only when the expanded --- config changed) and servroot
#     (t/servroot, or $TEST_NGINX_SERVROOT) is recreated at every restart, so
#     error.log starts empty for each block;
#   * servroot holds only conf/, html/, logs/ and nginx's *_temp/*_cache:
#     upstream removes exactly those and then rmdir()s servroot, refusing
#     ("Can't remove ... (not empty?)") if anything else is there; this file
#     does the same, so neither runner leaves the other a surprise;
#   * nginx starts as `nginx -e servroot/logs/error.log -p servroot/ -c ...`,
#     so errors found while reading the configuration land in error.log;
#   * --- must_die: nginx must fail to start (exit code not 0, or the exit
#     code given as the section's value); --- error_log / --- no_error_log
#     are then checked against error.log; no request is sent and --- init
#     is not run;
#   * --- init is eval'ed (string eval, in package Test::Nginx::Util, so use
#     fully qualified names) once per block, after nginx started and before
#     the first request; a failure bails out;
#   * error_log / no_error_log patterns are substrings unless they are Regexp
#     objects (via `eval`); each repetition sees only the lines logged since
#     the previous check;
#   * test names are "$0 TEST n: title - ...";
#   * add_response_body_check(sub { my ($block, $body, $req_idx,
#     $repeated_req_idx, $dry_run) = @_; ... }): every check is called for
#     every response of every block (also when the status or the body
#     check failed), in registration order, after the body check, from the
#     sub that was handed the HTTP::Response (check_response($block, $res,
#     ...), as upstream's check_response_body($block, $res, ...)); $body is
#     $res->content; $dry_run is false (no dry-run modes here).

use strict;
use warnings;

our $Upstream;
BEGIN {
    require Cwd;
    my $me = Cwd::abs_path(__FILE__) // __FILE__;
    if (!$ENV{TEST_NGINX_FALLBACK_FORCE}) {
        for my $dir (@INC) {
            next if ref $dir;
            my $f = "$dir/Test/Nginx/Socket.pm";
            next unless -f $f;
            my $abs = Cwd::abs_path($f) // $f;
            next if $abs eq $me;
            $Upstream = $abs;
            last;
        }
    }
    if ($Upstream) {
        # load the real thing in place of this file
        local @INC = grep { ref $_ || (Cwd::abs_path("$_/Test/Nginx/Socket.pm") // '') ne $me } @INC;
        my $ok = do $Upstream;
        die "loading upstream $Upstream failed: " . ($@ || $!) . "\n" unless $ok;
    }
}

package Test::Nginx::Socket::Fallback;

use strict;
use warnings;
use v5.10.1;

use Test::Base ();
use Test::More ();
use IO::Socket::INET ();
use IO::Select ();
use HTTP::Response ();
use File::Path qw(make_path remove_tree);
use File::Spec ();
use File::Temp ();
use List::Util qw(shuffle);
use POSIX qw(SIGQUIT SIGTERM SIGKILL WNOHANG);
use Time::HiRes qw(sleep time);
use Carp qw(croak);

our @ISA = ('Test::Base');
our $Active = !$Test::Nginx::Socket::Upstream;

our $VERSION = '0.29_fallback';

our @EXPORT = qw(
    env_to_nginx is_str run_tests run_test
    repeat_each config_preamble worker_connections
    master_process_enabled
    no_long_string workers master_on master_off
    log_level no_shuffle no_root_location use_hup
    server_name server_addr server_root html_dir server_port
    server_port_for_client timeout no_nginx_manager check_accum_error_log
    add_block_preprocessor bail_out add_cleanup_handler
    add_response_body_check
);

# ---------------------------------------------------------------- settings

our $RepeatEach      = 1;
our $NoShuffle       = $ENV{TEST_NGINX_NO_SHUFFLE} || 0;
our $NoLongString    = 0;
our $Timeout         = $ENV{TEST_NGINX_TIMEOUT} || 3;
our $NginxBinary     = $ENV{TEST_NGINX_BINARY} || 'nginx';
our $LoadModules     = $ENV{TEST_NGINX_LOAD_MODULES};
our $Workers         = 1;
our $WorkerConns     = 64;
our $LogLevel        = $ENV{TEST_NGINX_LOG_LEVEL} || 'debug';
our $MasterProcess   = $ENV{TEST_NGINX_MASTER_PROCESS} || 'off';
our $ServerPort      = $ENV{TEST_NGINX_SERVER_PORT} || $ENV{TEST_NGINX_PORT} || 1984;
our $ServerPortForClient = $ENV{TEST_NGINX_CLIENT_PORT} || $ServerPort;
our $ServerAddr      = '127.0.0.1';
our $ServerName      = 'localhost';
our $NoRootLocation  = 0;
our $ConfigPreamble  = '';
our $Sleep           = $ENV{TEST_NGINX_SLEEP} || 0.015;
our $ForceRestart    = defined $ENV{TEST_NGINX_FORCE_RESTART_ON_TEST}
                       ? $ENV{TEST_NGINX_FORCE_RESTART_ON_TEST} : 1;
our $CheckAccumErrLog = $ENV{TEST_NGINX_CHECK_ACCUM_ERR_LOG};
our $Verbose         = $ENV{TEST_NGINX_VERBOSE};
our @EnvToNginx;
our @BlockPreprocessors;
our @CleanupHandlers;
our @ResponseBodyChecks;

our $ServRoot = $ENV{TEST_NGINX_SERVROOT} || File::Spec->rel2abs('t/servroot');
$ENV{TEST_NGINX_SERVER_ROOT} = $ServRoot;
our $LogDir     = "$ServRoot/logs";
our $ErrLogFile = "$LogDir/error.log";
our $AccLogFile = "$LogDir/access.log";
our $HtmlDir    = "$ServRoot/html";
our $ConfDir    = "$ServRoot/conf";
our $ConfFile   = "$ConfDir/nginx.conf";
our $PidFile    = "$LogDir/nginx.pid";

our $PrevConfig;
our $ErrLogPos = 0;
our $MainPid = $$;
our $NginxPid;          # pid of the nginx we started (master or single)

srand $$;

# nginx daemonizes (daemon on): its process is re-parented. Where PID 1 does
# not reap orphans (some containers), exited nginx processes linger as
# zombies; become a "child subreaper" (Linux prctl PR_SET_CHILD_SUBREAPER) so
# they are re-parented to us and _kill_and_wait() can reap them.
if ($Active && $^O eq 'linux') {
    require Config;
    my $nr = { 'x86_64' => 157, 'aarch64' => 167 }->{ (split /-/, $Config::Config{archname})[0] };
    eval { syscall($nr, 36, 1, 0, 0, 0) } if $nr;
}

# ---------------------------------------------------------------- import

if ($Active) {
    no warnings 'redefine';
    # Test::Base::import makes the fallback class the default Test::Base
    # class, handles 'no_plan' / tests => N, then Spiffy exports @EXPORT of
    # the fallback class and of Test::Base (blocks, plan, is, like, ...) to
    # the caller (the .t file, thanks to goto).
    *Test::Nginx::Socket::import = sub {
        shift;
        unshift @_, 'Test::Nginx::Socket::Fallback';
        goto &Test::Base::import;
    };
}

# ---------------------------------------------------------------- setters

sub env_to_nginx (@) {
    croak "env_to_nginx: no arguments specified" unless @_;
    for my $v (@_) {
        croak "env_to_nginx: bad argument value: $v\n"
            if $v !~ /^[A-Za-z_]/ || $v =~ /\n/;
        push @EnvToNginx, $v;
    }
}

sub repeat_each (@)   { $RepeatEach = shift if @_; $RepeatEach }
sub no_shuffle ()     { $NoShuffle = 1 }
sub no_long_string () { $NoLongString = 1 }
sub timeout (@)       { $Timeout = shift if @_; $Timeout }
sub workers (@)       { $Workers = shift if @_; $Workers }
sub worker_connections (@) { $WorkerConns = shift if @_; $WorkerConns }
sub log_level (@)     { $LogLevel = shift if @_; $LogLevel }
sub master_on ()      { $MasterProcess = 'on' }
sub master_off ()     { $MasterProcess = 'off' }
sub master_process_enabled (@) {
    if (@_) { $MasterProcess = shift() ? 'on' : 'off'; return }
    return $MasterProcess;
}
sub no_root_location () { $NoRootLocation = 1 }
sub config_preamble ($) { $ConfigPreamble = shift }
sub server_port (@)   { if (@_) { $ServerPort = shift; $ServerPortForClient = $ServerPort } $ServerPort }
sub server_port_for_client (@) { $ServerPortForClient = shift if @_; $ServerPortForClient }
sub server_addr (@)   { $ServerAddr = shift if @_; $ServerAddr }
sub server_name (@)   { $ServerName = shift if @_; $ServerName }
sub server_root ()    { $ServRoot }
sub html_dir ()       { $HtmlDir }
sub use_hup ()        { }   # accepted, ignored (we always restart)
sub no_nginx_manager () { croak "no_nginx_manager is not supported by the fallback runner" }
sub check_accum_error_log () { $CheckAccumErrLog = 1 }
sub add_block_preprocessor (&) { unshift @BlockPreprocessors, shift }
sub add_cleanup_handler ($) { unshift @CleanupHandlers, shift }
sub add_response_body_check ($) { push @ResponseBodyChecks, shift }

sub is_str (@) {
    my ($got, $expected, $desc) = @_;
    if (ref $expected && ref $expected eq 'Regexp') {
        return Test::More::like($got, $expected, $desc);
    }
    return Test::More::is($got, $expected, $desc);
}

sub bail_out (@) {
    cleanup();
    Test::More::BAIL_OUT(join '', @_);
}

# ---------------------------------------------------------------- process utils

sub _pid_alive {
    my $pid = shift;
    return 0 unless $pid && kill 0, $pid;
    # Our PID 1 may not reap orphans: a zombie counts as gone.
    if (open my $fh, '<', "/proc/$pid/stat") {
        my $st = <$fh> // '';
        close $fh;
        return 0 if $st =~ /^\d+ \(.*\) Z/s;
    }
    return 1;
}

sub _read_pidfile {
    open my $in, '<', $PidFile or return undef;
    my $pid = do { local $/; <$in> };
    close $in;
    return undef unless defined $pid;
    $pid =~ s/\s+//g;
    return $pid =~ /^\d+$/ ? $pid : undef;
}

sub _kill_and_wait {
    my ($pid, $name) = @_;
    return unless _pid_alive($pid);
    kill SIGQUIT, $pid;
    my $left = $Timeout > 5 ? $Timeout : 5;
    while ($left > 0 && _pid_alive($pid)) {
        waitpid($pid, WNOHANG);
        sleep 0.02;
        $left -= 0.02;
    }
    return unless _pid_alive($pid);
    warn "$name - nginx $pid did not exit on QUIT, sending TERM\n";
    kill SIGTERM, $pid;
    for (1 .. 100) {
        last unless _pid_alive($pid);
        sleep 0.02;
    }
    return unless _pid_alive($pid);
    warn "$name - killing nginx $pid with SIGKILL\n";
    kill SIGKILL, $pid;
    for (1 .. 100) {
        last unless _pid_alive($pid);
        sleep 0.02;
    }
}

sub stop_nginx_server {
    my ($name) = @_;
    $name //= 'cleanup';
    my $pid = _read_pidfile();
    for my $p (grep { defined } $pid, $NginxPid) {
        _kill_and_wait($p, $name);
    }
    undef $NginxPid;
}

sub cleanup () {
    return if $$ != $MainPid || !$Active;
    for my $hdl (@CleanupHandlers) {
        eval { $hdl->() };
        warn "cleanup handler failed: $@" if $@;
    }
    stop_nginx_server('cleanup') unless $ENV{TEST_NGINX_NO_CLEAN};
}

END {
    # keep $? (the test exit code) intact
    local $?;
    cleanup() if $$ == $MainPid && $Active;
}

# ---------------------------------------------------------------- config

our %RandPorts;   # $TEST_NGINX_RAND_PORT_N, fresh for every block

sub _rand_port {
    my %used = ($ServerPort => 1, map { $_ => 1 } values %RandPorts);
    for (1 .. 1000) {
        my $port = int(rand 63550) + 1985;
        next if $used{$port};
        my $sock = IO::Socket::INET->new(LocalAddr => $ServerAddr,
                                         LocalPort => $port, Proto => 'tcp');
        if ($sock) { close $sock; return $port }
    }
    bail_out("Cannot find an available listening port number");
}

sub expand_env_in_text {
    my ($text, $name) = @_;
    return undef unless defined $text;
    $text =~ s{\$(TEST_NGINX_[_A-Z0-9]+)}{
        my $var = $1;
        my $v;
        if ($var =~ /^TEST_NGINX_RAND_PORT_\d+$/) {
            $RandPorts{$var} = _rand_port() unless defined $RandPorts{$var};
            $v = $RandPorts{$var};
        } else {
            $v = $ENV{$var};
        }
        my $name1 = $var;
        bail_out("$name - No environment $name1 defined.\n") unless defined $v;
        $v;
    }ge;
    return $text;
}

our $CacheDir = "$ServRoot/cache";

sub setup_server_root {
    if (-d $ServRoot) {
        # exactly what upstream removes; whatever else is there makes rmdir
        # fail here as it would make upstream fail
        remove_tree($ConfDir, glob("$ServRoot/*_cache"), glob("$ServRoot/*_temp"),
                    $CacheDir, $HtmlDir, $LogDir);
        # earlier versions of this file left their nginx stderr here
        unlink "$ServRoot/nginx-start.stderr";
        rmdir $ServRoot or bail_out("Can't remove $ServRoot (not empty?): $!");
    }
    for my $d ($ServRoot, $LogDir, $HtmlDir, $ConfDir) {
        next if -d $d;
        make_path($d) or bail_out("Failed to mkdir $d: $!");
    }
    open my $out, '>', "$HtmlDir/index.html"
        or bail_out("Can't write $HtmlDir/index.html: $!");
    print $out '<html><head><title>It works!</title></head><body>It works!</body></html>';
    close $out;
}

sub write_user_files {
    my ($block) = @_;
    my $files = $block->user_files;
    return unless defined $files;
    my @list;
    if (ref $files eq 'ARRAY') {
        @list = @$files;
    } else {
        my ($fname, $body);
        for my $line (split /^/, $files) {
            if ($line =~ /^>>> (\S+)/) {
                push @list, [$fname, $body] if defined $fname;
                ($fname, $body) = ($1, '');
            } else {
                $body .= $line;
            }
        }
        push @list, [$fname, $body] if defined $fname;
    }
    for my $f (@list) {
        my ($fname, $body) = @$f;
        my $path = $fname =~ m{^/} ? $fname : "$HtmlDir/$fname";
        (my $dir = $path) =~ s{/[^/]*$}{};
        make_path($dir) unless -d $dir;
        open my $out, '>', $path or bail_out("Cannot write $path: $!");
        binmode $out;
        print $out expand_env_in_text($body // '', $block->name);
        close $out;
    }
}

sub write_config_file {
    my ($block, $config) = @_;
    my $name = $block->name;
    my $http_config = expand_env_in_text(scalar($block->http_config), $name) // '';
    my $main_config = scalar($block->main_config) // '';
    # upstream: one `load_module PATH;` per TEST_NGINX_LOAD_MODULES entry,
    # joined by spaces in front of the block's main_config, then expanded
    if ($LoadModules) {
        my @modules = map { "load_module $_;" } grep { $_ } split /\s+/, $LoadModules;
        $main_config = join ' ', @modules, $main_config if @modules;
    }
    $main_config = expand_env_in_text($main_config, $name);
    my $post_main   = expand_env_in_text(scalar($block->post_main_config), $name) // '';
    my $level = $block->log_level;
    $level = $LogLevel unless defined $level && $level ne '';
    chomp $level;

    my $env = join '', map { my $v = $_; $v = "'$v'" if $v =~ /\s/; "env $v;\n" } @EnvToNginx;
    my $root = $NoRootLocation ? '' : <<"_EOC_";
        location / {
            root $HtmlDir;
            index index.html index.htm;
        }
_EOC_
    my $user = $> == 0 ? "user root;\n" : '';

    open my $out, '>', $ConfFile or bail_out("Can't open $ConfFile for writing: $!");
    print $out <<"_EOC_";
worker_processes  $Workers;
daemon on;
master_process $MasterProcess;
error_log $ErrLogFile $level;
pid       $PidFile;
$env
$main_config

http {
    access_log $AccLogFile;

    default_type text/plain;
    keepalive_timeout  68;

$http_config

    server {
        listen          $ServerPort;
        server_name     '$ServerName';

        client_max_body_size 30M;

        # Begin preamble config...
$ConfigPreamble
        # End preamble config...

        # Begin test case config...
$config
        # End test case config.

$root    }
}

$post_main

events {
    accept_mutex off;

    worker_connections  $WorkerConns;
}
$user
_EOC_
    close $out;
}

sub _can_run {
    my $bin = shift;
    return -x $bin ? $bin : undef if $bin =~ m{/};
    for my $dir (split /:/, $ENV{PATH} // '') {
        return "$dir/$bin" if -x "$dir/$bin";
    }
    return undef;
}

# Runs the nginx command line; returns ($status, $stderr). The stderr goes
# to a temporary file outside servroot (upstream refuses strangers there);
# not to a pipe, which a daemonized nginx could hold open.
our $StderrFile;

sub _run_nginx {
    my ($cmd) = @_;
    if (!defined $StderrFile) {
        (undef, $StderrFile) = File::Temp::tempfile('nginx-stderr-XXXXXX',
                                                    TMPDIR => 1, UNLINK => 1);
    }
    system("$cmd >/dev/null 2>$StderrFile");
    my $status = $?;
    my $err = '';
    if (open my $in, '<', $StderrFile) { local $/; $err = <$in> // ''; close $in }
    return ($status, $err);
}

sub _nginx_cmd {
    return "$NginxBinary -e $ErrLogFile -p $ServRoot/ -c $ConfFile";
}

sub _prepare_server {
    my ($block, $config) = @_;
    my $name = $block->name;

    stop_nginx_server($name);
    setup_server_root();
    write_user_files($block);
    write_config_file($block, $config);

    _can_run($NginxBinary)
        or bail_out("$name - Cannot find the nginx executable ($NginxBinary)");
}

sub start_nginx_server {
    my ($block, $config) = @_;
    my $name = $block->name;

    _prepare_server($block, $config);

    my $cmd = _nginx_cmd();
    my $waited = 0;
    while (1) {
        my ($status, $err) = _run_nginx($cmd);
        last if $status == 0;
        # a port still held by a previous instance: retry a little
        if ($err =~ /Address already in use/ && $waited < 10) {
            sleep 0.2;
            $waited += 0.2;
            next;
        }
        bail_out("$name - Cannot start nginx using command \"$cmd\" "
                 . "(status $status): $err");
    }
    $ErrLogPos = 0;

    # wait for the daemon to write its pid
    my $pid;
    for (1 .. 250) {
        $pid = _read_pidfile();
        last if $pid;
        sleep 0.02;
    }
    bail_out("$name - nginx did not write $PidFile") unless $pid;
    $NginxPid = $pid;
    sleep $Sleep;
}

# --- must_die, as upstream: nginx must not start. An exit code as the
# section's value must match; otherwise any failure will do. A core dump or
# a command that cannot run is a failure. The error log is checked after
# every attempt; an nginx that started anyway is stopped again.
sub run_must_die {
    my ($block, $config) = @_;
    my $name = $block->name;
    my $must_die = $block->must_die;
    chomp $must_die;

    _prepare_server($block, $config);
    $PrevConfig = $config;

    my $cmd = _nginx_cmd();
    for my $rep (0 .. $RepeatEach - 1) {
        $ErrLogPos = 0;
        my ($status) = _run_nginx($cmd);
        if ($status == -1) {
            Test::More::fail("$name - failed to execute the nginx command line");
        } elsif ($status & 128) {
            Test::More::fail("$name - nginx core dumped");
        } elsif ($must_die =~ /^\s*\d+\s*$/) {
            Test::More::is($must_die, $status >> 8, "$name - die with the expected exit code");
        } else {
            Test::More::isnt($status, 0, "$name - die as expected");
        }

        check_error_log($block, $rep);

        if ($status == 0) {
            warn "WARNING: $name - nginx must die but it does not; killing it (req $rep)\n";
            my $pid;
            for (1 .. 15) {
                last if $pid = _read_pidfile();
                sleep $Sleep;
            }
            $NginxPid = $pid;
            stop_nginx_server($name);
        }
    }
}

# ---------------------------------------------------------------- error log

sub error_log_data {
    sleep $Sleep * 3;
    open my $in, '<', $ErrLogFile or return [];
    seek $in, $ErrLogPos, 0 if !$CheckAccumErrLog && $ErrLogPos > 0;
    my @lines = <$in>;
    $ErrLogPos = tell($in) unless $CheckAccumErrLog;
    close $in;
    return \@lines;
}

sub _fmt {
    my $s = shift;
    chomp $s;
    $s =~ s/"/\\"/g;
    $s =~ s/\r/\\r/g;
    $s =~ s/\n/\\n/g;
    return $s;
}

sub _pat_list {
    my $pats = shift;
    if (!ref $pats) {
        chomp $pats;
        return [split /\n+/, $pats];
    }
    return [$pats] if ref $pats eq 'Regexp';
    return [@$pats];
}

sub _line_matches {
    my ($line, $pat) = @_;
    return ref $pat ? $line =~ /$pat/ : index($line, $pat) >= 0;
}

sub check_error_log {
    my ($block, $rep) = @_;
    my $name = $block->name;
    my $lines;

    if (defined $block->error_log) {
        my $pats = _pat_list($block->error_log);
        $lines ||= error_log_data();
        for my $line (@$lines) {
            for my $pat (@$pats) {
                next unless defined $pat;
                if (_line_matches($line, $pat)) {
                    Test::More::pass("$name - pattern \"$pat\" matches a line in error.log (req $rep)");
                    undef $pat;
                }
            }
        }
        for my $pat (grep { defined } @$pats) {
            Test::More::fail("$name - pattern \"$pat\" should match a line in error.log (req $rep)");
        }
    }

    if (defined $block->no_error_log) {
        my $pats = _pat_list($block->no_error_log);
        $lines ||= error_log_data();
        my %found;
        my $i = 0;
        for my $line (@$lines) {
            for my $pat (@$pats) {
                next unless defined $pat;
                if (_line_matches($line, $pat)) {
                    $found{$pat} = 1;
                    my @more = @$lines[$i + 1 .. ($i + 9 < $#$lines ? $i + 9 : $#$lines)];
                    Test::More::fail("$name - pattern \"" . _fmt($pat)
                        . "\" should not match any line in error.log but matches line \""
                        . _fmt($line) . "\" (req $rep)\n" . join('', @more));
                }
            }
            $i++;
        }
        for my $pat (@$pats) {
            next if !defined $pat || $found{$pat};
            Test::More::pass("$name - pattern \"" . _fmt($pat)
                             . "\" does not match a line in error.log (req $rep)");
        }
    }

    # as upstream: an [alert], [crit] or [emerg] line is reported unless a
    # pattern of the block names that level
    my $pats = join ' ', map { "$_" } map { @{ _pat_list($_) } }
        grep { defined } $block->error_log, $block->no_error_log;
    my %quiet = map { $_ => scalar($pats =~ /\[\Q$_\E/) } qw(alert crit emerg);
    $lines ||= error_log_data();
    for my $line (@$lines) {
        if ($line =~ /\[(alert|crit|emerg)\]/ && !$quiet{$1}) {
            warn "WARNING: $name - " . _fmt($line) . "\n";
        }
    }
}

# ---------------------------------------------------------------- requests

sub _strip_request {
    my $r = shift;
    1 while $r =~ s/^\s*\#[^\n]+\s+|^\s+//s;
    return $r;
}

sub _parse_more_headers {
    my $in = shift // '';
    my $out = '';
    my $chunked;
    for my $h (split /\n+/, $in) {
        next if $h =~ /^\s*#/;
        my ($k, $v) = split /:\s*/, $h, 2;
        $v //= '';
        $chunked = 1 if lc($k) eq 'transfer-encoding' && $v eq 'chunked';
        $out .= "$k: $v\r\n";
    }
    return ($out, $chunked);
}

sub build_request {
    my ($name, $raw, $more_headers) = @_;
    $raw = _strip_request($raw);
    my ($first, $content) = split /\n/, $raw, 2;
    bail_out("$name - Request line should be non-empty") unless defined $first && $first =~ /\S/;
    my ($meth, $url, $ver) = split ' ', $first;
    $url //= '/';
    $ver //= 'HTTP/1.1';
    my ($hdrs, $chunked) = _parse_more_headers($more_headers);
    my $len = '';
    $content //= '';
    if (!$chunked && $content ne '' && $hdrs !~ /(?:^|\n)Content-Length:/i) {
        $content =~ s/^\s+|\s+$//gs;
        $len = "Content-Length: " . length($content) . "\r\n";
    }
    my $h = '';
    $h .= "Host: $ServerName\r\n" if $hdrs !~ /(?:^|\n)Host:/i;
    $h .= "Connection: close\r\n" if $hdrs !~ /(?:^|\n)Connection/i;
    return "$meth $url $ver\r\n$h$hdrs$len\r\n$content";
}

sub send_raw_request {
    my ($name, $req, $timeout) = @_;
    my $sock;
    for my $try (1 .. 50) {
        $sock = IO::Socket::INET->new(PeerAddr => $ServerAddr,
                                      PeerPort => $ServerPortForClient,
                                      Proto => 'tcp', Timeout => $timeout);
        last if $sock;
        sleep($try < 10 ? 0.05 : 0.2);
    }
    if (!$sock) {
        Test::More::fail("$name - Can't connect to $ServerAddr:$ServerPortForClient: $! (aborted)");
        return undef;
    }
    $sock->autoflush(1);
    $sock->blocking(0);
    my $sel = IO::Select->new($sock);
    my $off = 0;
    my $resp = '';
    my $deadline = time + $timeout;
    my $writing = 1;
    while (1) {
        my $left = $deadline - time;
        if ($left <= 0) {
            warn "ERROR: client socket timed out - $name\n";
            last;
        }
        if ($writing) {
            my @w = IO::Select->select(undef, $sel, undef, $left);
            next unless @w && @{ $w[1] || [] };
            my $n = syswrite($sock, $req, length($req) - $off, $off);
            if (!defined $n) {
                next if $!{EAGAIN} || $!{EINTR};
                # the server may answer and close before we sent everything
                $writing = 0;
                next;
            }
            $off += $n;
            $writing = 0 if $off >= length $req;
            next;
        }
        my @r = $sel->can_read($left);
        next unless @r;
        my $n = sysread($sock, my $buf, 65536);
        if (!defined $n) {
            next if $!{EAGAIN} || $!{EINTR};
            last;   # ECONNRESET etc.
        }
        last if $n == 0;
        $resp .= $buf;
    }
    close $sock;
    return $resp;
}

sub parse_response {
    my ($name, $raw, $head_req) = @_;
    my $raw_headers = '';
    $raw_headers = $1 if $raw =~ /(.*?\r\n)\r\n/s;
    my $res = HTTP::Response->parse($raw);
    my $code = $res->code;
    if (defined $code && $code !~ /^\d+$/) {
        $res->code(undef);
        undef $code;
    }
    return ($res, $raw_headers) if $code && ($code == 304 || $code == 101) || $head_req;
    my $enc = $res->header('Transfer-Encoding');
    my $len = $res->header('Content-Length');
    if (defined $enc && $enc eq 'chunked') {
        my $body = $res->content // '';
        my $decoded = '';
        my $pos = 0;
        while (1) {
            if (substr($body, $pos) =~ /^[ \t]*([0-9A-Fa-f]+)[^\r\n]*\r\n/) {
                my $size = hex $1;
                $pos += length $&;
                if ($size == 0) {
                    last;
                }
                if (length($body) - $pos < $size + 2) {
                    Test::More::fail("$name - invalid chunked data received "
                                     . "(not enough octets for the data section)");
                    last;
                }
                $decoded .= substr($body, $pos, $size);
                $pos += $size;
                if (substr($body, $pos, 2) ne "\r\n") {
                    Test::More::fail("$name - invalid chunked data received (expected CRLF).");
                    last;
                }
                $pos += 2;
            } else {
                Test::More::fail("$name - no last chunk found - " . substr($body, $pos));
                last;
            }
        }
        $res->content($decoded);
    } elsif (defined $len && $len =~ /^\d+$/) {
        my $body = $res->content // '';
        if (length($body) < $len) {
            warn "WARNING: $name - response body truncated: $len expected, but got "
                 . length($body) . "\n";
        } elsif (length($body) > $len) {
            $res->content(substr $body, 0, $len);
        }
    }
    return ($res, $raw_headers);
}

sub _indexed {
    my ($name, $v, $idx, $need_array) = @_;
    if (ref $v && ref $v eq 'ARRAY') {
        return $v->[$idx];
    }
    bail_out("$name - You asked for many requests, the expected results should be arrays as well.")
        if $need_array;
    return $v;
}

sub _parse_headers {
    my $s = shift;
    my @h;
    for my $line (split /\n/, $s) {
        $line =~ s/^\s+|\s+$//g;
        next if $line eq '';
        if ($line =~ s/^!\s*//) {
            push @h, [$line, undef];
        } else {
            my ($k, $v) = split /\s*:\s*/, $line, 2;
            push @h, [$k, $v // ''];
        }
    }
    return \@h;
}

sub check_response {
    my ($block, $res, $raw_headers, $idx, $rep, $need_array) = @_;
    my $name = $block->name;
    my $code = ($res && $res->code) || '';

    if (defined $block->error_code_like) {
        my $v = _indexed($name, $block->error_code_like, $idx, $need_array);
        Test::More::like($code, qr/$v/sm, "$name - status code ok");
    } elsif (defined $block->error_code) {
        Test::More::is($code, _indexed($name, $block->error_code, $idx, $need_array),
                       "$name - status code ok");
    } else {
        Test::More::is($code, 200, "$name - status code ok");
    }

    if (defined $block->response_headers) {
        my $hs = _parse_headers(_indexed($name, $block->response_headers, $idx, $need_array));
        for my $kv (@$hs) {
            my ($k, $v) = @$kv;
            if (!defined $v) {
                Test::More::unlike($raw_headers, qr/^\s*\Q$k\E\s*:/ms,
                                   "$name - header $k not present in the raw headers");
                next;
            }
            $v =~ s/\$ServerPort\b/$ServerPort/g;
            my $got = $res ? $res->header($k) : undef;
            Test::More::is($got // '', $v, "$name - header $k ok");
        }
    } elsif (defined $block->response_headers_like) {
        my $hs = _parse_headers(_indexed($name, $block->response_headers_like, $idx, $need_array));
        for my $kv (@$hs) {
            my ($k, $v) = @$kv;
            my $got = $res ? $res->header($k) : undef;
            Test::More::like($got // '', qr/^$v$/, "$name - header $k like ok");
        }
    }

    my $content = $res ? $res->content : undef;
    if (defined $block->response_body) {
        my $exp = _indexed($name, $block->response_body, $idx, $need_array);
        if (defined $exp && !ref $exp) {
            $exp =~ s/\$ServerPort\b/$ServerPort/g;
        }
        if (ref $exp) {
            Test::More::like($content, $exp,
                "$name - response_body - like (repeated req $rep, req $idx)");
        } else {
            Test::More::is($content, $exp,
                "$name - response_body - response is expected (repeated req $rep, req $idx)");
        }
    } elsif (defined $block->response_body_like || defined $block->response_body_unlike) {
        my $like = defined $block->response_body_like;
        my $pat = _indexed($name, $like ? $block->response_body_like : $block->response_body_unlike,
                           $idx, $need_array);
        $pat =~ s/\$ServerPort\b/$ServerPort/g unless ref $pat;
        my $summary = $content // '';
        $summary =~ s/^\s+|\s+$//g;
        $summary =~ s/\s+/ /g;
        $summary = substr($summary, 0, 200) . '...' if length $summary > 200;
        my $type = $like ? 'like' : 'unlike';
        if ($like) {
            Test::More::like($content, qr/$pat/s,
                "$name - response_body_$type - response is expected ($summary)");
        } else {
            Test::More::unlike($content, qr/$pat/s,
                "$name - response_body_$type - response is expected ($summary)");
        }
    }
    for my $check (@ResponseBodyChecks) {
        $check->($block, $content, $idx, $rep, 0);
    }
}

sub _requests_of {
    my ($block) = @_;
    my $name = $block->name;
    my $request = $block->request;
    bail_out("$name - request empty") unless defined $request;
    my $more = $block->more_headers // '';
    my @reqs;
    if (!ref $request) {
        my $h = ref $more eq 'ARRAY' ? $more->[0] : $more;
        push @reqs, build_request($name, $request, $h);
    } elsif (ref $request eq 'ARRAY') {
        my $i = 0;
        for my $one (@$request) {
            my $h = ref $more eq 'ARRAY' ? $more->[$i] : $more;
            bail_out("$name - --- more_headers lacks data for the ${i}th request")
                unless defined $h;
            $one = join '', map { ref $_ eq 'HASH' ? $_->{value} : $_ } @$one
                if ref $one eq 'ARRAY';
            push @reqs, build_request($name, $one, $h);
            $i++;
        }
    } else {
        bail_out("$name - invalid --- request: MUST be string or array of requests");
    }
    return \@reqs;
}

sub run_test_helper {
    my ($block, $rep) = @_;
    my $name = $block->name;
    my $reqs = _requests_of($block);
    my $timeout = $block->timeout;
    if (defined $timeout) {
        chomp $timeout;
        $timeout =~ s/ms$// and $timeout /= 1000;
        $timeout =~ s/s$//;
    } else {
        $timeout = $Timeout;
    }
    my $need_array = @$reqs > 1;
    my $idx = 0;
    for my $req (@$reqs) {
        my $head = $req =~ /^\s*HEAD\s+/;
        my $raw = send_raw_request($name, $req, $timeout) // '';
        warn "!!! resp: [$raw]" if $Verbose;
        my ($res, $raw_headers) = parse_response($name, $raw, $head);
        check_response($block, $res, $raw_headers // '', $idx, $rep, $need_array);
        if ($idx < @$reqs - 1) {
            sleep $block->wait if $block->wait;
            check_error_log($block, $rep);
        }
        $idx++;
    }
    sleep $block->wait if $block->wait;
    check_error_log($block, $rep);
}

sub run_test ($) {
    my $block = shift;
    return if defined $block->SKIP;
    my $name = $block->name;
    %RandPorts = ();

    my $config = expand_env_in_text(scalar($block->config), $name);
    if (!defined $config) {
        bail_out("$name - No '--- config' section specified and could not get previous one.")
            unless defined $PrevConfig;
        $config = $PrevConfig;
    }

    if (defined $block->must_die) {
        run_must_die($block, $config);
        return;
    }

    my $running = $NginxPid && _pid_alive($NginxPid);
    if (!$running || $ForceRestart || $config ne ($PrevConfig // '')) {
        start_nginx_server($block, $config);
    }
    $PrevConfig = $config;

    if ($block->init) {
        my $code = $block->init;
        my $ok;
        {
            # upstream evals --- init inside package Test::Nginx::Util
            package Test::Nginx::Util;
            $ok = eval "$code; 1";
        }
        bail_out("$name - init failed: $@") unless $ok;
    }

    $ErrLogPos = 0;
    for my $i (1 .. $RepeatEach) {
        run_test_helper($block, $i - 1);
    }
}

sub run_tests () {
    if (!defined $ENV{TEST_NGINX_SERVER_PORT}) {
        $ENV{TEST_NGINX_SERVER_PORT} = $ServerPort;
    }
    $ENV{TEST_NGINX_SERVROOT} //= $ServRoot;

    my @blocks = Test::Base::blocks();
    @blocks = shuffle @blocks unless $NoShuffle;
    for my $block (@blocks) {
        $_->($block) for @BlockPreprocessors;
        $block->set_value('name', "$0 " . $block->name);
        my $ok = eval { run_test($block); 1 };
        if (!$ok) {
            my $err = $@;
            cleanup();
            die $err;
        }
    }
    cleanup();
}

1;
