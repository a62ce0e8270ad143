# Shared by bench/run.sh and bench/first-chunk.sh (sourced once mock-upstream runs at
# $MOCK_PORT, with $WORK, `log` and `die` defined): the reference proxy, Debian's nginx
# (installed when missing; NGINX= another binary), and `nginx_conf`, its configuration.
NGINX="${NGINX:-/usr/sbin/nginx}"
if [ ! -x "$NGINX" ]; then
    log "installing nginx (the reference proxy)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null 2>&1 ||
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null
fi
[ -x "$NGINX" ] || die "nginx is required (apt-get install nginx)"

# nginx as a plain reverse proxy, configured as one would for this job: one worker (one core),
# keep-alive connections to the upstream, no access log, responses passed on as they arrive
# (proxy_buffering off, as the gateway streams).
nginx_conf() { # port master_process(on|off) -> config on stdout
    mkdir -p "$WORK/nginx" && chmod 777 "$WORK/nginx"
    cat <<EOF
worker_processes 1;
daemon off;
master_process $2;
pid $WORK/nginx/nginx-$1.pid;
error_log $WORK/nginx/error-$1.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $WORK/nginx/body;
    proxy_temp_path $WORK/nginx/proxy;
    fastcgi_temp_path $WORK/nginx/fastcgi;
    uwsgi_temp_path $WORK/nginx/uwsgi;
    scgi_temp_path $WORK/nginx/scgi;
    keepalive_requests 1000000;
    upstream mock { server 127.0.0.1:$MOCK_PORT; keepalive 256; keepalive_requests 1000000; }
    server {
        listen 127.0.0.1:$1;
        location / {
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }
    }
}
EOF
}
