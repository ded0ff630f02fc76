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


async def collect_async(hub: nexus.Hub, m: str, **params: Any) -> List[Dict[str, Any]]:
    stream = await hub.achat_stream(m, user("a b c d"), **params)
    async with stream:
        return [c async for c in stream]


@pytest.mark.parametrize(
    "word,params",
    [
        ("chunks200", {}),  # long and unpaced: many chunks per batch
        ("chunks12-delay3", {}),  # paced: batches end between chunks
        ("chunks4", {"n": 2}),  # interleaved choices
        ("chunks3", {"stream_options": {"include_usage": True}}),  # the caller's usage chunk
    ],
)
def test_batched_delivery_keeps_every_chunk_as_sent(
    hub: nexus.Hub, model: Callable[[str], str], word: str, params: Dict[str, Any]
) -> None:
    # Chunks are fetched and handed over in batches; what the caller sees must not depend on
    # where a batch ends, nor on the face (sync or asyncio) that reads it.
    m = model(word)
    with hub.chat_stream(m, user("a b c d"), **params) as s:
        sync = list(s)
    asynchronous = asyncio.run(collect_async(hub, m, **params))
    assert sync == asynchronous
    contents = [c for c in sync if c["choices"]]
    assert all(c["object"] == "chat.completion.chunk" for c in sync)
    n = int(word.split("-")[0][len("chunks"):])
    choices = int(params.get("n", 1))
    content_chunks = [c for c in contents if c["choices"][0]["delta"].get("content")]
    assert len(content_chunks) == n * choices
    if choices == 1:
        assert text_of(sync) == "".join(f"tok{i} " for i in range(n))


def test_an_error_after_chunks_comes_after_them_in_both_faces(
    hub: nexus.Hub, model: Callable[[str], str]
) -> None:
    m = model("miderror")
    sync: List[Dict[str, Any]] = []
    with hub.chat_stream(m, user("a b c")) as s:
        with pytest.raises(nexus.APIStatusError) as sync_error:
            for c in s:
                sync.append(c)
        assert list(s) == []  # over after the error

    async def main() -> tuple:
        got: List[Dict[str, Any]] = []
        s = await hub.achat_stream(m, user("a b c"))
        with pytest.raises(nexus.APIStatusError) as e:
            async for c in s:
                got.append(c)
        with pytest.raises(StopAsyncIteration):
            await s.__anext__()
        return got, e.value

    asynchronous, async_error = asyncio.run(main())
    assert len(sync) >= 1 and sync == asynchronous
    assert (type(async_error), async_error.kind) == (type(sync_error.value), sync_error.value.kind)


def test_anext_awaitables_work_with_asyncio_helpers(hub: nexus.Hub, model: Callable[[str], str]) -> None:
    # A chunk already received is returned as an awaitable that is not an asyncio future;
    # wait_for, ensure_future and gather must take it like any other.
    m = model("chunks6")

    async def main() -> List[Dict[str, Any]]:
        s = await hub.achat_stream(m, user("x"))
        first = await asyncio.wait_for(s.__anext__(), timeout=5)
        second = await asyncio.ensure_future(s.__anext__())
        rest = await asyncio.gather(*(s.__anext__() for _ in range(6)))
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(s.__anext__(), timeout=5)
        await s.aclose()
        return [first, second, *rest]

    chunks = asyncio.run(main())
    with hub.chat_stream(m, user("x")) as s:
        assert chunks == list(s)
