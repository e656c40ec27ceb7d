#!/usr/bin/env python3
"""perf/hostile_attack.py — the attack driver of perf/hostile.sh (Python 3 stdlib only).

Opens N connections to one p2pd node at once and makes each do one of the hostile
things of tests/hostile.rs, then holds them all open until SIGTERM or SIGINT, and
prints a JSON summary on standard output. The mix, per 1,000 connections:

  300 info     pipelined InfoRequests for a file with 4096 digests, never read
  100 locate   pipelined LocateRequests, never read
  100 get      pipelined one-block Gets, never read
  100 slow     Gets for every block of the file, four times, never read
  100 have     Have and Holdings floods (256 ranges each), each as its own peer
  100 random   random bytes after a valid Hello (the node should close these)
  100 crash    InfoRequests whose error message quotes a long multi-byte path, cut at
               every byte of "é", "€", "😀" (each must be answered)
   34 half     half an InfoRequest, then silence
   33 onebyte  one byte (SPP's Hello type or an HTTP method's first letter), then silence
   33 silent   nothing at all

Each flooding connection writes up to --flood-bytes and stops when a write makes no
progress for a second (the node stopped reading); its socket then only fills.
Connections alternate between the --fetch-src addresses (allowed to make a cache
fetch) and the --other-src addresses (outsiders, remote hosts). "mounted" is printed
on standard error once every connection is open and has done its opening move.
"""
import argparse
import asyncio
import json
import os
import signal
import struct
import sys
import time

MAGIC = b"SPP\x01"
T_HELLO, T_INFO_REQ, T_LOCATE_REQ, T_GET, T_HAVE, T_HOLDINGS = 0x01, 0x02, 0x03, 0x04, 0x06, 0x09
T_ERROR, T_INFO = 0x7F, 0x82


def frame(t, payload):
    return struct.pack(">BBI", t, 0, len(payload)) + payload


def hello(listen_port=0):
    # version 1, role Client (3), listen port, no capabilities
    return frame(T_HELLO, MAGIC + struct.pack(">HBHI", 1, 3, listen_port, 0))


def fileref(host, port, path):
    h, p = host.encode(), path.encode()
    return struct.pack(">B", len(h)) + h + struct.pack(">HH", port, len(p)) + p


def info_req(rid, host, port, path, digests):
    return frame(T_INFO_REQ, struct.pack(">I", rid) + fileref(host, port, path) + struct.pack(">QI", 0, digests))


def locate_req(rid, handle, first, count):
    return frame(T_LOCATE_REQ, struct.pack(">IIQQ", rid, handle, first, count))


def get(rid, handle, version, first, count):
    return frame(T_GET, struct.pack(">IIQQI", rid, handle, version, first, count))


def have(t, handle, version, ranges):
    body = b"".join(struct.pack(">QQ", s, c) for s, c in ranges)
    return frame(t, struct.pack(">IQH", handle, version, len(ranges)) + body)


async def read_frame(r):
    hdr = await r.readexactly(6)
    t, _flags, n = struct.unpack(">BBI", hdr)
    return t, await r.readexactly(n)


class Stats:
    def __init__(self):
        self.by_kind = {}

    def add(self, kind, key, n=1):
        d = self.by_kind.setdefault(kind, {})
        d[key] = d.get(key, 0) + n


