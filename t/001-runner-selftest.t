# Self-test of the Test::Nginx runner (upstream or t/lib fallback). The
# blocks use stock nginx features only; the modules named in
# TEST_NGINX_LOAD_MODULES are loaded into every block by the runner, here as
# in every other file (TEST 13 checks that, and that it happens once).
use Test::Nginx::Socket 'no_plan';

repeat_each(2);
no_long_string();
run_tests();

__DATA__

=== TEST 1: plain return 200
--- config
    location = /t {
        return 200 "hello";
    }
--- request
GET /t
--- response_body chomp
hello
--- no_error_log
[error]



=== TEST 2: inline error_code 201
--- config
    location = /created {
        return 201 "made";
    }
--- request
POST /created
--- error_code: 201
--- response_body: made



=== TEST 3: headers set by add_header, and absent headers
--- config
    location = /h {
        add_header X-Billing-Test "yes" always;
        add_header Cache-Control "no-store" always;
        return 200 "ok";
    }
--- request
GET /h
--- response_headers
X-Billing-Test: yes
Cache-Control: no-store
Content-Type: text/plain
!X-Not-There
!Set-Cookie
--- response_headers_like
X-Billing-Test: y.s
--- response_body: ok



=== TEST 4: response_body_like with chomp, and the Host header sent
--- config
    location = /host {
        return 200 "host=$host uri=$uri method=$request_method\n";
    }
--- request
GET /host
--- response_body_like chomp
^host=localhost uri=/host method=GET$



=== TEST 5: POST with a body: Content-Length is computed (body trimmed)
--- config
    location = /len {
        return 200 "len=$content_length ct=$http_content_type";
    }
--- request
POST /len
{"a":1}
--- more_headers
Content-Type: application/json
--- response_body: len=7 ct=application/json



=== TEST 6: request body is read and visible (proxied to a second server)
--- http_config
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        location / {
            return 200 "backend saw $content_length bytes";
        }
    }
--- config
    location = /echo {
        client_body_in_single_buffer on;
        add_header X-Echo "[$request_body]" always;
        proxy_pass http://127.0.0.1:$TEST_NGINX_RAND_PORT_1/;
    }
--- request
POST /echo
hello body
--- response_headers
X-Echo: [hello body]
--- response_body: backend saw 10 bytes



=== TEST 7: more_headers reach nginx; several headers
--- config
    location = /mh {
        return 200 "auth=$http_authorization idem=$http_idempotency_key";
    }
--- request
GET /mh
--- more_headers
Authorization: Bearer abc.def.ghi
Idempotency-Key: key-123
--- response_body: auth=Bearer abc.def.ghi idem=key-123



=== TEST 8: 404 of a missing file is logged
--- config
--- request
GET /no-such-file.html
--- error_code: 404
--- response_body_like: 404 Not Found
--- error_log
open()
failed (2: No such file or directory)
--- no_error_log
[alert]



=== TEST 9: error_log patterns through eval (Regexp objects)
--- config
    location = /e {
        return 403;
    }
--- request
GET /e
--- error_code: 403
--- error_log eval
[qr/http finalize request: 403, "\/e\?" a:1, c:1/]
--- no_error_log eval
[qr/\[(?:emerg|alert|crit)\]/]



=== TEST 10: TEST_NGINX_ variables are expanded in config
--- config
    location = /port {
        return 200 "port=$TEST_NGINX_SERVER_PORT";
    }
--- request
GET /port
--- response_body_like: ^port=\d+$



=== TEST 11: chunked responses are decoded (autoindex), user_files
--- user_files
>>> listing/a.txt
aaa
>>> listing/b.txt
bbb
--- config
    location /listing/ {
        root html;
        autoindex on;
    }
--- request
GET /listing/
--- response_headers
Transfer-Encoding: chunked
!Content-Length
--- response_body_like chomp
<a href="a\.txt">a\.txt</a>.*<a href="b\.txt">b\.txt</a>



=== TEST 12: several requests in one block (request eval array)
--- config
    location /multi {
        return 200 "got $uri";
    }
--- request eval
["GET /multi/a", "GET /multi/b"]
--- response_body eval
["got /multi/a", "got /multi/b"]
--- error_code eval
[200, 200]



=== TEST 13: the runner loads every module of TEST_NGINX_LOAD_MODULES, once
Loading them again in main_config must be refused by nginx.
--- main_config eval
CORE::join '', map { "load_module $_;\n" } split ' ', $ENV{TEST_NGINX_LOAD_MODULES} // ''
--- config
--- must_die
--- error_log
[emerg]
is already loaded



=== TEST 14: must_die with an exit code, and error_log / no_error_log on startup errors
--- config
    location = /t {
        return 200 "s3cret-value";
        no_such_directive on;
    }
--- must_die: 1
--- error_log
[emerg]
unknown directive "no_such_directive"
--- no_error_log
s3cret-value



=== TEST 15: servroot holds only what upstream Test::Nginx removes before a run
--- config
    location = /t {
        return 200 "ok";
    }
--- init
opendir my $dh, $ENV{TEST_NGINX_SERVER_ROOT} or die "servroot: $!";
my @odd = grep { !/^(?:\.\.?|conf|html|logs|cache|\w+_temp|\w+_cache)$/ } readdir $dh;
Test::More::is("@odd", '', 'nothing else at the top of servroot');
--- request
GET /t
--- response_body: ok
