"""`/v1/embeddings` of the real nexus-server binary, driven by the official `openai` SDK
(`client.embeddings.create`, float and base64) and LangChain's `OpenAIEmbeddings`, against the
mock upstream speaking each provider kind's embeddings API (openai, azure both URL styles,
gemini). Run with scripts/test-server-py.sh (it builds the binaries first).

LangChain counts tokens with tiktoken and sends token-id arrays; tiktoken's BPE file would be
downloaded, so the fixture points TIKTOKEN_CACHE_DIR at a cache made from the copy the Rust
`tiktoken-rs` crate ships (the same file, checked by tiktoken against its hash).
"""

from __future__ import annotations

import array
import base64
import glob
import hashlib
import json
import os
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

import openai
import pytest

from test_openai_sdk import ADMIN, MOCK_BIN, SERVER_BIN, _lines, _stop, _wait_line

# (provider kind, options, model name) — the model's name is also its upstream name.
KINDS = [
    ("openai", {}, "text-embedding-3-small"),
    ("azure", {}, "azure-emb"),
    ("azure", {"azure_v1": True}, "azurev1-emb"),
    ("gemini", {}, "gemini-embedding-001"),
]
CL100K_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"


def mock_vector(text: str, dims: int) -> list[float]:
    """The mock's vector (nexus/src/testing/embeddings.rs): SHA-256 in counter mode, unit length."""
    out: list[float] = []
    block = 0
    while len(out) < dims:
        h = hashlib.sha256(text.encode() + block.to_bytes(4, "little")).digest()
        for i in range(0, 32, 2):
            if len(out) == dims:
                break
            out.append(array.array("f", [int.from_bytes(h[i : i + 2], "little") / 32767.5 - 1.0])[0])
        block += 1
    f = array.array("f", out)
    norm = sum(v * v for v in f) ** 0.5
    return [v / norm for v in f]


def close(a: list[float], b: list[float]) -> bool:
    return len(a) == len(b) and all(abs(x - y) < 1e-5 for x, y in zip(a, b))


class Stack:
    def __init__(self, base: str, mock: str, key: str, scoped_key: str):
        self.base = base
        self.mock = mock
        self.key = key
        self.scoped_key = scoped_key

    def last_upstream_request(self) -> dict:
        with urllib.request.urlopen(f"{self.mock}/mock/stats", timeout=10) as r:
            return json.load(r)["last_request"]

    def client(self, key: str | None = None) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.base}/v1", api_key=key or self.key, max_retries=0, timeout=30)


