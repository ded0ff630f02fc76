"""How async results reach the event loop: batched wake-ups through a socket the loop watches,
the `call_soon_threadsafe` fallback for loops that cannot watch one, many loops one after
another, and several waiters on one stream."""

from __future__ import annotations

import asyncio
import gc
import os
import sys
from typing import Any, Callable, Dict, List

import pytest

import nexus
from support import user


def no_reader_loop() -> asyncio.AbstractEventLoop:
    """A loop that, like Windows' proactor loop, cannot watch a file descriptor for others."""

    def refuse(*args: Any) -> None:
        raise NotImplementedError

    loop = asyncio.SelectorEventLoop()
    setattr(loop, "add_reader", refuse)
    return loop


def texts(chunks: List[Dict[str, Any]]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


async def streams_and_chats(hub: nexus.Hub, m: str, n: int) -> List[str]:
    async def stream() -> str:
        async with await hub.achat_stream(m, user("x")) as s:
            return texts([c async for c in s])

    async def chat() -> str:
        answer = await hub.achat(m, user("x"))
        content: str = answer["choices"][0]["message"]["content"]
        return content

    return await asyncio.gather(*(stream() for _ in range(n)), *(chat() for _ in range(n)))


def test_a_loop_without_add_reader_gets_results_too(hub: nexus.Hub, model: Callable[[str], str]) -> None:
    m = model("chunks5")
    loop = no_reader_loop()
    try:
        results = loop.run_until_complete(streams_and_chats(hub, m, 16))
    finally:
        loop.close()
    assert results == ["tok0 tok1 tok2 tok3 tok4 "] * 32


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts open files in /proc")
def test_many_event_loops_one_after_another_leak_nothing(hub: nexus.Hub, model: Callable[[str], str]) -> None:
    # Each loop gets its own wake-up socket pair; it must go when the loop does.
    m = model("chunks3")
    asyncio.run(streams_and_chats(hub, m, 4))
    gc.collect()
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(30):
        assert asyncio.run(streams_and_chats(hub, m, 4)) == ["tok0 tok1 tok2 "] * 8
    gc.collect()
    after = len(os.listdir("/proc/self/fd"))
    # The last loop's pair may stay (the thread remembers its last loop); pooled upstream
    # connections may differ by a few.
    assert after - before <= 8, f"{after - before} more open files after 30 event loops"


def test_two_loops_on_two_threads_at_once(hub: nexus.Hub, model: Callable[[str], str]) -> None:
    import threading

    m = model("chunks4-delay2")
    out: List[Any] = [None, None]

    def run(i: int) -> None:
        out[i] = asyncio.run(streams_and_chats(hub, m, 8))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert out == [["tok0 tok1 tok2 tok3 "] * 16] * 2


def test_waiters_on_one_stream_are_served_in_order(hub: nexus.Hub, model: Callable[[str], str]) -> None:
    # Several `__anext__` awaited at once (each one a pending future on a paced stream): each
    # gets the next chunk in turn, and a cancelled one's chunk goes to the next waiter.
    m = model("chunks6-delay20")

    async def main() -> List[Any]:
        s = await hub.achat_stream(m, user("x"))
        got: List[Any] = [await s.__anext__()]  # the role chunk, read at open
        cancelled = asyncio.ensure_future(s.__anext__())
        waiting = [asyncio.ensure_future(s.__anext__()) for _ in range(4)]
        await asyncio.sleep(0)
        cancelled.cancel()
        got += await asyncio.gather(*waiting)
        got += [c async for c in s]
        return got

    chunks = asyncio.run(main())
    with hub.chat_stream(m, user("x")) as s:
        assert chunks == list(s)


def test_cancelling_an_awaited_chat_returns_at_once(hub: nexus.Hub, model: Callable[[str], str]) -> None:
    m = model("stall")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        t = loop.time()
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(hub.achat(m, user("x")), timeout=0.2)
        assert loop.time() - t < 2
        # The loop and the hub are fine afterwards.
        answer = await hub.achat(model("chunks2"), user("x"))
        assert answer["choices"][0]["message"]["content"] == "tok0 tok1 "

    asyncio.run(main())


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.Runner")
def test_results_reach_a_loop_that_only_sleeps_otherwise(hub: nexus.Hub, model: Callable[[str], str]) -> None:
    # Nothing else wakes this loop: the result must wake it by itself.
    m = model("chunks2-delay50")

    async def main() -> str:
        s = await hub.achat_stream(m, user("x"))
        return texts([c async for c in s])

    with asyncio.Runner() as runner:
        assert runner.run(main()) == "tok0 tok1 "
