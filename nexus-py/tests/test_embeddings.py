"""Embeddings, sync and asyncio, over the openai and gemini kinds of the mock upstream."""

from __future__ import annotations

import array
import base64
from typing import Any, Dict, List

import pytest

import nexus
from support import Mock, unique


def floats(v: Any) -> List[float]:
    if isinstance(v, str):
        return array.array("f", base64.b64decode(v)).tolist()
    assert isinstance(v, list)
    return [float(x) for x in v]


def embedding_model(hub: nexus.Hub, mock: Mock, kind: str) -> str:
    p: Dict[str, Any] = hub.create_provider(unique(kind), mock.base_url, "sk-mock", kind=kind,
                                            options={"max_retries": 1})
    name = unique("emb")
    m = hub.create_model(p["id"], name, kind="embedding")
    assert m["kind"] == "embedding"
    return name


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", ["openai", "gemini"])
async def test_sync_and_async_embeddings_agree(hub: nexus.Hub, mock: Mock, kind: str) -> None:
    m = embedding_model(hub, mock, kind)
    texts = ["the quick brown fox", "jumps"]
    sync = hub.embeddings(m, texts, dimensions=8)
    asynchronous = await hub.aembeddings(m, texts, dimensions=8)
    assert sync["data"] == asynchronous["data"]
    assert sync["object"] == "list"
    assert [d["index"] for d in sync["data"]] == [0, 1]
    assert all(len(d["embedding"]) == 8 for d in sync["data"])
    assert sync["data"][0]["embedding"] != sync["data"][1]["embedding"]
    assert sync["usage"]["prompt_tokens"] > 0
    # base64 is the little-endian float32 of the same vector.
    b64 = hub.embeddings(m, texts, dimensions=8, encoding_format="base64")
    for f, b in zip(sync["data"], b64["data"]):
        assert isinstance(b["embedding"], str)
        assert floats(b["embedding"]) == pytest.approx(floats(f["embedding"]), abs=1e-6)
    # One usage row per request, on the embeddings endpoint.
    ts = hub.timeseries(group_by="endpoint")
    emb = [p for p in ts["points"] if p["group"] == "embeddings"]
    assert sum(p["requests"] for p in emb) == 3
    assert all(p["completion_tokens"] == 0 for p in emb)


def test_token_ids_and_extra_parameters(hub: nexus.Hub, mock: Mock) -> None:
    m = embedding_model(hub, mock, "openai")
    r = hub.embeddings(m, [[1, 2, 3], [4]], user="u-1")
    assert len(r["data"]) == 2
    sent = mock.stats()["last_request"]
    assert sent["input"] == [[1, 2, 3], [4]]
    assert sent["user"] == "u-1"
    g = embedding_model(hub, mock, "gemini")
    with pytest.raises(nexus.BadRequestError, match="text only"):
        hub.embeddings(g, [1, 2, 3])


@pytest.mark.asyncio
async def test_errors_sync_and_async(hub: nexus.Hub, mock: Mock) -> None:
    m = embedding_model(hub, mock, "openai")
    with pytest.raises(nexus.BadRequestError):
        hub.embeddings(m, "")
    with pytest.raises(nexus.BadRequestError):
        await hub.aembeddings(m, "x", encoding_format="int8")  # type: ignore[arg-type]
    with pytest.raises(nexus.NotFoundError):
        await hub.aembeddings("no-such-model", "x")
    with pytest.raises(nexus.AuthenticationError):
        hub.embeddings(m, "x", api_key="nx-wrong")
    key = hub.create_key("scoped", models=["other"])["key"]
    with pytest.raises(nexus.PermissionDeniedError):
        await hub.aembeddings(m, "x", api_key=key)
    # A chat model is not an embedding model, and the reverse.
    p = hub.create_provider(unique("chat"), mock.base_url, "sk-mock")
    chat = unique("gpt-4o")
    hub.create_model(p["id"], chat)
    with pytest.raises(nexus.BadRequestError, match="is a chat model"):
        hub.embeddings(chat, "x")
    with pytest.raises(nexus.BadRequestError, match="is an embedding model"):
        hub.chat(m, [{"role": "user", "content": "hi"}])
    bad = embedding_model(hub, mock, "openai")
    hub.update_model(next(x["id"] for x in hub.models() if x["name"] == bad), upstream_name="e-fail500")
    with pytest.raises(nexus.APIStatusError):
        await hub.aembeddings(bad, "x")
