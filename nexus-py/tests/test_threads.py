"""One Hub shared by many threads, with the GIL released while calls wait."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, List

import pytest

import nexus
from support import Mock, user

THREADS = 8


def test_threads_share_one_hub(hub: nexus.Hub, model: Callable[[str], str]) -> None:
    m = model("chunks3")

    def work(i: int) -> List[str]:
        out = [hub.chat(m, user(f"q{i}"))["choices"][0]["message"]["content"]]
        with hub.chat_stream(m, user(f"s{i}")) as s:
            out.append("".join(c["choices"][0]["delta"].get("content") or "" for c in s))
        out.append(str(hub.count_tokens("gpt-4o", f"thread {i}")["tokens"]))
        return out

    with ThreadPoolExecutor(THREADS) as pool:
        results = list(pool.map(work, range(THREADS * 4)))
    assert all(r[:2] == ["tok0 tok1 tok2 "] * 2 for r in results)
    s = hub.summary()
    assert s["requests"] == THREADS * 8 and s["errors"] == 0


def test_waiting_calls_release_the_gil(hub: nexus.Hub, model: Callable[[str], str]) -> None:
    # Each call waits ~600 ms on the upstream (3 paced events of 200 ms). Count how many are
    # inside `chat` at the same moment: with the GIL held during the wait they would run one
    # after another and never overlap.
    m = model("chunks1-delay200")
    inside = 0
    most = 0
    lock = threading.Lock()
    ticks = 0
    stop = threading.Event()

    def call() -> None:
        nonlocal inside, most
        with lock:
            inside += 1
            most = max(most, inside)
        try:
            with hub.chat_stream(m, user("x")) as s:
                list(s)
        finally:
            with lock:
                inside -= 1

    def spin() -> None:
        # Pure-Python work that needs the GIL while the calls wait.
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            time.sleep(0.001)

    spinner = threading.Thread(target=spin)
    spinner.start()
    t = time.monotonic()
    threads = [threading.Thread(target=call) for _ in range(THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    elapsed = time.monotonic() - t
    stop.set()
    spinner.join()
    assert most == THREADS
    # Serialized they would take THREADS * 0.6 s = 4.8 s; overlapping, about 0.6 s.
    assert elapsed < THREADS * 0.6 / 2, f"{THREADS} overlapping calls took {elapsed:.2f}s"
    assert ticks > 50, "Python code did not run while the calls waited"


class Interrupted(Exception):
    pass


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="signals go to the main thread")
def test_a_signal_interrupts_a_waiting_call(hub: nexus.Hub, mock: Mock) -> None:
    p = hub.create_provider("silent", mock.base_url, "k", options={"max_retries": 1})
    hub.create_model(p["id"], "stall-sig")

    def handler(signum: int, frame: Any) -> None:
        raise Interrupted()

    old = signal.signal(signal.SIGINT, handler)
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
    try:
        timer.start()
        t = time.monotonic()
        with pytest.raises(Interrupted):
            hub.chat("stall-sig", user("x"))  # the mock never answers
        assert time.monotonic() - t < 5
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, old)
    # The hub is still fine afterwards.
    assert hub.count_tokens("gpt-4o", "hello world")["tokens"] == 2


EXIT_WITH_BUSY_THREADS = """
import sys, threading, nexus
hub = nexus.Hub()
p = hub.create_provider("m", sys.argv[1], "k")
hub.create_model(p["id"], "chunks1000-delay5")
def busy():
    while True:
        for _ in hub.chat_stream("chunks1000-delay5", [{"role": "user", "content": "x"}]):
            hub.count_tokens("gpt-4o", "x")
for _ in range(4):
    threading.Thread(target=busy, daemon=True).start()
stream = hub.chat_stream("chunks1000-delay5", [{"role": "user", "content": "x"}])
next(stream)
print("exiting")
"""


def test_exit_with_daemon_threads_inside_calls(mock: Mock) -> None:
    # Daemon threads that finish a call while the interpreter shuts down must not take the GIL
    # back (CPython would pthread_exit them through Rust frames, aborting the process).
    for _ in range(3):
        r = subprocess.run(
            [sys.executable, "-c", EXIT_WITH_BUSY_THREADS, mock.base_url],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert (r.returncode, r.stdout.strip()) == (0, "exiting"), r.stderr


THREAD_COUNT = """
import asyncio, os, sys, nexus
hub = nexus.Hub()
p = hub.create_provider("m", sys.argv[1], "k", options={"max_retries": 1})
for name in ("chunks20", "chunks5-delay5"):
    hub.create_model(p["id"], name)
M = [{"role": "user", "content": "x"}]

def threads():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("Threads:"))

async def stream(m):
    async with await hub.achat_stream(m, M) as s:
        return len([c async for c in s])

async def main():
    most = 0
    for _ in range(3):
        await asyncio.gather(
            *(stream("chunks20") for _ in range(64)),
            *(stream("chunks5-delay5") for _ in range(64)),
            *(hub.achat("chunks20", M) for _ in range(64)),
        )
        most = max(most, threads())
    return most

most = asyncio.run(main())
hub.flush()
print(most, threads())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_concurrent_async_calls_use_a_bounded_number_of_threads(mock: Mock) -> None:
    # Async results reach the event loop without a thread each: the process keeps the runtime's
    # workers (one per core), at most 4 blocking-pool threads and the hub's own few (stats
    # writer, registry watcher, retention...), however many calls are pending. It used to end
    # with 56-76 threads after 32 concurrent streams.
    r = subprocess.run(
        [sys.executable, "-c", THREAD_COUNT, mock.base_url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    most, at_end = (int(x) for x in r.stdout.split())
    cores = os.cpu_count() or 1
    assert most <= cores + 10, f"{most} threads with 192 calls pending on {cores} cores"
    assert at_end <= cores + 10
