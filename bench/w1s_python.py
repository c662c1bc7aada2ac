"""W1s suspended tasks, Python (argv[1]: asyncio or uvloop): 1,000,000 tasks all waiting
on one asyncio.Event, then released. Prints the RSS growth while all are suspended
divided by the task count."""

import asyncio
import sys

import bench_common

TASK_COUNT = 1_000_000


async def main():
    release = asyncio.Event()
    all_finished = asyncio.Event()
    counts = {"waiting": 0, "finished": 0}

    async def wait_for_release():
        counts["waiting"] += 1
        await release.wait()
        counts["finished"] += 1
        if counts["finished"] == TASK_COUNT:
            all_finished.set()

    rss_before = bench_common.rss_kib()
    # The loop holds only weak references to tasks: keep them, as a real program must.
    tasks = [asyncio.create_task(wait_for_release()) for _ in range(TASK_COUNT)]
    for _ in range(1000):
        if counts["waiting"] == TASK_COUNT:
            break
        await asyncio.sleep(0)
    rss_suspended = bench_common.rss_kib()
    release.set()
    await all_finished.wait()
    del tasks
    counts_ok = counts["waiting"] == TASK_COUNT and counts["finished"] == TASK_COUNT
    growth = rss_suspended - rss_before
    bench_common.result(bytes_per_task=growth * 1024.0 / TASK_COUNT, rss_growth_kib=growth, count_ok=counts_ok)
    if not counts_ok:
        print(f"w1s_python: {counts}", file=sys.stderr)
    return 0 if counts_ok else 1


bench_common.run(main)
