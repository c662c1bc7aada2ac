"""bench/bench_common.py - what the Python benchmark programs share: choosing the event
loop from the command line (asyncio's own or uvloop's), the clock, resident memory from
/proc/self/status as the C++ programs read it, the RESULT line and the W4 delay sequence
of bench_common.h."""

import asyncio
import sys
import time

LOOPS = ("asyncio", "uvloop")


def run(main_coroutine_function):
    """Runs main() on the loop named by argv[1] and exits with its return value."""
    if len(sys.argv) != 2 or sys.argv[1] not in LOOPS:
        sys.exit(f"usage: {sys.argv[0]} {'|'.join(LOOPS)}")
    if sys.argv[1] == "uvloop":
        import uvloop
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    sys.exit(asyncio.run(main_coroutine_function()))


def now_ns():
    return time.monotonic_ns()


def status_kib(field):
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return -1


def peak_rss_kib():
    return status_kib("VmHWM")


def rss_kib():
    return status_kib("VmRSS")


def result(**values):
    print("RESULT " + " ".join(f"{key}={value:.6g}" if isinstance(value, float) else f"{key}={int(value)}"
                               for key, value in values.items()), flush=True)


DELAY_SEED = 20240601
_MASK = (1 << 64) - 1


def delays_ms(count):
    """bench_next_delay_ms of bench_common.h: the same 0-100 ms sequence."""
    state = DELAY_SEED
    delays = []
    for _ in range(count):
        state = (state * 6364136223846793005 + 1442695040888963407) & _MASK
        delays.append((state >> 33) % 101)
    return delays