@pytest.fixture(scope="session")
def tiktoken_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cargo_home = Path(os.environ.get("CARGO_HOME", Path.home() / ".cargo"))
    found = sorted(glob.glob(str(cargo_home / "registry/src/*/tiktoken-rs-*/assets/cl100k_base.tiktoken")))
    if not found:
        pytest.fail(f"no cl100k_base.tiktoken under {cargo_home}/registry (cargo build fetches tiktoken-rs)")
    cache = tmp_path_factory.mktemp("tiktoken")
    shutil.copy(found[-1], cache / hashlib.sha1(CL100K_URL.encode()).hexdigest())
    return cache


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    import queue
    import threading

    for b in (SERVER_BIN, MOCK_BIN):
        if not os.access(b, os.X_OK):
            pytest.fail(f"{b} is missing: run scripts/test-server-py.sh (it builds it)")
    mock = subprocess.Popen([MOCK_BIN, "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE, text=True)
    assert mock.stdout is not None
    mock_url = mock.stdout.readline().strip()
    tmp = tmp_path_factory.mktemp("nexus")
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEXUS_")}
    env.update(NEXUS_ADMIN_TOKEN=ADMIN, NEXUS_LOG="warn")
    server = subprocess.Popen(
        [SERVER_BIN, "--listen", "127.0.0.1:0", "--db", str(tmp / "nexus.db")],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    q: "queue.Queue[str]" = queue.Queue()
    assert server.stderr is not None
    threading.Thread(target=_lines, args=(server.stderr, q), daemon=True).start()
    try:
        line = _wait_line(q, server, "listening on http://")
        base = "http://" + line.split("listening on http://", 1)[1].strip()

        def post(path: str, body: dict) -> dict:
            req = urllib.request.Request(
                base + path,
                data=json.dumps(body).encode(),
                headers={"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"},
                method="POST",
            )
            with urllib.request.urlopen(req, timeout=30) as r:
                assert r.status == 201, r.read()
                return json.load(r)

        for i, (kind, options, model) in enumerate(KINDS):
            p = post("/api/providers", {"name": f"{kind}{i}", "kind": kind, "base_url": mock_url,
                                        "api_key": f"sk-{kind}-upstream-0123456789", "options": options})
            m = post(f"/api/providers/{p['id']}/models", {"name": model, "kind": "embedding"})
            assert m["kind"] == "embedding"
        # One name served by a failing openai provider and a good gemini one: failover.
        bad = post("/api/providers", {"name": "bad", "base_url": mock_url, "api_key": "sk-bad-0123456789",
                                      "options": {"weight": 1000}})
        post(f"/api/providers/{bad['id']}/models",
             {"name": "shared-emb", "upstream_name": "emb-fail503", "kind": "embedding"})
        good = post("/api/providers", {"name": "good", "kind": "gemini", "base_url": mock_url,
                                       "api_key": "AIza-good-0123456789", "options": {"weight": 0}})
        post(f"/api/providers/{good['id']}/models",
             {"name": "shared-emb", "upstream_name": "gemini-embedding-001", "kind": "embedding"})
        chat = post("/api/providers", {"name": "chat", "base_url": mock_url, "api_key": "sk-chat-0123456789"})
        post(f"/api/providers/{chat['id']}/models", {"name": "gpt-4o"})
        anth = post("/api/providers", {"name": "anth", "kind": "anthropic", "base_url": mock_url,
                                       "api_key": "sk-ant-0123456789"})
        post(f"/api/providers/{anth['id']}/models", {"name": "claude-emb", "kind": "embedding"})
        key = post("/api/keys", {"name": "sdk"})["key"]
        scoped = post("/api/keys", {"name": "scoped", "models": ["gpt-4o"]})["key"]
        yield Stack(base, mock_url, key, scoped)
    finally:
        _stop(server)
        _stop(mock)


@pytest.mark.parametrize("kind,options,model", KINDS, ids=[f"{k}{'-v1' if o else ''}" for k, o, _ in KINDS])
def test_sdk_float_and_base64(stack: Stack, kind: str, options: dict, model: str) -> None:
    c = stack.client()
    texts = ["the quick brown fox", "jumps over"]
    r = c.embeddings.create(model=model, input=texts, dimensions=8, encoding_format="float")
    assert r.object == "list"
    assert [d.index for d in r.data] == [0, 1]
    for d, t in zip(r.data, texts):
        assert close(d.embedding, mock_vector(t, 8)), (kind, d.embedding)
    assert r.usage.prompt_tokens > 0 and r.usage.total_tokens == r.usage.prompt_tokens
    # The SDK's default: it asks for base64 and decodes it itself.
    r = c.embeddings.create(model=model, input="the quick brown fox")
    assert close(r.data[0].embedding, mock_vector("the quick brown fox", 16))
    # Asked for explicitly, base64 reaches the caller as the string.
    r = c.embeddings.create(model=model, input="jumps over", encoding_format="base64", dimensions=4)
    raw = r.data[0].embedding
    assert isinstance(raw, str)
    assert close(array.array("f", base64.b64decode(raw)).tolist(), mock_vector("jumps over", 4))


def test_sdk_token_ids_to_openai(stack: Stack) -> None:
    r = stack.client().embeddings.create(model="text-embedding-3-small", input=[[1, 2, 3], [4]], encoding_format="float")
    assert len(r.data) == 2
    assert r.usage.prompt_tokens == 4


def test_sdk_refusals(stack: Stack) -> None:
    c = stack.client()
    with pytest.raises(openai.BadRequestError) as e:
        c.embeddings.create(model="gemini-embedding-001", input=[1, 2, 3])
    assert "text only" in str(e.value)
    with pytest.raises(openai.BadRequestError) as e:
        c.embeddings.create(model="claude-emb", input="hi")
    assert "Anthropic has no embeddings API" in str(e.value)
    with pytest.raises(openai.BadRequestError) as e:
        c.embeddings.create(model="gpt-4o", input="hi")
    assert "is a chat model" in str(e.value)
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model="text-embedding-3-small", messages=[{"role": "user", "content": "hi"}])
    assert "is an embedding model; use /v1/embeddings" in str(e.value)
    with pytest.raises(openai.NotFoundError):
        c.embeddings.create(model="no-such-model", input="hi")
    with pytest.raises(openai.PermissionDeniedError):
        stack.client(stack.scoped_key).embeddings.create(model="text-embedding-3-small", input="hi")
    with pytest.raises(openai.AuthenticationError):
        stack.client("nx-wrong").embeddings.create(model="text-embedding-3-small", input="hi")


def test_failover_between_providers(stack: Stack) -> None:
    r = stack.client().embeddings.create(model="shared-emb", input="hello world", encoding_format="float")
    assert close(r.data[0].embedding, mock_vector("hello world", 16))


def test_models_retrieve_and_usage_by_endpoint(stack: Stack) -> None:
    c = stack.client()
    m = c.models.retrieve("text-embedding-3-small")
    assert m.id == "text-embedding-3-small"
    assert getattr(m, "kind", None) == "embedding"
    with pytest.raises(openai.NotFoundError):
        c.models.retrieve("no-such-model")
    ids = {m.id for m in c.models.list()}
    assert {"text-embedding-3-small", "gpt-4o"} <= ids
    req = urllib.request.Request(
        stack.base + "/api/stats/timeseries?group_by=endpoint&since=0",
        headers={"Authorization": f"Bearer {ADMIN}"},
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        points = json.load(r)["points"]
    emb = [p for p in points if p["group"] == "embeddings"]
    assert emb and sum(p["requests"] for p in emb) > 0
    assert all(p["completion_tokens"] == 0 for p in emb)


def test_langchain_openai_embeddings(stack: Stack, tiktoken_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tiktoken_cache))
    from langchain_openai import OpenAIEmbeddings

    docs = ["the quick brown fox", "jumps over the lazy dog"]
    # The default: tiktoken splits the texts into token ids and sends those (openai kind only).
    emb = OpenAIEmbeddings(model="text-embedding-3-small", base_url=f"{stack.base}/v1", api_key=stack.key,
                           max_retries=0, dimensions=8)
    vectors = emb.embed_documents(docs)
    sent = stack.last_upstream_request()["input"]
    assert isinstance(sent, list) and all(isinstance(t, list) and all(isinstance(i, int) for i in t) for t in sent), sent
    assert len(vectors) == 2 and all(len(v) == 8 for v in vectors)
    assert vectors[0] != vectors[1]
    query = emb.embed_query(docs[0])
    assert close(query, vectors[0])
    # Text input (no local tokenizing) works against every kind, with the mock's exact vectors.
    for _, _, model in KINDS:
        plain = OpenAIEmbeddings(model=model, base_url=f"{stack.base}/v1", api_key=stack.key, max_retries=0,
                                 check_embedding_ctx_length=False)
        got = plain.embed_documents(docs)
        assert [close(g, mock_vector(d, 16)) for g, d in zip(got, docs)] == [True, True], model
        assert close(plain.embed_query("hello"), mock_vector("hello", 16))


def test_raw_http_short_path(stack: Stack) -> None:
    req = urllib.request.Request(
        stack.base + "/embeddings",
        data=json.dumps({"model": "azure-emb", "input": "hi there"}).encode(),
        headers={"Authorization": f"Bearer {stack.key}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        v = json.load(r)
    assert close(v["data"][0]["embedding"], mock_vector("hi there", 16))
    bad = urllib.request.Request(
        stack.base + "/v1/embeddings",
        data=b'{"model": "azure-emb", "input": ["a", 1]}',
        headers={"Authorization": f"Bearer {stack.key}", "Content-Type": "application/json"},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(bad, timeout=30)
    assert e.value.code == 400
    body = json.load(e.value)
    assert body["error"]["type"] == "invalid_request_error" and body["error"]["param"] == "input"
