#!/usr/bin/env bash
# bench/nginx.sh start|stop <dir> - the private nginx the HTTP benchmarks talk to.
#
#   bench/nginx.sh start <dir>   writes <dir>/nginx.conf and the files it serves, starts
#                                nginx pinned to CPU 0, prints "PORT TLS_PORT" on stdout once
#                                both answer (at most 10 s); non-zero and the error log if not
#   bench/nginx.sh stop <dir>    stops it (SIGQUIT, then SIGTERM, then SIGKILL, each bounded)
#
# One process that serves (master_process off: the single worker), 127.0.0.1 only,
# keep-alive with keepalive_requests far above any benchmark's request count, no
# access log (it would cost nginx more than the clients under test). What it serves:
#   /1k    a static file of 1,024 bytes
#   /1m    a static file of 1,048,576 bytes (sendfile)
#   /c64k  a 65,536-byte file sent with Transfer-Encoding: chunked: sub_filter is a
#          body filter, so nginx no longer knows the length in advance and chunks it
# The same over TLS (1.2 and 1.3, HTTP/1.1, nginx's defaults otherwise) on TLS_PORT, with a
# certificate for 127.0.0.1 and localhost issued by a CA that the openssl command makes at
# the first start: <dir>/tls/ca.pem is what the clients trust (EC P-256 keys).
# Nothing outside <dir> is written; no root needed. Needs Debian's nginx (sub and ssl
# modules) and the openssl command.
set -euo pipefail

usage() {
  echo "usage: $0 start|stop <dir>" >&2
  exit 2
}
[ $# -eq 2 ] || usage
action=$1
dir=$2

find_nginx() {
  if [ -n "${NGINX:-}" ]; then echo "$NGINX"; return; fi
  for candidate in "$(command -v nginx 2>/dev/null || true)" /usr/sbin/nginx /usr/local/sbin/nginx /sbin/nginx; do
    if [ -n "$candidate" ] && [ -x "$candidate" ]; then echo "$candidate"; return; fi
  done
  echo "bench/nginx.sh: nginx not found (apt-get install nginx, or set NGINX=)" >&2
  exit 1
}

# A port the kernel hands out for 127.0.0.1:0, released at once: nginx binds it next
# (start retries with another one if something else took it meanwhile).
free_port() {
  /usr/bin/python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()'
}

# A file of exactly `size` bytes of repeated printable text.
write_file_of_size() {
  local path=$1 size=$2
  { yes 'coro_loop benchmark body' || true; } | head -c "$size" > "$path"
  [ "$(stat -c %s "$path")" -eq "$size" ]
}

# The CA and the server's certificate, made once per <dir> (valid 30 days; remade when older).
make_certificates() {
  local tls=$dir/tls
  if [ -f "$tls/server.pem" ] && [ -n "$(find "$tls/server.pem" -mtime -20 2>/dev/null)" ]; then return 0; fi
  command -v openssl >/dev/null || { echo "bench/nginx.sh: the openssl command is missing (apt-get install openssl)" >&2; exit 1; }
  mkdir -p "$tls"
  cat > "$tls/openssl.cnf" <<'EOF'
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca_ext]
basicConstraints = critical, CA:true
keyUsage = critical, keyCertSign, cRLSign
[server_ext]
basicConstraints = CA:false
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
EOF
  {
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$tls/ca.key" &&
      openssl req -config "$tls/openssl.cnf" -x509 -new -key "$tls/ca.key" -subj "/CN=coro_loop bench CA" \
        -days 30 -extensions ca_ext -out "$tls/ca.pem" &&
      openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$tls/server.key" &&
      openssl req -config "$tls/openssl.cnf" -new -key "$tls/server.key" -subj "/CN=127.0.0.1" -out "$tls/server.csr" &&
      openssl x509 -req -in "$tls/server.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" -set_serial 2 -days 30 \
        -extfile "$tls/openssl.cnf" -extensions server_ext -out "$tls/server.pem"
  } >"$tls/openssl.log" 2>&1 || { cat "$tls/openssl.log" >&2; exit 1; }
}

# What both server blocks serve.
locations() {
  cat <<EOF
    root $dir/html;
    location / { }
    location = /c64k {
      alias $dir/html/64k;
      sub_filter_types *;
      sub_filter '@@never matches@@' '';
    }
EOF
}

