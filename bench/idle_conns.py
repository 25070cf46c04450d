#!/usr/bin/env python3
"""Holds many idle keep-alive connections open to a server and reports its memory meanwhile.

Opens COUNT TCP connections to 127.0.0.1:PORT (at most --parallel connecting at a time); each
sends one GET, reads the whole response and then stays open, idle. Once all are open (or
failed), waits --settle seconds, checks how many the server has closed meanwhile, reads
VmRSS and VmHWM of --pid from /proc and prints one line of key=value pairs, then closes
everything. The whole run is bounded by --timeout seconds.

    bench/idle_conns.py --port 9000 --pid 1234 --count 10000 --path /plain/items/1
"""

import argparse
import asyncio
import resource
import sys
import time


def proc_status_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


async def read_response(reader):
    """Reads one HTTP/1.1 response with a Content-Length or chunked body; returns the status."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    if "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower().endswith("chunked"):
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    return status


async def open_one(args, sem, conns, failures):
    async with sem:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", args.port), args.step_timeout)
            writer.write(
                f"GET {args.path} HTTP/1.1\r\nHost: 127.0.0.1:{args.port}\r\n\r\n".encode())
            await writer.drain()
            status = await asyncio.wait_for(read_response(reader), args.step_timeout)
            if status != 200:
                failures.append(f"status {status}")
            conns.append((reader, writer))
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError) as e:
            failures.append(type(e).__name__)


async def main(args):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = args.count + 100
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
        soft = min(want, hard)
    if soft < want:
        sys.exit(f"open-files limit {soft} is below the {want} needed; raise `ulimit -n`")

    before_kib = proc_status_kib(args.pid, "VmRSS")
    sem = asyncio.Semaphore(args.parallel)
    conns, failures = [], []
    t0 = time.monotonic()
    await asyncio.gather(*(open_one(args, sem, conns, failures) for _ in range(args.count)))
    open_secs = time.monotonic() - t0
    await asyncio.sleep(args.settle)
    # A connection the server closed meanwhile has reached EOF.
    closed = sum(1 for reader, _ in conns if reader.at_eof())
    rss = proc_status_kib(args.pid, "VmRSS")
    hwm = proc_status_kib(args.pid, "VmHWM")
    for _, writer in conns:
        writer.close()
    print(f"requested={args.count} open={len(conns) - closed} failed={len(failures)} "
          f"closed_by_server={closed} open_secs={open_secs:.1f} rss_before_kib={before_kib} "
          f"rss_kib={rss} hwm_kib={hwm}"
          + (f" first_failure={failures[0]}" if failures else ""))


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--pid", type=int, required=True, help="process whose memory is read")
    p.add_argument("--count", type=int, default=10000)
    p.add_argument("--path", default="/")
    p.add_argument("--parallel", type=int, default=256, help="connections being opened at once")
    p.add_argument("--settle", type=float, default=3.0,
                   help="seconds idle before reading memory (a gateway parks idle connections after 1-2 s)")
    p.add_argument("--step-timeout", type=float, default=10.0)
    p.add_argument("--timeout", type=float, default=180.0, help="bound on the whole run")
    a = p.parse_args()
    try:
        asyncio.run(asyncio.wait_for(main(a), a.timeout))
    except asyncio.TimeoutError:
        sys.exit(f"gave up after {a.timeout}s")
