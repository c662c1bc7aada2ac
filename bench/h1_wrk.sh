#!/usr/bin/env bash
# bench/h1_wrk.sh h1|h2|h3|c1 PORT [SECONDS] - wrk, the HTTP ceiling, as a benchmark client.
#
# The same workloads as bench/h1_common.hpp (path, connections; H3 sends
# "Connection: close", so nginx closes and wrk reconnects for every request), but wrk
# runs for a duration (default 3 s) instead of a request count, on one thread. Its
# output becomes the same RESULT line; client CPU is wrk's user + system time (bash's
# `time`, from wait4) divided by the requests it completed. wrk does not read body
# sizes back to us: a non-2xx status or any socket error fails the run instead.
set -euo pipefail

[ $# -ge 2 ] && [ $# -le 3 ] || { echo "usage: $0 h1|h2|h3|c1 PORT [SECONDS]" >&2; exit 2; }
workload=$1
port=$2
seconds=${3:-3}
extra=()
case $workload in
  h1) path=/1k; connections=64; extra=(--latency) ;;
  h2) path=/1m; connections=8 ;;
  h3) path=/1k; connections=16; extra=(-H "Connection: close") ;;
  c1) path=/c64k; connections=16 ;;
  *) echo "$0: unknown workload $workload" >&2; exit 2 ;;
esac

output=$(mktemp)
trap 'rm -f "$output"' EXIT
TIMEFORMAT='%U %S'
# `time` reports on stderr after the command's own; wrk writes its report to stdout.
cpu=$( { time wrk -t1 -c"$connections" -d"${seconds}s" --timeout 10s "${extra[@]}" \
          "http://127.0.0.1:$port$path" > "$output"; } 2>&1 | tail -n 1 )
cat "$output" >&2

if grep -q -e 'Non-2xx' -e 'Socket errors' "$output"; then
  echo "$0: wrk saw errors" >&2
  exit 1
fi

/usr/bin/python3 - "$workload" "$cpu" "$output" <<'EOF'
import re, sys
workload, cpu, path = sys.argv[1], sys.argv[2], sys.argv[3]
text = open(path).read()
user, system = (float(x) for x in cpu.split())
cpu_us = (user + system) * 1e6
requests = int(re.search(r"(\d+) requests in ([\d.]+)(\w+)", text).group(1))
per_second = float(re.search(r"Requests/sec:\s*([\d.]+)", text).group(1))
if requests == 0:
    sys.exit("no requests completed")

def micros(value, unit):
    return float(value) * {"us": 1, "ms": 1e3, "s": 1e6, "m": 60e6}[unit]

def latency(percent):
    match = re.search(r"^\s*%s%%\s+([\d.]+)(us|ms|s|m)\s*$" % percent, text, re.M)
    return micros(*match.groups())

if workload == "h1":
    print("RESULT req_per_s=%.0f p50_us=%.1f p99_us=%.1f client_cpu_us_per_req=%.2f"
          % (per_second, latency(50), latency(99), cpu_us / requests))
elif workload == "h2":
    mib = requests * 1.0  # one MiB per response
    print("RESULT mb_per_s=%.1f client_cpu_ms_per_mib=%.4f"
          % (per_second * 1048576 / 1e6, cpu_us / 1000 / mib))
elif workload == "h3":
    print("RESULT req_per_s=%.0f client_cpu_us_per_req=%.2f" % (per_second, cpu_us / requests))
else:
    print("RESULT req_per_s=%.0f client_cpu_us_per_resp=%.2f" % (per_second, cpu_us / requests))
EOF
