"""P1 spawn+wait, Python (argv[1]: asyncio or uvloop): 2,000 runs of /bin/true one
after the other, each with asyncio.create_subprocess_exec and awaited with wait().
Prints spawns/s; every exit status is checked."""

import asyncio
import sys

import bench_common

SPAWN_COUNT = 2000


async def main():
    failures = 0
    warm_up = await asyncio.create_subprocess_exec("/bin/true")  # untimed
    failures += await warm_up.wait() != 0
    started = bench_common.now_ns()
    for _ in range(SPAWN_COUNT):
        child = await asyncio.create_subprocess_exec("/bin/true")
        failures += await child.wait() != 0
    elapsed = bench_common.now_ns() - started
    bench_common.result(spawns_per_s=SPAWN_COUNT / (elapsed / 1e9), us_per_spawn=elapsed / 1e3 / SPAWN_COUNT,
                        count_ok=failures == 0)
    if failures:
        print(f"p1_python: {failures} runs did not exit with 0", file=sys.stderr)
    return 0 if failures == 0 else 1


bench_common.run(main)
