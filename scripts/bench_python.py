#!/usr/bin/env python3
"""The Python module against the plain HTTP clients a program would otherwise use (issue #19).

Starts nothing itself: pass the URL of a running mock upstream (``nexus-mock-upstream``, built with
``cargo build --locked -p nexus --features testing --bin nexus-mock-upstream``; it prints its URL
as its first line). In one run, against that mock, it measures:

- aiohttp and httpx straight to the mock: every stream chunk is parsed with ``json.loads``, as a
  program using them would, so all clients hand the caller the same dicts;
- the ``nexus`` module: a hub opened in a temporary directory with one OpenAI-kind provider on the
  mock (usage is recorded to its SQLite file, as in real use);

each sequential (sync where the client has a sync face, and asyncio with 1 task) and asyncio with
``--tasks`` tasks (32), non-stream and streamed (``--model``, ``chunks20``: 20 content chunks).
Figures are calls (or whole streams) per second, the process CPU time per call, and the thread
count of the process (from ``/proc/self/status``: it counts threads Python does not know of).

    .venv/bin/python scripts/bench_python.py --mock http://127.0.0.1:PORT [--seconds 3] [--repeat 3]

Everything talks to 127.0.0.1 (the mock's URL) only. Each figure is the median of ``--repeat``
runs of ``--seconds`` each, after a short warm-up; compare rows of one run, never across runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from typing import Any, Awaitable, Callable, Dict, List, Optional, Tuple

MESSAGES = [{"role": "user", "content": "hello"}]


def proc_threads() -> int:
    """The threads of this process as the kernel counts them (Rust threads included)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return -1


def body(model: str, stream: bool) -> Dict[str, Any]:
    b: Dict[str, Any] = {"model": model, "messages": MESSAGES}
    if stream:
        b["stream"] = True
    return b


def sse_chunks(lines: List[bytes]) -> List[Dict[str, Any]]:
    out = []
    for line in lines:
        if line.startswith(b"data:"):
            data = line[5:].strip()
            if data and data != b"[DONE]":
                out.append(json.loads(data))
    return out


# ---- the runners -----------------------------------------------------------------------------
# A runner measures one case: it calls `one()` repeatedly until the deadline and returns the
# number of calls, the chunks of the last call (to check every client saw the same stream).


class Result:
    def __init__(self, calls: int, seconds: float, cpu: float, chunks: int) -> None:
        self.calls = calls
        self.seconds = seconds
        self.cpu = cpu
        self.chunks = chunks

    @property
    def rate(self) -> float:
        return self.calls / self.seconds if self.seconds else 0.0

    @property
    def cpu_us(self) -> float:
        return self.cpu / self.calls * 1e6 if self.calls else 0.0


def run_sync(one: Callable[[], int], seconds: float, warmup: float) -> Result:
    end = time.monotonic() + warmup
    while time.monotonic() < end:
        one()
    calls = 0
    chunks = 0
    c0 = time.process_time()
    t0 = time.monotonic()
    end = t0 + seconds
    while True:
        chunks = one()
        calls += 1
        if time.monotonic() >= end:
            break
    return Result(calls, time.monotonic() - t0, time.process_time() - c0, chunks)


async def run_async(one: Callable[[], Awaitable[int]], tasks: int, seconds: float, warmup: float) -> Result:
    calls = 0
    chunks = 0
    measuring = False

    async def worker(end: float) -> None:
        nonlocal calls, chunks
        while time.monotonic() < end:
            n = await one()
            if measuring:
                calls += 1
                chunks = n

    await asyncio.gather(*(worker(time.monotonic() + warmup) for _ in range(tasks)))
    measuring = True
    c0 = time.process_time()
    t0 = time.monotonic()
    await asyncio.gather(*(worker(t0 + seconds) for _ in range(tasks)))
    return Result(calls, time.monotonic() - t0, time.process_time() - c0, chunks)


# ---- the clients -----------------------------------------------------------------------------


