"""bench/h1_aiohttp.py h1|h2|h3|c1 PORT [REQUESTS] - aiohttp on uvloop (H1/H2/H3/C1).

The same workloads and RESULT keys as bench/h1_common.hpp: one ClientSession whose
TCPConnector allows as many connections as the workload has, and as many worker tasks,
each sending its next GET once its last body was read. H3 uses force_close (a new
connection per request). Client CPU is user + system time of this process
(resource.getrusage) across the timed part. Run with Debian's /usr/bin/python3.
"""

import asyncio
import resource
import sys
import time

import aiohttp
import uvloop

WORKLOADS = {
    # name: (path, body size, connections, requests, new connection per request)
    "h1": ("/1k", 1024, 64, 100000, False),
    "h2": ("/1m", 1 << 20, 8, 1000, False),
    "h3": ("/1k", 1024, 16, 10000, True),
    "c1": ("/c64k", 65536, 16, 10000, False),
}


def cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def percentile(sorted_values, fraction):
    index = min(len(sorted_values) - 1, int(fraction * len(sorted_values)))
    return sorted_values[index]


async def run(name, port, requests):
    path, body_size, connections, _, new_connection = WORKLOADS[name]
    url = "http://127.0.0.1:%d%s" % (port, path)
    connector = aiohttp.TCPConnector(limit=connections, force_close=new_connection)
    latencies_us = []
    counts = {"started": 0, "good": 0, "bytes": 0}

    async def worker(session):
        while counts["started"] < requests:
            counts["started"] += 1
            begin = time.perf_counter()
            async with session.get(url) as response:
                body = await response.read()
                status = response.status
            latencies_us.append((time.perf_counter() - begin) * 1e6)
            if status != 200 or len(body) != body_size:
                print("bad response: status %d, %d body bytes" % (status, len(body)), file=sys.stderr)
                continue
            counts["good"] += 1
            counts["bytes"] += len(body)

    async with aiohttp.ClientSession(connector=connector) as session:
        cpu_start = cpu_seconds()
        wall_start = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(connections)))
        wall = time.perf_counter() - wall_start
        cpu_us = (cpu_seconds() - cpu_start) * 1e6

    if counts["good"] != requests or counts["bytes"] != requests * body_size:
        print("wrong result: %d good responses of %d, %d body bytes" % (counts["good"], requests, counts["bytes"]),
              file=sys.stderr)
        return 1
    print("%s: %d requests in %.3f s, client CPU %.3f s" % (name, requests, wall, cpu_us / 1e6), file=sys.stderr)
    if name == "h1":
        latencies_us.sort()
        print("RESULT req_per_s=%.0f p50_us=%.1f p99_us=%.1f client_cpu_us_per_req=%.2f"
              % (requests / wall, percentile(latencies_us, 0.50), percentile(latencies_us, 0.99), cpu_us / requests))
    elif name == "h2":
        print("RESULT mb_per_s=%.1f client_cpu_ms_per_mib=%.4f"
              % (counts["bytes"] / 1e6 / wall, cpu_us / 1000 / (counts["bytes"] / 1048576)))
    elif name == "h3":
        print("RESULT req_per_s=%.0f client_cpu_us_per_req=%.2f" % (requests / wall, cpu_us / requests))
    else:
        print("RESULT req_per_s=%.0f client_cpu_us_per_resp=%.2f" % (requests / wall, cpu_us / requests))
    return 0


def main():
    if len(sys.argv) not in (3, 4) or sys.argv[1] not in WORKLOADS:
        print("usage: h1_aiohttp.py h1|h2|h3|c1 PORT [REQUESTS]", file=sys.stderr)
        return 2
    name, port = sys.argv[1], int(sys.argv[2])
    requests = int(sys.argv[3]) if len(sys.argv) == 4 else WORKLOADS[name][3]
    uvloop.install()
    return asyncio.run(run(name, port, requests))


if __name__ == "__main__":
    sys.exit(main())
