"""The real nexus-server binary, driven by the official `openai` Python SDK.

Starts `nexus-mock-upstream` and `nexus-server` (temp-dir database, NEXUS_ADMIN_TOKEN set) on
127.0.0.1 free ports, configures a provider, models and keys through the admin API, then checks
what OpenAI clients rely on. Run with scripts/test-server-py.sh (it builds the binaries first).
Binaries: $NEXUS_SERVER_BIN / $NEXUS_MOCK_BIN, default target/debug/.
"""

from __future__ import annotations

import asyncio
import os
import queue
import subprocess
import threading
import time
from pathlib import Path
from typing import Iterator

import json
import urllib.request

import openai
import pytest

ROOT = Path(__file__).resolve().parents[3]
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "debug"
SERVER_BIN = os.environ.get("NEXUS_SERVER_BIN", str(TARGET / "nexus-server"))
MOCK_BIN = os.environ.get("NEXUS_MOCK_BIN", str(TARGET / "nexus-mock-upstream"))
ADMIN = "py-admin-token-0123456789abcdef"
MODELS = ["gpt-4o", "m-x-chunks10", "m-x-miderror", "b-x-fail500", "m-x-nousage", "r-x-redirect302"]
# Every provider kind the hub speaks, each on its own provider backed by the same mock (which
# serves every kind's wire format): (kind, provider options).
KINDS = [("azure", {}), ("azure", {"azure_v1": True}), ("anthropic", {}), ("gemini", {})]
KIND_MODELS = [f"{kind}{i}-x-{word}" for i, (kind, _) in enumerate(KINDS) for word in ("echo", "fail503", "miderror")]
# The translating kinds' mocks answer `tools` models with a call of the first tool.
KIND_MODELS += [f"{kind}{i}-x-tools" for i, (kind, _) in enumerate(KINDS) if kind in ("anthropic", "gemini")]


class Stack:
    def __init__(self, base: str, mock: str, key: str, limited_key: str, scoped_key: str):
        self.base = base
        self.mock = mock
        self.key = key
        self.limited_key = limited_key
        self.scoped_key = scoped_key

    def client(self, key: str | None = None) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.base}/v1", api_key=key or self.key, max_retries=0, timeout=30)

    def last_upstream_request(self) -> dict:
        with urllib.request.urlopen(f"{self.mock}/mock/stats", timeout=10) as r:
            return json.load(r)["last_request"]


def _lines(stream, q: "queue.Queue[str]") -> None:
    for line in iter(stream.readline, ""):
        q.put(line.rstrip("\n"))


def _wait_line(q: "queue.Queue[str]", proc: subprocess.Popen, marker: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        try:
            line = q.get(timeout=0.2)
        except queue.Empty:
            if proc.poll() is not None:
                raise RuntimeError(f"process exited ({proc.returncode}): {seen}")
            continue
        seen.append(line)
        if marker in line:
            return line
    raise RuntimeError(f"no line with {marker!r} within {timeout}s: {seen}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    for b in (SERVER_BIN, MOCK_BIN):
        if not os.access(b, os.X_OK):
            pytest.fail(f"{b} is missing: run scripts/test-server-py.sh (it builds it)")
    mock = subprocess.Popen([MOCK_BIN, "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE, text=True)
    assert mock.stdout is not None
    mock_url = mock.stdout.readline().strip()
    assert mock_url.startswith("http://127.0.0.1:"), mock_url

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

        # The stdlib's HTTP client: the SDK's own transport (httpx or its successor) is its
        # business, so the fixture does not depend on it.
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

        good = post("/api/providers", {"name": "mock", "base_url": mock_url, "api_key": "sk-upstream-0123456789"})
        for m in MODELS:
            post(f"/api/providers/{good['id']}/models", {"name": m})
        for i, (kind, options) in enumerate(KINDS):
            p = post("/api/providers", {"name": f"{kind}{i}", "kind": kind, "base_url": mock_url,
                                        "api_key": f"sk-{kind}-upstream-0123456789", "options": options})
            assert p["kind"] == kind
            for m in KIND_MODELS:
                if m.startswith(f"{kind}{i}-"):
                    post(f"/api/providers/{p['id']}/models", {"name": m})
        key = post("/api/keys", {"name": "sdk"})["key"]
        limited = post("/api/keys", {"name": "limited", "rpm": 1})["key"]
        scoped = post("/api/keys", {"name": "scoped", "models": ["gpt-4o"]})["key"]
        yield Stack(base, mock_url, key, limited, scoped)
    finally:
        _stop(server)
        _stop(mock)
    assert server.returncode == 0, f"nexus-server exited {server.returncode} on SIGTERM"


def test_models_list(stack: Stack) -> None:
    models = stack.client().models.list()
    ids = sorted(m.id for m in models)
    assert ids == sorted(MODELS + KIND_MODELS)
    assert all(m.object == "model" for m in models.data)
    # Filtered to the key's scope.
    assert [m.id for m in stack.client(stack.scoped_key).models.list()] == ["gpt-4o"]


def test_non_stream(stack: Stack) -> None:
    resp = stack.client().chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hello from python"}]
    )
    assert resp.object == "chat.completion"
    assert resp.choices[0].message.content == "hello from python"
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage is not None and resp.usage.prompt_tokens == 10
    assert resp.usage.completion_tokens == 3


def test_headers_and_conversation_id(stack: Stack) -> None:
    raw = stack.client().chat.completions.with_raw_response.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "hi"}],
        extra_headers={"X-Conversation-Id": "py-conv-1"},
    )
    assert raw.headers["x-conversation-id"] == "py-conv-1"
    assert float(raw.headers["x-nexus-overhead-ms"]) >= 0
    assert raw.headers["x-ratelimit-remaining-requests"] == "99"
    assert raw.parse().choices[0].message.content == "hi"
    raw = stack.client().chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
    )
    assert raw.headers.get("x-conversation-id")