class Nexus:
    name = "nexus"

    def __init__(self, mock: str, model: str, tmp: str) -> None:
        import nexus

        self.hub = nexus.Hub(os.path.join(tmp, "hub.db"))
        p = self.hub.create_provider("mock", mock, "sk-bench", options={"max_retries": 1})
        self.hub.create_model(p["id"], model)
        self.model = model

    def sync(self, stream: bool) -> Callable[[], int]:
        hub, model = self.hub, self.model
        if stream:

            def one() -> int:
                with hub.chat_stream(model, MESSAGES) as s:
                    return sum(1 for _ in s)

        else:

            def one() -> int:
                hub.chat(model, MESSAGES)
                return 0

        return one

    def make_async(self, stream: bool) -> Tuple[Callable[[], Awaitable[int]], Callable[[], Awaitable[None]]]:
        hub, model = self.hub, self.model
        if stream:

            async def one() -> int:
                n = 0
                async with await hub.achat_stream(model, MESSAGES) as s:
                    async for _ in s:
                        n += 1
                return n

        else:

            async def one() -> int:
                await hub.achat(model, MESSAGES)
                return 0

        async def close() -> None:
            pass

        return one, close

    def close(self) -> None:
        self.hub.flush()


class Aiohttp:
    name = "aiohttp"

    def __init__(self, mock: str, model: str, tmp: str) -> None:
        self.url = mock.rstrip("/") + "/v1/chat/completions"
        self.model = model

    sync = None

    def make_async(self, stream: bool) -> Tuple[Callable[[], Awaitable[int]], Callable[[], Awaitable[None]]]:
        import aiohttp

        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            headers={"Authorization": "Bearer sk-bench"},
        )
        url, payload = self.url, body(self.model, stream)
        if stream:

            async def one() -> int:
                async with session.post(url, json=payload) as r:
                    r.raise_for_status()
                    return len(sse_chunks([line async for line in r.content]))

        else:

            async def one() -> int:
                async with session.post(url, json=payload) as r:
                    r.raise_for_status()
                    await r.json()
                return 0

        return one, session.close

    def close(self) -> None:
        pass


class Httpx:
    name = "httpx"

    def __init__(self, mock: str, model: str, tmp: str) -> None:
        import httpx

        self.httpx = httpx
        self.url = mock.rstrip("/") + "/v1/chat/completions"
        self.model = model
        self.headers = {"Authorization": "Bearer sk-bench"}
        self.client = httpx.Client(headers=self.headers)

    def sync(self, stream: bool) -> Callable[[], int]:
        client, url, payload = self.client, self.url, body(self.model, stream)
        if stream:

            def one() -> int:
                with client.stream("POST", url, json=payload) as r:
                    r.raise_for_status()
                    return len(sse_chunks([line.encode() for line in r.iter_lines()]))

        else:

            def one() -> int:
                r = client.post(url, json=payload)
                r.raise_for_status()
                r.json()
                return 0

        return one

    def make_async(self, stream: bool) -> Tuple[Callable[[], Awaitable[int]], Callable[[], Awaitable[None]]]:
        limits = self.httpx.Limits(max_connections=None, max_keepalive_connections=64)
        client = self.httpx.AsyncClient(headers=self.headers, limits=limits)
        url, payload = self.url, body(self.model, stream)
        if stream:

            async def one() -> int:
                async with client.stream("POST", url, json=payload) as r:
                    r.raise_for_status()
                    return len(sse_chunks([line.encode() async for line in r.aiter_lines()]))

        else:

            async def one() -> int:
                r = await client.post(url, json=payload)
                r.raise_for_status()
                r.json()
                return 0

        return one, client.aclose

    def close(self) -> None:
        self.client.close()


CLIENTS = {"aiohttp": Aiohttp, "httpx": Httpx, "nexus": Nexus}


