"""W3 one producer, four consumers, Python (argv[1]: asyncio or uvloop): asyncio.Queue
(maxsize 1024), 2,000,000 items, then one end marker (None) per consumer. Prints items/s
and the fairness min/max of the items each consumer took; the sum is checked."""

import asyncio
import sys

import bench_common

ITEM_COUNT = 2_000_000
CONSUMER_COUNT = 4


async def produce(items):
    for item in range(ITEM_COUNT):
        await items.put(item)
    for _ in range(CONSUMER_COUNT):
        await items.put(None)


async def consume(items):
    taken = 0
    total = 0
    while (item := await items.get()) is not None:
        taken += 1
        total += item
    return taken, total


async def main():
    items = asyncio.Queue(maxsize=1024)
    started = bench_common.now_ns()
    _, *tallies = await asyncio.gather(produce(items), *(consume(items) for _ in range(CONSUMER_COUNT)))
    elapsed = bench_common.now_ns() - started
    taken = sum(count for count, _ in tallies)
    total = sum(item_sum for _, item_sum in tallies)
    counts = [count for count, _ in tallies]
    sum_ok = taken == ITEM_COUNT and total == ITEM_COUNT * (ITEM_COUNT - 1) // 2
    bench_common.result(items_per_s=ITEM_COUNT / (elapsed / 1e9),
                        fairness=min(counts) / max(counts) if max(counts) else 0.0, sum_ok=sum_ok)
    if not sum_ok:
        print(f"w3_python: {taken} items taken, sum {total}", file=sys.stderr)
    return 0 if sum_ok else 1


bench_common.run(main)