def test_stream(stack: Stack) -> None:
    stream = stack.client().chat.completions.create(
        model="m-x-chunks10", messages=[{"role": "user", "content": "go"}], stream=True
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "".join(f"tok{i} " for i in range(10))
    assert len(chunks) == 12  # role, 10 deltas, finish
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks)


def test_stream_include_usage(stack: Stack) -> None:
    stream = stack.client().chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "count these words"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    with_usage = [c for c in chunks if c.usage is not None]
    assert len(with_usage) == 1
    assert chunks[-1] is with_usage[0]
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == 3
    assert chunks[-1].usage.prompt_tokens == 10
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "count these words"


def test_tools_and_extra_fields_pass_through(stack: Stack) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "weather in a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
            },
        }
    ]
    resp = stack.client().chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "weather in Paris?"}],
        tools=tools,
        tool_choice="auto",
        temperature=0.2,
        extra_body={"x_vendor": {"trace": True}, "top_k": 5},
    )
    assert resp.model_extra is not None and resp.model_extra.get("mock_saw_tools") == tools
    last = stack.last_upstream_request()
    assert last["tools"] == tools
    assert last["tool_choice"] == "auto"
    assert last["temperature"] == 0.2
    assert last["x_vendor"] == {"trace": True}
    assert last["top_k"] == 5
    # Streamed too.
    list(
        stack.client().chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "x"}],
            tools=tools,
            stream=True,
            extra_body={"x_vendor": {"trace": False}},
        )
    )
    last = stack.last_upstream_request()
    assert last["tools"] == tools and last["x_vendor"] == {"trace": False} and last["stream"] is True


def test_bad_key_is_authentication_error(stack: Stack) -> None:
    with pytest.raises(openai.AuthenticationError) as e:
        stack.client("nx-definitely-not-a-key").chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "x"}]
        )
    assert e.value.status_code == 401
    assert e.value.code == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        stack.client("nx-definitely-not-a-key").models.list()


def test_unknown_model_is_not_found(stack: Stack) -> None:
    with pytest.raises(openai.NotFoundError) as e:
        stack.client().chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    assert e.value.code == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        stack.client().chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "x"}], stream=True
        )


def test_out_of_scope_is_permission_denied(stack: Stack) -> None:
    with pytest.raises(openai.PermissionDeniedError) as e:
        stack.client(stack.scoped_key).chat.completions.create(
            model="m-x-chunks10", messages=[{"role": "user", "content": "x"}]
        )
    assert e.value.code == "model_not_allowed"


def test_rate_limit(stack: Stack) -> None:
    client = stack.client(stack.limited_key)
    client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "1"}])
    with pytest.raises(openai.RateLimitError) as e:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "2"}])
    assert e.value.code == "rate_limit_exceeded"
    assert int(e.value.response.headers["retry-after"]) >= 1


def test_bad_requests(stack: Stack) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        stack.client().chat.completions.create(model="gpt-4o", messages=[])
    assert e.value.param == "messages"
    with pytest.raises(openai.BadRequestError):
        stack.client().chat.completions.create(model="gpt-4o", messages=[{"content": "no role"}])  # type: ignore[list-item]


