#!/usr/bin/env bash
# bench/nginx.sh start|stop <dir> - the private nginx the HTTP benchmarks talk to.
#
#   bench/nginx.sh start <dir>   writes <dir>/nginx.conf and the files it serves, starts
#                                nginx pinned to CPU 0, prints its port on stdout once it
#                                answers (at most 10 s); non-zero and the error log if not
#   bench/nginx.sh stop <dir>    stops it (SIGQUIT, then SIGTERM, then SIGKILL, each bounded)
#
# One process that serves (master_process off: the single worker), 127.0.0.1 only,
# keep-alive with keepalive_requests far above any benchmark's request count, no
# access log (it would cost nginx more than the clients under test). What it serves:
#   /1k    a static file of 1,024 bytes
#   /1m    a static file of 1,048,576 bytes (sendfile)
#   /c64k  a 65,536-byte file sent with Transfer-Encoding: chunked: sub_filter is a
#          body filter, so nginx no longer knows the length in advance and chunks it
# Nothing outside <dir> is written; no root needed. Needs Debian's nginx (sub module).
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

write_config() {
  local port=$1
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
    root $dir/html;
    location / { }
    location = /c64k {
      alias $dir/html/64k;
      sub_filter_types *;
      sub_filter '@@never matches@@' '';
    }
  }
}
EOF
}

# True once GET /1k answers 200 with 1,024 bytes.
answers() {
  local port=$1 size
  size=$(curl -s --max-time 1 -o /dev/null -w '%{http_code} %{size_download}' "http://127.0.0.1:$port/1k" || true)
  [ "$size" = "200 1024" ]
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
    for attempt in 1 2 3 4 5; do
      port=$(free_port)
      write_config "$port"
      rm -f "$dir/error.log"
      if ! taskset -c 0 "$nginx_binary" -p "$dir/" -c "$dir/nginx.conf" -e "$dir/error.log" 2>>"$dir/error.log"; then
        if grep -q 'in use' "$dir/error.log" 2>/dev/null; then continue; fi
        cat "$dir/error.log" >&2
        exit 1
      fi
      for ((i = 0; i < 100; i++)); do
        if answers "$port"; then
          echo "$port"
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
