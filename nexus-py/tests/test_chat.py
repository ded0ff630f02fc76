"""Non-streamed chat, sync and asyncio, and the stats it leaves behind."""

from __future__ import annotations

import asyncio
from typing import Any, Callable, Dict

import pytest

import nexus
from support import Mock, user


@pytest.mark.asyncio
async def test_sync_and_async_chat_give_the_same_answer(hub: nexus.Hub, model: Callable[[str], str]) -> None:
    m = model("echo")
    messages = user("the quick brown fox")
    sync = hub.chat(m, messages)
    asynchronous = await hub.achat(m, messages)
    # The hub's own facts differ per request (its id, the time waited); the answer does not.
    sync_meta, async_meta = sync.pop("nexus"), asynchronous.pop("nexus")
    assert sync_meta["request_id"] != async_meta["request_id"]
    for meta in (sync_meta, async_meta):
        assert meta["provider_name"] == "mock"
        assert meta["usage_source"] == "upstream"
        assert meta["cost_usd"] is None  # the mock's model names are in no price catalog
        assert meta["cached"] is False
    assert sync == asynchronous
    assert sync["object"] == "chat.completion"
    assert sync["choices"][0]["message"] == {"role": "assistant", "content": "the quick brown fox"}
    # The mock's usage: 10 prompt tokens per message, one completion token per word.
    assert sync["usage"] == {"prompt_tokens": 10, "completion_tokens": 4, "total_tokens": 14}


def test_parameters_pass_through_to_the_upstream(
    hub: nexus.Hub, model: Callable[[str], str], mock: Mock
) -> None:
    m = model("echo")
    tools = [{"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}]
    answer = hub.chat(m, user("hi"), temperature=0.25, tools=tools, max_tokens=7)
    assert answer["mock_saw_tools"] == tools
    sent = mock.stats()["last_request"]
    assert sent["temperature"] == 0.25
    assert sent["max_tokens"] == 7
    assert sent["model"] == m
    assert "stream" not in sent


def test_many_async_chats_at_once(hub: nexus.Hub, model: Callable[[str], str]) -> None:
    m = model("chunks3")

    async def main() -> list:
        return await asyncio.gather(*(hub.achat(m, user(f"n{i}")) for i in range(20)))

    answers = asyncio.run(main())
    assert [a["choices"][0]["message"]["content"] for a in answers] == ["tok0 tok1 tok2 "] * 20


@pytest.mark.asyncio
async def test_stats_after_chats(hub: nexus.Hub, model: Callable[[str], str], provider: Dict[str, Any]) -> None:
    m = model("chunks3")
    before = hub.summary()
    assert before["requests"] == 0
    assert before["providers"] == 1 and before["models"] == 1
    hub.chat(m, user("one"), conversation_id="conv-1")
    await hub.achat(m, user("two"), conversation_id="conv-1")
    with hub.chat_stream(m, user("three"), conversation_id="conv-1") as stream:
        assert len(list(stream)) > 0
    try:
        hub.chat(model("fail500"), user("four"))
    except nexus.APIStatusError:
        pass

    s = hub.summary()
    assert s["requests"] == 4
    assert s["errors"] == 1
    assert s["prompt_tokens"] == 30  # 10 per message, from the upstream's usage
    assert s["completion_tokens"] == 9  # three chunks per answer
    assert s["total_tokens"] == 39
    assert s["total_rounds"] == s["rounds"] == 3
    assert s["conversations"] >= 1

    conv = hub.conversation("conv-1")
    assert conv["rounds"] == 3
    assert [m["role"] for m in conv["messages"]] == ["user", "assistant"] * 3
    assert [m["content"] for m in conv["messages"] if m["role"] == "user"] == ["one", "two", "three"]

    series = hub.timeseries("hour", group_by="model")
    by_model: Dict[str, int] = {}
    for point in series["points"]:
        by_model[point["group"]] = by_model.get(point["group"], 0) + point["requests"]
    assert by_model[m] == 3


def test_a_client_key_calls_within_its_scope(hub: nexus.Hub, model: Callable[[str], str]) -> None:
    m = model("echo")
    key = hub.create_key("app", models=[m])
    assert key["key"].startswith(key["prefix"])
    answer = hub.chat(m, user("scoped"), api_key=key["key"])
    assert answer["choices"][0]["message"]["content"] == "scoped"
    assert "key" not in hub.keys()[0]


def test_async_methods_need_a_running_loop(hub: nexus.Hub, model: Callable[[str], str]) -> None:
    # Like asyncio's own futures: call them inside `async def`, not bare under asyncio.run().
    with pytest.raises(RuntimeError, match="no running event loop"):
        hub.achat(model("echo"), user("x"))