def test_stream_usage_when_the_upstream_ignores_include_usage(stack: Stack) -> None:
    # The upstream (like llama.cpp's server) never sends usage: the hub counts and sends it once.
    stream = stack.client().chat.completions.create(
        model="m-x-nousage",
        messages=[{"role": "user", "content": "count these words"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    with_usage = [c for c in chunks if c.usage is not None]
    assert len(with_usage) == 1 and chunks[-1] is with_usage[0]
    assert chunks[-1].choices == []
    assert chunks[-1].usage.prompt_tokens > 0 and chunks[-1].usage.completion_tokens > 0
    assert chunks[-1].usage.total_tokens == chunks[-1].usage.prompt_tokens + chunks[-1].usage.completion_tokens


def test_upstream_failures(stack: Stack) -> None:
    with pytest.raises(openai.InternalServerError) as e:
        stack.client().chat.completions.create(model="b-x-fail500", messages=[{"role": "user", "content": "x"}])
    assert e.value.status_code == 502
    # The tenant sees the status class and the request id, not the upstream's words or address.
    assert e.value.request_id and e.value.request_id in e.value.message
    assert "mock failure" not in e.value.message and "10.9.8.7" not in str(e.value.body)
    assert isinstance(e.value.body, dict) and e.value.body.get("request_id") == e.value.request_id
    # A redirect from the upstream is not followed: an upstream error.
    with pytest.raises(openai.InternalServerError) as e:
        stack.client().chat.completions.create(model="r-x-redirect302", messages=[{"role": "user", "content": "x"}])
    assert e.value.status_code == 502
    # A failure after the stream started arrives in-band; the SDK raises it.
    stream = stack.client().chat.completions.create(
        model="m-x-miderror", messages=[{"role": "user", "content": "a b c"}], stream=True
    )
    got = []
    with pytest.raises(openai.APIError):
        for c in stream:
            if c.choices:
                got.append(c.choices[0].delta.content or "")
    assert "".join(got) == "a "


def test_async_client(stack: Stack) -> None:
    async def run() -> None:
        client = openai.AsyncOpenAI(base_url=f"{stack.base}/v1", api_key=stack.key, max_retries=0, timeout=30)
        try:
            resp, stream = await asyncio.gather(
                client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "async one"}]),
                client.chat.completions.create(
                    model="m-x-chunks10",
                    messages=[{"role": "user", "content": "x"}],
                    stream=True,
                    stream_options={"include_usage": True},
                ),
            )
            assert resp.choices[0].message.content == "async one"
            chunks = [c async for c in stream]
            assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "".join(
                f"tok{i} " for i in range(10)
            )
            assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 10
            models = await client.models.list()
            assert len(models.data) == len(MODELS) + len(KIND_MODELS)
            with pytest.raises(openai.NotFoundError):
                await client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
        finally:
            await client.close()

    asyncio.run(run())


@pytest.mark.parametrize("index", range(len(KINDS)), ids=[f"{k}{i}" for i, (k, _) in enumerate(KINDS)])
def test_every_provider_kind(stack: Stack, index: int) -> None:
    kind = f"{KINDS[index][0]}{index}"
    client = stack.client()
    resp = client.chat.completions.create(model=f"{kind}-x-echo", messages=[{"role": "user", "content": "hello kind"}])
    assert resp.choices[0].message.content == "hello kind"
    assert resp.usage is not None and resp.usage.total_tokens > 0
    stream = client.chat.completions.create(
        model=f"{kind}-x-echo",
        messages=[{"role": "user", "content": "one two three"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "one two three"
    assert [c for c in chunks if c.usage] == [chunks[-1]]
    with pytest.raises(openai.InternalServerError) as e:
        client.chat.completions.create(model=f"{kind}-x-fail503", messages=[{"role": "user", "content": "x"}])
    assert e.value.status_code == 502
    got = []
    with pytest.raises(openai.APIError):
        for c in client.chat.completions.create(
            model=f"{kind}-x-miderror", messages=[{"role": "user", "content": "a b c"}], stream=True
        ):
            if c.choices:
                got.append(c.choices[0].delta.content or "")
    assert "".join(got).startswith("a")


WEATHER = [{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}}}]


@pytest.mark.parametrize("index", [i for i, (k, _) in enumerate(KINDS) if k in ("anthropic", "gemini")],
                         ids=[f"{k}{i}" for i, (k, _) in enumerate(KINDS) if k in ("anthropic", "gemini")])
def test_tools_through_translated_kinds(stack: Stack, index: int) -> None:
    model = f"{KINDS[index][0]}{index}-x-tools"
    client = stack.client()
    msgs = [{"role": "user", "content": "weather in Paris?"}]
    resp = client.chat.completions.create(model=model, messages=msgs, tools=WEATHER, tool_choice="auto")
    call = resp.choices[0].message.tool_calls[0]
    assert resp.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather" and isinstance(json.loads(call.function.arguments), dict)
    # Streamed: the SDK sees OpenAI tool_call deltas it can assemble by index.
    args, names, ids = {}, {}, {}
    for c in client.chat.completions.create(model=model, messages=msgs, tools=WEATHER, stream=True):
        for tc in (c.choices[0].delta.tool_calls or []) if c.choices else []:
            args[tc.index] = args.get(tc.index, "") + (tc.function.arguments or "")
            if tc.function.name:
                names[tc.index] = tc.function.name
            if tc.id:
                ids[tc.index] = tc.id
    assert names[0] == "get_weather" and ids[0] and isinstance(json.loads(args[0]), dict)
    # The tool result goes back in the next turn, translated for the provider.
    follow = client.chat.completions.create(model=f"{KINDS[index][0]}{index}-x-echo", tools=WEATHER, messages=msgs + [
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
        {"role": "user", "content": "thanks"},
    ])
    assert follow.choices[0].message.content == "thanks"
