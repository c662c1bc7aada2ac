"""P1 spawn+wait, Python (argv[1]: asyncio or uvloop): 2,000 runs of /bin/true one
after the other, each with asyncio.create_subprocess_exec and awaited with wait().
Prints spawns/s; every exit status is checked.

With asyncio's own loop on Python 3.11 (Debian 12's) the child watcher is set to
asyncio.PidfdChildWatcher: a pidfd per child, polled by the loop, which Python 3.12 and
later pick by themselves where the kernel has pidfd_open. 3.11's default,
ThreadedChildWatcher, starts a thread per child to block in waitpid, and costs more
than half the spawn rate here. uvloop waits for children in libuv (SIGCHLD) and ignores
the child watcher."""

import asyncio
import os
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


def use_pidfd_child_watcher():
    """What Python 3.12+ does by default on Linux: asyncio.PidfdChildWatcher if pidfds work."""
    if sys.argv[1:] != ["asyncio"] or sys.version_info >= (3, 12):
        return
    try:
        os.close(os.pidfd_open(os.getpid()))
    except (AttributeError, OSError):
        return  # no pidfd_open: asyncio's default watcher stays
    asyncio.set_child_watcher(asyncio.PidfdChildWatcher())


use_pidfd_child_watcher()
bench_common.run(main)
