"""W2 ping-pong, Python (argv[1]: asyncio or uvloop): two tasks, two asyncio.Queue of
maxsize 1, 1,000,000 round trips. Prints ns per round trip; every reply is checked."""

import asyncio
import sys

import bench_common

ROUND_TRIPS = 1_000_000


async def ping(requests, replies):
    wrong_replies = 0
    for n in range(ROUND_TRIPS):
        await requests.put(n)
        if await replies.get() != n + 1:
            wrong_replies += 1
    return wrong_replies


async def pong(requests, replies):
    for _ in range(ROUND_TRIPS):
        await replies.put(await requests.get() + 1)


async def main():
    requests = asyncio.Queue(maxsize=1)
    replies = asyncio.Queue(maxsize=1)
    started = bench_common.now_ns()
    wrong_replies, _ = await asyncio.gather(ping(requests, replies), pong(requests, replies))
    elapsed = bench_common.now_ns() - started
    bench_common.result(ns_per_round_trip=elapsed / ROUND_TRIPS, replies_ok=wrong_replies == 0)
    if wrong_replies:
        print(f"w2_python: {wrong_replies} wrong replies", file=sys.stderr)
    return 0 if wrong_replies == 0 else 1


bench_common.run(main)