def median(rs: List[Result]) -> Result:
    rs = sorted(rs, key=lambda r: r.rate)
    return rs[len(rs) // 2]


def measure(client: Any, mode: str, stream: bool, args: argparse.Namespace) -> Optional[Result]:
    runs: List[Result] = []
    if mode == "sync":
        if client.sync is None:
            return None
        one = client.sync(stream)
        for _ in range(args.repeat):
            runs.append(run_sync(one, args.seconds, args.warmup))
    else:
        tasks = 1 if mode == "async1" else args.tasks

        async def go() -> None:
            one, close = client.make_async(stream)
            try:
                for _ in range(args.repeat):
                    runs.append(await run_async(one, tasks, args.seconds, args.warmup))
            finally:
                await close()

        asyncio.run(go())
    return median(runs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mock", required=True, help="base URL of a running nexus-mock-upstream")
    ap.add_argument("--model", default="chunks20", help="mock model (words: see nexus/src/testing)")
    ap.add_argument("--tasks", type=int, default=32, help="asyncio tasks in the concurrent rows")
    ap.add_argument("--seconds", type=float, default=3.0, help="length of one measured run")
    ap.add_argument("--warmup", type=float, default=0.5, help="unmeasured run before each")
    ap.add_argument("--repeat", type=int, default=3, help="runs per figure (the median is shown)")
    ap.add_argument("--clients", default="aiohttp,httpx,nexus", help="comma-separated subset")
    ap.add_argument("--modes", default="sync,async1,asyncN", help="sync, async1, asyncN")
    ap.add_argument("--kinds", default="nonstream,stream", help="nonstream, stream")
    ap.add_argument("--json", action="store_true", help="also print one JSON line per figure")
    args = ap.parse_args()
    if not args.mock.startswith("http://127.0.0.1"):
        print("--mock must be a 127.0.0.1 URL (the local mock upstream)", file=sys.stderr)
        return 2

    modes = args.modes.split(",")
    kinds = args.kinds.split(",")
    label = {"sync": "sync, sequential", "async1": "asyncio, 1 task", "asyncN": f"asyncio, {args.tasks} tasks"}
    rows: List[Dict[str, Any]] = []
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, mock {args.mock}, model {args.model}, "
          f"{args.repeat}x{args.seconds:g}s per figure (median)", flush=True)
    print(f"{'client':8} {'mode':18} {'kind':10} {'calls/s':>9} {'CPU µs/call':>12} {'chunks':>6} {'threads':>7}", flush=True)
    with tempfile.TemporaryDirectory(prefix="nexus-bench-py-") as tmp:
        for name in args.clients.split(","):
            client = CLIENTS[name](args.mock, args.model, tmp)
            try:
                for mode in modes:
                    for kind in kinds:
                        r = measure(client, mode, kind == "stream", args)
                        if r is None:
                            continue
                        row = {
                            "client": name,
                            "mode": mode,
                            "tasks": {"sync": 1, "async1": 1}.get(mode, args.tasks),
                            "kind": kind,
                            "calls_per_s": round(r.rate, 1),
                            "cpu_us_per_call": round(r.cpu_us, 1),
                            "chunks": r.chunks,
                            "threads": proc_threads(),
                        }
                        rows.append(row)
                        print(f"{name:8} {label[mode]:18} {kind:10} {r.rate:9.0f} {r.cpu_us:12.0f} "
                              f"{r.chunks:6} {row['threads']:7}", flush=True)
            finally:
                client.close()
    print(f"threads at the end: {proc_threads()} (/proc/self/status), "
          f"{threading.active_count()} known to Python")
    stream_counts = {r["chunks"] for r in rows if r["kind"] == "stream"}
    if len(stream_counts) > 1:
        print(f"warning: the clients saw different chunk counts per stream: {sorted(stream_counts)}")
    by = {(r["client"], r["mode"], r["kind"]): r["calls_per_s"] for r in rows}
    for kind in kinds:
        a, n = by.get(("aiohttp", "asyncN", kind)), by.get(("nexus", "asyncN", kind))
        if a and n:
            print(f"nexus / aiohttp, {kind}, {args.tasks} tasks: {n / a:.2f}")
    if args.json:
        for r in rows:
            print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