write_config() {
  local port=$1 tls_port=$2
  cat > "$dir/nginx.conf" <<EOF
# written by bench/nginx.sh
daemon on;
master_process off;
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $dir/tmp/client_body;
  proxy_temp_path $dir/tmp/proxy;
  fastcgi_temp_path $dir/tmp/fastcgi;
  uwsgi_temp_path $dir/tmp/uwsgi;
  scgi_temp_path $dir/tmp/scgi;
  default_type application/octet-stream;
  sendfile on;
  tcp_nodelay on;
  open_file_cache max=16 inactive=600s;
  open_file_cache_valid 600s;
  keepalive_requests 100000000;
  keepalive_timeout 600s;
  server {
    listen 127.0.0.1:$port backlog=4096;
$(locations)
  }
  server {
    listen 127.0.0.1:$tls_port ssl backlog=4096;
    ssl_certificate $dir/tls/server.pem;
    ssl_certificate_key $dir/tls/server.key;
    ssl_protocols TLSv1.2 TLSv1.3;
$(locations)
  }
}
EOF
}

# True once GET /1k answers 200 with 1,024 bytes, in plain and over TLS (verified).
answers() {
  local port=$1 tls_port=$2 size tls_size
  size=$(curl -s --max-time 1 -o /dev/null -w '%{http_code} %{size_download}' "http://127.0.0.1:$port/1k" || true)
  tls_size=$(curl -s --max-time 1 --cacert "$dir/tls/ca.pem" -o /dev/null -w '%{http_code} %{size_download}' \
    "https://127.0.0.1:$tls_port/1k" || true)
  [ "$size" = "200 1024" ] && [ "$tls_size" = "200 1024" ]
}

stop_nginx() {
  [ -f "$dir/nginx.pid" ] || return 0
  local pid
  pid=$(cat "$dir/nginx.pid" 2>/dev/null || true)
  rm -f "$dir/nginx.pid"
  [ -n "$pid" ] || return 0
  # Each signal gets a bounded wait: graceful 5 s, fast 2 s, then SIGKILL 5 s.
  for step in QUIT:50 TERM:20 KILL:50; do
    kill -s "${step%%:*}" "$pid" 2>/dev/null || return 0
    for ((i = 0; i < ${step##*:}; i++)); do
      kill -0 "$pid" 2>/dev/null || return 0
      sleep 0.1
    done
  done
  echo "bench/nginx.sh: nginx $pid did not exit" >&2
  return 1
}

case $action in
  start)
    nginx_binary=$(find_nginx)
    mkdir -p "$dir/html" "$dir/tmp"
    dir=$(cd "$dir" && pwd)
    stop_nginx  # a leftover from an interrupted run in the same directory
    write_file_of_size "$dir/html/1k" 1024
    write_file_of_size "$dir/html/1m" 1048576
    write_file_of_size "$dir/html/64k" 65536
    make_certificates
    for attempt in 1 2 3 4 5; do
      port=$(free_port)
      tls_port=$(free_port)
      [ "$tls_port" != "$port" ] || continue
      write_config "$port" "$tls_port"
      rm -f "$dir/error.log"
      if ! taskset -c 0 "$nginx_binary" -p "$dir/" -c "$dir/nginx.conf" -e "$dir/error.log" 2>>"$dir/error.log"; then
        if grep -q 'in use' "$dir/error.log" 2>/dev/null; then continue; fi
        cat "$dir/error.log" >&2
        exit 1
      fi
      for ((i = 0; i < 100; i++)); do
        if answers "$port" "$tls_port"; then
          echo "$port $tls_port"
          exit 0
        fi
        sleep 0.1
      done
      echo "bench/nginx.sh: nginx on port $port not answering within 10 s (attempt $attempt)" >&2
      cat "$dir/error.log" >&2 || true
      stop_nginx
    done
    echo "bench/nginx.sh: nginx did not start in $dir" >&2
    exit 1
    ;;
  stop)
    [ -d "$dir" ] || exit 0
    dir=$(cd "$dir" && pwd)
    stop_nginx
    ;;
  *)
    usage
    ;;
esac
