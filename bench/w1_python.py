"""W1 spawn+gather, Python (argv[1]: asyncio or uvloop): 1,000,000 coroutines returning
their index, given to asyncio.gather (which wraps each in a task), the sum checked.
Prints ns per task and the peak RSS."""

import asyncio
import sys

import bench_common

TASK_COUNT = 1_000_000


async def return_index(index):
    return index


async def main():
    started = bench_common.now_ns()
    results = await asyncio.gather(*[return_index(index) for index in range(TASK_COUNT)])
    elapsed = bench_common.now_ns() - started
    sum_ok = sum(results) == TASK_COUNT * (TASK_COUNT - 1) // 2 and len(results) == TASK_COUNT
    bench_common.result(ns_per_task=elapsed / TASK_COUNT, peak_rss_kib=bench_common.peak_rss_kib(), sum_ok=sum_ok)
    if not sum_ok:
        print("w1_python: wrong sum", file=sys.stderr)
    return 0 if sum_ok else 1


bench_common.run(main)
