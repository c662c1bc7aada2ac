"""W6 cancellation, Python (argv[1]: asyncio or uvloop): 100,000 tasks sleeping 10 s; once
all are asleep each is cancelled and awaited (CancelledError raised at the sleep and
caught by the awaiter). Prints ns per cancel (first cancel to last await)."""

import asyncio
import sys

import bench_common

TASK_COUNT = 100_000


async def main():
    state = {"asleep": 0}

    async def sleep_long():
        state["asleep"] += 1
        await asyncio.sleep(10)

    sleepers = [asyncio.create_task(sleep_long()) for _ in range(TASK_COUNT)]
    for _ in range(1000):
        if state["asleep"] == TASK_COUNT:
            break
        await asyncio.sleep(0)
    started = bench_common.now_ns()
    for sleeper in sleepers:
        sleeper.cancel()
    cancelled = 0
    for sleeper in sleepers:
        try:
            await sleeper
        except asyncio.CancelledError:
            cancelled += 1
    elapsed = bench_common.now_ns() - started
    counts_ok = state["asleep"] == TASK_COUNT and cancelled == TASK_COUNT
    bench_common.result(ns_per_cancel=elapsed / TASK_COUNT, count_ok=counts_ok)
    if not counts_ok:
        print(f"w6_python: {state['asleep']} asleep, {cancelled} cancelled", file=sys.stderr)
    return 0 if counts_ok else 1


bench_common.run(main)
