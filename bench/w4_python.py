"""W4 many timers, Python (argv[1]: asyncio or uvloop): 100,000 tasks each sleeping a
pseudo-random 0-100 ms (the sequence of bench_common.h). Prints the time to arm them
all (creating the tasks until every one has started its sleep), the wall time past
100 ms until the last one woke, and the peak RSS."""

import asyncio
import sys

import bench_common

TASK_COUNT = 100_000


async def main():
    delays = bench_common.delays_ms(TASK_COUNT)
    state = {"armed": 0, "woken": 0, "early": 0}
    all_woken = asyncio.Event()

    async def sleep_for(delay_ms):
        started = bench_common.now_ns()
        state["armed"] += 1
        await asyncio.sleep(delay_ms / 1000)
        if bench_common.now_ns() - started < delay_ms * 1_000_000 - 1_000_000:
            state["early"] += 1  # the loop's clock has about 1 ms of resolution slack
        state["woken"] += 1
        if state["woken"] == TASK_COUNT:
            all_woken.set()

    started = bench_common.now_ns()
    tasks = [asyncio.create_task(sleep_for(delay)) for delay in delays]
    for _ in range(1000):
        if state["armed"] == TASK_COUNT:
            break
        await asyncio.sleep(0)
    armed = bench_common.now_ns()
    await all_woken.wait()
    finished = bench_common.now_ns()
    del tasks
    counts_ok = state["armed"] == TASK_COUNT and state["woken"] == TASK_COUNT and state["early"] == 0
    bench_common.result(arm_ms=(armed - started) / 1e6, late_ms=(finished - started) / 1e6 - 100.0,
                        peak_rss_kib=bench_common.peak_rss_kib(), count_ok=counts_ok)
    if not counts_ok:
        print(f"w4_python: {state}", file=sys.stderr)
    return 0 if counts_ok else 1


bench_common.run(main)
