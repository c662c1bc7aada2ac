"""W5 to_thread, Python (argv[1]: asyncio or uvloop): 200,000 calls of a trivial function
on the loop's default executor, in batches of 1,000 gathered at once. Uses
loop.run_in_executor(None, ...), which is asyncio.to_thread without the context copy
(nothing here needs context variables). Prints calls/s; the sum is checked."""

import asyncio
import sys

import bench_common

CALL_COUNT = 200_000
BATCH_SIZE = 1_000


def successor(value):
    return value + 1


async def main():
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, successor, 0)  # the pool's first thread starts here
    total = 0
    started = bench_common.now_ns()
    for first in range(0, CALL_COUNT, BATCH_SIZE):
        results = await asyncio.gather(*[loop.run_in_executor(None, successor, value)
                                         for value in range(first, first + BATCH_SIZE)])
        total += sum(results)
    elapsed = bench_common.now_ns() - started
    sum_ok = total == CALL_COUNT * (CALL_COUNT + 1) // 2
    bench_common.result(calls_per_s=CALL_COUNT / (elapsed / 1e9), sum_ok=sum_ok)
    if not sum_ok:
        print(f"w5_python: sum {total}", file=sys.stderr)
    return 0 if sum_ok else 1


bench_common.run(main)
