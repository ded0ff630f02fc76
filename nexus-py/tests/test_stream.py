"""Streamed chat: sync and async iteration, summaries, and cancelling the upstream request by
closing, leaving a `with` block, or dropping the stream."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from typing import Any, Callable, Dict, List

import pytest

import nexus
from support import Mock, user


def text_of(chunks: List[Dict[str, Any]]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


def test_sync_and_async_streams_give_the_same_chunks(hub: nexus.Hub, model: Callable[[str], str]) -> None:
    m = model("chunks4")
    with hub.chat_stream(m, user("x")) as s:
        sync = list(s)
        sync_summary = s.summary

    async def collect() -> tuple:
        stream = await hub.achat_stream(m, user("x"))
        async with stream:
            chunks = [c async for c in stream]
        return chunks, stream.summary

    asynchronous, async_summary = asyncio.run(collect())
    assert sync == asynchronous
    assert all(c["object"] == "chat.completion.chunk" for c in sync)
    assert text_of(sync) == "tok0 tok1 tok2 tok3 "
    assert sync[-1]["choices"][0]["finish_reason"] == "stop"
    # The hub asked for usage on the caller's behalf and kept the usage-only chunk to itself.
    assert all(c["choices"] for c in sync)
    for summary in (sync_summary, async_summary):
        assert summary is not None
        assert summary["usage"]["completion_tokens"] == 4
        assert summary["usage_source"] == "upstream"
        assert summary["finish_reason"] == "stop"
        assert summary["error_kind"] is None


def test_stream_metadata_and_caller_usage(hub: nexus.Hub, model: Callable[[str], str]) -> None:
    m = model("chunks2")
    s = hub.chat_stream(m, user("x"), conversation_id="c-7", stream_options={"include_usage": True})
    assert s.conversation_id == "c-7"
    assert s.provider == "mock"
    assert s.request_id
    assert s.summary is None  # not ended yet
    chunks = list(s)
    # The caller asked for usage itself, so it gets the usage chunk.
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 2
    assert list(s) == []  # an ended stream stays ended
    s.close()  # closing an ended stream is a no-op


def test_streaming_without_upstream_usage_estimates(hub: nexus.Hub, model: Callable[[str], str]) -> None:
    m = model("chunks3-nousage")
    with hub.chat_stream(m, user("x")) as s:
        list(s)
    assert s.summary is not None
    assert s.summary["usage_source"] == "estimate"
    assert s.summary["usage"]["completion_tokens"] > 0


SLOW = "chunks200-delay20"  # 4 s to the end: any early stop is visible to the mock


def started(s: Any) -> None:
    for _ in range(2):
        next(s)


def test_close_cancels_the_upstream(hub: nexus.Hub, model: Callable[[str], str], mock: Mock) -> None:
    m = model(SLOW)
    before = mock.stats()["cancelled"]
    s = hub.chat_stream(m, user("x"))
    started(s)
    s.close()
    assert mock.wait_for("cancelled", before + 1) == before + 1
    with pytest.raises(StopIteration):
        next(s)
    assert s.summary is not None and s.summary["finish_reason"] == "cancelled"
    assert hub.summary()["requests"] == 1


def test_leaving_with_cancels_the_upstream(hub: nexus.Hub, model: Callable[[str], str], mock: Mock) -> None:
    m = model(SLOW)
    before = mock.stats()["cancelled"]
    with hub.chat_stream(m, user("x")) as s:
        for i, _ in enumerate(s):
            if i == 2:
                break
    assert mock.wait_for("cancelled", before + 1) == before + 1


def test_dropping_cancels_the_upstream(hub: nexus.Hub, model: Callable[[str], str], mock: Mock) -> None:
    m = model(SLOW)
    before = mock.stats()["cancelled"]
    s = hub.chat_stream(m, user("x"))
    started(s)
    del s
    gc.collect()
    assert mock.wait_for("cancelled", before + 1) == before + 1
    # The cancelled stream is recorded once, as a client-closed request.
    summary = hub.summary()
    assert summary["requests"] == 1 and summary["errors"] == 1


def test_close_from_another_thread_wakes_a_waiting_next(
    hub: nexus.Hub, model: Callable[[str], str], mock: Mock
) -> None:
    m = model("stallmid")  # one chunk, then silence
    before = mock.stats()["cancelled"]
    s = hub.chat_stream(m, user("x"))
    got: List[Any] = []

    def consume() -> None:
        for chunk in s:
            got.append(chunk)
        got.append("end")

    t = threading.Thread(target=consume)
    t.start()
    time.sleep(0.3)
    assert t.is_alive(), "the stalled stream should still be waiting"
    s.close()
    t.join(timeout=5)
    assert not t.is_alive(), "close() did not wake the waiting __next__"
    assert got[-1] == "end"
    assert mock.wait_for("cancelled", before + 1) == before + 1


def test_async_aclose_and_break_cancel_the_upstream(
    hub: nexus.Hub, model: Callable[[str], str], mock: Mock
) -> None:
    m = model(SLOW)
    before = mock.stats()["cancelled"]

    async def main() -> None:
        s = await hub.achat_stream(m, user("x"))
        await s.__anext__()
        await s.aclose()
        with pytest.raises(StopAsyncIteration):
            await s.__anext__()
        async with await hub.achat_stream(m, user("x")) as s2:
            async for _ in s2:
                break

    asyncio.run(main())
    assert mock.wait_for("cancelled", before + 2) == before + 2


def test_cancelling_an_asyncio_task_leaves_the_stream_usable(
    hub: nexus.Hub, model: Callable[[str], str]
) -> None:
    m = model("chunks3-delay300")

    async def main() -> str:
        s = await hub.achat_stream(m, user("x"))
        first = await s.__anext__()  # the role chunk, already read when the stream opened
        assert first["choices"][0]["delta"]["role"] == "assistant"
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(s.__anext__(), timeout=0.05)
        chunks = [c async for c in s]
        return text_of(chunks)

    # The chunk the cancelled wait was for is not lost.
    assert asyncio.run(main()) == "tok0 tok1 tok2 "