def mix(n, only=None):
    shares = [("info", 300), ("locate", 100), ("get", 100), ("slow", 100), ("have", 100),
              ("random", 100), ("crash", 100), ("half", 34), ("onebyte", 33), ("silent", 33)]
    kinds = []
    if only:
        # Only these kinds, as many connections of each as in the full mix.
        for kind, share in shares:
            if kind in only:
                kinds += [kind] * max(1, share * n // 1000)
        return [kinds[(i * 7919) % len(kinds)] for i in range(len(kinds))] if len(kinds) % 7919 else kinds
    for kind, share in shares:
        kinds += [kind] * max(1, share * n // 1000)
    kinds = kinds[:n]
    while len(kinds) < n:
        kinds.append("info")
    # Interleave, so every kind is spread over the attack's start.
    return [kinds[(i * 7919) % n] for i in range(n)] if n % 7919 else kinds


def crash_paths():
    out = []
    for c in ("é", "€", "😀"):
        w = len(c.encode())
        for shift in range(w):
            for n in ((1024 - 11 - shift) // w, (1024 - 30 - shift) // w, (4096 - shift) // w):
                out.append("x" * shift + c * n)
    return out


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", required=True, help="ADDR:PORT of the node under attack")
    ap.add_argument("--host", required=True, help="the FileRef host of the file")
    ap.add_argument("--port", type=int, required=True, help="the FileRef port of the file")
    ap.add_argument("--path", required=True, help="a file of 4096 blocks the node serves")
    ap.add_argument("--connections", type=int, default=1000)
    ap.add_argument("--flood-bytes", type=int, default=256 * 1024)
    ap.add_argument("--fetch-src", required=True, help="comma-separated source addresses")
    ap.add_argument("--other-src", required=True, help="comma-separated source addresses")
    ap.add_argument("--only", default="", help="comma-separated kinds: only these (as many of each as in the full mix)")
    ap.add_argument("--have-src-prefix", default="127.33.202.", help="Have flooders' addresses: PREFIX1..PREFIX250")
    a = ap.parse_args()
    thost, tport = a.target.rsplit(":", 1)
    tport = int(tport)
    fetch_src, other_src = a.fetch_src.split(","), a.other_src.split(",")
    stats = Stats()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for s in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(s, stop.set)

    # Flood payloads, the same on every connection (request ids are per connection;
    # the file's handle is 0 on a fresh connection).
    def blob(make):
        out, rid = bytearray(), 1000
        while len(out) < a.flood_bytes:
            rid += 1
            out += make(rid)
        return bytes(out)

    state = {}
    writers = []
    mounted = [0]
    only = set(filter(None, a.only.split(",")))
    total = len(mix(a.connections, only))
    crash = crash_paths()

    async def opening(kind, k):
        src = (fetch_src if k % 2 == 0 else other_src)[(k // 2) % len(fetch_src if k % 2 == 0 else other_src)]
        if kind == "have":
            src = f"{a.have_src_prefix}{1 + k % 250}"
        try:
            r, w = await asyncio.wait_for(
                asyncio.open_connection(thost, tport, local_addr=(src, 0), limit=1 << 16), 15)
        except Exception as e:  # noqa: BLE001 - counted, not fatal
            stats.add(kind, "connect_failed")
            stats.add("_errors", type(e).__name__)
            return
        writers.append(w)
        stats.add(kind, "opened")
        try:
            if kind == "silent":
                return
            if kind == "onebyte":
                w.write(b"\x01" if k % 2 else b"G")
                return
            w.write(hello(20000 + k % 40000 if kind == "have" else 0))
            await w.drain()
            t, _ = await asyncio.wait_for(read_frame(r), 15)
            if t != T_HELLO:
                stats.add(kind, "no_hello")
                return
            if kind == "random":
                w.write(os.urandom(64 * 1024))
                await asyncio.wait_for(w.drain(), 5)
                return
            if kind == "half":
                f = info_req(9, a.host, a.port, "p" * 4000, 4096)
                w.write(f[: len(f) // 2])
                return
            if kind == "crash":
                for i, p in enumerate(crash[: 20]):
                    w.write(info_req(100 + i, a.host, a.port, p[(k % 7):], 0))
                    await w.drain()
                    t, payload = await asyncio.wait_for(read_frame(r), 10)
                    stats.add(kind, "answered" if t == T_ERROR else "other_answer")
                return
            # Open the 4096-block file.
            w.write(info_req(1, a.host, a.port, a.path, 0))
            await w.drain()
            t, payload = await asyncio.wait_for(read_frame(r), 30)
            if t != T_INFO:
                stats.add(kind, "no_info")
                return
            handle, size, bs, _algo, version = struct.unpack(">IQIBQ", payload[4:29])
            blocks = -(-size // bs)
            state["version"], state["blocks"] = version, blocks
            if kind == "slow":
                for rid in range(2, 6):
                    w.write(get(rid, handle, version, 0, min(blocks, 1024)))
                await w.drain()
                return
            if kind == "info":
                data = blob(lambda rid: info_req(rid, a.host, a.port, a.path, 4096))
            elif kind == "locate":
                data = blob(lambda rid: locate_req(rid, handle, rid % blocks, 1))
            elif kind == "get":
                data = blob(lambda rid: get(rid, handle, version, rid % blocks, 1))
            else:  # have
                rng = [(i * 37 % blocks, 1 + i % 8) for i in range(128)]
                rng += [(((i * 7919) << 12) % (1 << 29), 1 << 10) for i in range(128)]
                data = blob(lambda rid: have(T_HAVE if rid % 2 else T_HOLDINGS, handle, version, rng))
            sent = 0
            for i in range(0, len(data), 64 * 1024):
                w.write(data[i:i + 64 * 1024])
                try:
                    await asyncio.wait_for(w.drain(), 1.0)
                except asyncio.TimeoutError:
                    stats.add(kind, "stopped_reading")
                    break
                sent += min(64 * 1024, len(data) - i)
            stats.add(kind, "bytes_sent", sent)
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError, OSError) as e:
            stats.add(kind, "failed_" + type(e).__name__)
        finally:
            mounted[0] += 1
            if kind == "random":
                state.setdefault("random", []).append(r)

    t0 = time.monotonic()
    kinds = mix(a.connections, only)
    sem = asyncio.Semaphore(200)

    async def one(kind, k):
        async with sem:
            await opening(kind, k)

    await asyncio.gather(*(one(kind, k) for k, kind in enumerate(kinds)))
    print(f"mounted {total} connections in {time.monotonic() - t0:.1f} s", file=sys.stderr, flush=True)
    await stop.wait()
    # Random-bytes connections must have been closed by the node: EOF is waiting.
    closed = 0
    for r in state.get("random", []):
        try:
            while await asyncio.wait_for(r.read(1 << 16), 0.2):
                pass
            closed += 1
        except asyncio.TimeoutError:
            pass
        except (ConnectionError, OSError):
            # Closed with our bytes unread: the kernel answers with a reset.
            closed += 1
    stats.add("random", "closed_by_node", closed)
    for w in writers:
        w.transport.abort()
    print(json.dumps({"connections": total, "kinds": stats.by_kind,
                      "seconds": round(time.monotonic() - t0, 1)}, sort_keys=True))


if __name__ == "__main__":
    asyncio.run(main())
