"""bench/e1_uvloop.py - E1 echo with asyncio streams on uvloop (see bench/e1_common.hpp).

100 connections x 10,000 round trips of 64 bytes. The process forks: the child is the
echo server (asyncio.start_server, pinned to CPU 0), the parent the clients
(asyncio.open_connection, pinned to CPU 1); the child sends its port through a pipe and
exits once every connection closed; its CPU comes from os.wait4. Prints
RESULT round_trips_per_s=.. client_cpu_us_per_rt=.. server_cpu_us_per_rt=..
Run with Debian's /usr/bin/python3.
"""

import asyncio
import os
import resource
import select
import signal
import struct
import sys
import time

import uvloop

CONNECTIONS = 100
ROUND_TRIPS = 10000
MESSAGE = bytes(ord("A") + i % 26 for i in range(64))


async def serve(port_pipe):
    finished = 0
    all_finished = asyncio.Event()

    async def echo(reader, writer):
        nonlocal finished
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
        writer.close()
        finished += 1
        if finished == CONNECTIONS:
            all_finished.set()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    os.write(port_pipe, struct.pack("H", server.sockets[0].getsockname()[1]))
    await asyncio.wait_for(all_finished.wait(), 115)
    server.close()
    await server.wait_closed()


async def run_clients(port):
    async def client():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        good = 0
        for _ in range(ROUND_TRIPS):
            writer.write(MESSAGE)
            await writer.drain()
            if await reader.readexactly(len(MESSAGE)) == MESSAGE:
                good += 1
        writer.close()
        await writer.wait_closed()
        return good

    return sum(await asyncio.gather(*(client() for _ in range(CONNECTIONS))))


def cpu_us(usage):
    return (usage.ru_utime + usage.ru_stime) * 1e6


def main():
    read_end, write_end = os.pipe()
    server = os.fork()
    if server == 0:
        os.close(read_end)
        os.sched_setaffinity(0, {0})
        status = 1
        try:
            uvloop.install()
            asyncio.run(serve(write_end))
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    os.sched_setaffinity(0, {1})
    try:
        if not select.select([read_end], [], [], 10)[0]:
            raise RuntimeError("echo server did not start within 10 s")
        (port,) = struct.unpack("H", os.read(read_end, 2))
        uvloop.install()
        before = resource.getrusage(resource.RUSAGE_SELF)
        begin = time.perf_counter()
        good = asyncio.run(asyncio.wait_for(run_clients(port), 115))
        wall = time.perf_counter() - begin
        after = resource.getrusage(resource.RUSAGE_SELF)
    except BaseException:
        os.kill(server, signal.SIGKILL)
        os.waitpid(server, 0)
        raise
    deadline = time.monotonic() + 30
    while True:
        done, status, server_usage = os.wait4(server, os.WNOHANG)
        if done == server:
            break
        if time.monotonic() > deadline:
            os.kill(server, signal.SIGKILL)
            os.waitpid(server, 0)
            sys.exit("echo server did not exit within 30 s")
        time.sleep(0.001)
    expected = CONNECTIONS * ROUND_TRIPS
    if good != expected or os.waitstatus_to_exitcode(status) != 0:
        sys.exit("wrong result: %d good round trips of %d, server status %d" % (good, expected, status))
    client_us = cpu_us(after) - cpu_us(before)
    print("e1: %d round trips in %.3f s, client CPU %.3f s, server CPU %.3f s"
          % (expected, wall, client_us / 1e6, cpu_us(server_usage) / 1e6), file=sys.stderr)
    print("RESULT round_trips_per_s=%.0f client_cpu_us_per_rt=%.3f server_cpu_us_per_rt=%.3f"
          % (expected / wall, client_us / expected, cpu_us(server_usage) / expected))


if __name__ == "__main__":
    main()
