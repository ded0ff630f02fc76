"""The real nexus-server binary, driven by the official `anthropic` Python SDK (`/v1/messages`).

Starts `nexus-mock-upstream` and `nexus-server` like test_openai_sdk.py (whose process helpers it
reuses), configures one provider of every kind (openai, azure, anthropic, gemini) on the mock,
and checks create (plain and streamed with the SDK's helpers), tools with a tool-result turn,
count_tokens, the SDK's exception classes, and that usage rows record endpoint `messages`.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import threading
import urllib.error
import urllib.request
from typing import Iterator

import anthropic
import pytest

from test_openai_sdk import ADMIN, MOCK_BIN, SERVER_BIN, _lines, _stop, _wait_line

KINDS = [("openai", {}), ("azure", {}), ("anthropic", {}), ("gemini", {})]
WORDS = ("echo", "tools", "fail503", "fail400", "miderror", "chunks3")


class Stack:
    def __init__(self, base: str, admin_get, key: str, limited: str):
        self.base = base
        self.admin_get = admin_get
        self.key = key
        self.limited = limited

    def client(self, key: str | None = None, bearer: bool = False) -> anthropic.Anthropic:
        if bearer:
            return anthropic.Anthropic(base_url=self.base, auth_token=key or self.key, api_key=None,
                                       max_retries=0, timeout=30)
        return anthropic.Anthropic(base_url=self.base, api_key=key or self.key, max_retries=0, timeout=30)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    for b in (SERVER_BIN, MOCK_BIN):
        if not os.access(b, os.X_OK):
            pytest.fail(f"{b} is missing: run scripts/test-server-py.sh (it builds it)")
    mock = subprocess.Popen([MOCK_BIN, "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE, text=True)
    assert mock.stdout is not None
    mock_url = mock.stdout.readline().strip()
    tmp = tmp_path_factory.mktemp("nexus-anthropic")
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEXUS_")}
    env.update(NEXUS_ADMIN_TOKEN=ADMIN, NEXUS_LOG="warn")
    server = subprocess.Popen(
        [SERVER_BIN, "--listen", "127.0.0.1:0", "--db", str(tmp / "nexus.db")],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    q: "queue.Queue[str]" = queue.Queue()
    assert server.stderr is not None
    threading.Thread(target=_lines, args=(server.stderr, q), daemon=True).start()
    try:
        line = _wait_line(q, server, "listening on http://")
        base = "http://" + line.split("listening on http://", 1)[1].strip()

        def call(method: str, path: str, body: dict | None = None) -> dict:
            req = urllib.request.Request(
                base + path, data=json.dumps(body).encode() if body is not None else None,
                headers={"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"}, method=method,
            )
            with urllib.request.urlopen(req, timeout=30) as r:
                return json.load(r)

        for kind, options in KINDS:
            p = call("POST", "/api/providers", {"name": kind, "kind": kind, "base_url": mock_url,
                                                "api_key": f"sk-{kind}-upstream-0123456789", "options": options})
            for w in WORDS:
                call("POST", f"/api/providers/{p['id']}/models", {"name": f"{kind}-x-{w}"})
        key = call("POST", "/api/keys", {"name": "anthropic-sdk"})["key"]
        limited = call("POST", "/api/keys", {"name": "limited", "rpm": 1})["key"]
        yield Stack(base, lambda path: call("GET", path), key, limited)
    finally:
        _stop(server)
        _stop(mock)


KIND_IDS = [k for k, _ in KINDS]


@pytest.mark.parametrize("kind", KIND_IDS)
def test_create(stack: Stack, kind: str) -> None:
    msg = stack.client().messages.create(
        model=f"{kind}-x-echo", max_tokens=64,
        system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        messages=[{"role": "user", "content": "hello from anthropic"}],
        extra_headers={"anthropic-beta": "prompt-caching-2024-07-31"},
    )
    assert msg.type == "message" and msg.role == "assistant"
    assert msg.model == f"{kind}-x-echo"
    assert msg.id.startswith("msg_")
    assert [b.type for b in msg.content] == ["text"]
    assert msg.content[0].text == "hello from anthropic"
    assert msg.stop_reason == "end_turn"
    assert msg.usage.input_tokens > 0 and msg.usage.output_tokens > 0
    assert msg._request_id


@pytest.mark.parametrize("kind", KIND_IDS)
def test_stream_helpers(stack: Stack, kind: str) -> None:
    with stack.client(bearer=True).messages.stream(
        model=f"{kind}-x-echo", max_tokens=64, messages=[{"role": "user", "content": "one two three"}],
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "one two three"
    assert final.content[0].type == "text" and final.content[0].text == "one two three"
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens > 0 and final.usage.input_tokens > 0


def test_raw_event_sequence(stack: Stack) -> None:
    events = [e.type for e in stack.client().messages.create(
        model="openai-x-chunks3", max_tokens=16, stream=True, messages=[{"role": "user", "content": "go"}])]
    assert events == ["message_start", "content_block_start", "content_block_delta", "content_block_delta",
                      "content_block_delta", "content_block_stop", "message_delta", "message_stop"]


TOOLS = [{"name": "lookup", "description": "Look a word up.",
          "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}},
         {"type": "web_search_20250305", "name": "web_search", "max_uses": 1}]


@pytest.mark.parametrize("kind", KIND_IDS)
@pytest.mark.parametrize("streamed", [False, True])
def test_tools_and_tool_result_turn(stack: Stack, kind: str, streamed: bool) -> None:
    client = stack.client()
    model = f"{kind}-x-tools"
    question = {"role": "user", "content": "define nexus"}
    if streamed:
        with client.messages.stream(model=model, max_tokens=256, tools=TOOLS, messages=[question]) as s:
            first = s.get_final_message()
    else:
        first = client.messages.create(model=model, max_tokens=256, tools=TOOLS, messages=[question])
    assert first.stop_reason == "tool_use", first
    uses = [b for b in first.content if b.type == "tool_use"]
    assert uses and uses[0].name == "lookup"
    assert isinstance(uses[0].input, dict) and uses[0].input
    # The second turn goes to the same provider's echo model: the mocks' `tools` models call a
    # tool on every turn.
    second = client.messages.create(
        model=f"{kind}-x-echo", max_tokens=256, tools=TOOLS,
        messages=[question, {"role": "assistant", "content": first.content},
                  {"role": "user", "content": [{"type": "tool_result", "tool_use_id": uses[0].id,
                                                "content": [{"type": "text", "text": "a hub"}]}]}],
    )
    assert second.stop_reason == "end_turn", second
    assert any(b.type == "text" and b.text for b in second.content)


def test_count_tokens(stack: Stack) -> None:
    r = stack.client().messages.count_tokens(
        model="openai-x-echo", system="You are terse.", tools=TOOLS[:1],
        messages=[{"role": "user", "content": "how many tokens is this?"}],
    )
    assert 10 < r.input_tokens < 200
    # Labelled: the hub's estimate for a non-Anthropic provider, the provider's own count for an
    # Anthropic one (the mock counts 1000 + characters / 4, which no estimator would).
    raw = stack.client().messages.with_raw_response.count_tokens(
        model="openai-x-echo", messages=[{"role": "user", "content": "x"}])
    assert raw.headers["x-nexus-count-source"] == "estimate"
    raw = stack.client().messages.with_raw_response.count_tokens(
        model="anthropic-x-echo", system="You are terse.", tools=TOOLS[:1],
        messages=[{"role": "user", "content": "how many tokens is this?"}])
    assert raw.headers["x-nexus-count-source"] == "provider"
    assert raw.parse().input_tokens > 1000
    with pytest.raises(anthropic.NotFoundError):
        stack.client().messages.count_tokens(model="no-such-model", messages=[{"role": "user", "content": "x"}])


def test_errors_map_to_sdk_classes(stack: Stack) -> None:
    hi = [{"role": "user", "content": "hi"}]
    with pytest.raises(anthropic.AuthenticationError) as e:
        stack.client(key="nx-wrong").messages.create(model="openai-x-echo", max_tokens=8, messages=hi)
    assert e.value.body["type"] == "error" and e.value.body["error"]["type"] == "authentication_error"
    with pytest.raises(anthropic.NotFoundError) as e:
        stack.client().messages.create(model="no-such-model", max_tokens=8, messages=hi)
    assert e.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.BadRequestError) as e:
        stack.client().messages.create(model="openai-x-echo", max_tokens=8,
                                       messages=[{"role": "user", "content": [{"type": "mystery"}]}])
    assert e.value.body["error"]["type"] == "invalid_request_error"
    with pytest.raises(anthropic.BadRequestError):
        stack.client().post("/v1/messages", cast_to=object, body={"model": "openai-x-echo", "messages": hi})
    for kind in KIND_IDS:
        with pytest.raises(anthropic.BadRequestError):
            stack.client().messages.create(model=f"{kind}-x-fail400", max_tokens=8, messages=hi)
        with pytest.raises(anthropic.InternalServerError) as e:
            stack.client().messages.create(model=f"{kind}-x-fail503", max_tokens=8, messages=hi)
        assert e.value.status_code == 529 and e.value.body["error"]["type"] == "overloaded_error"
    stack.client(key=stack.limited).messages.create(model="openai-x-echo", max_tokens=8, messages=hi)
    with pytest.raises(anthropic.RateLimitError) as e:
        stack.client(key=stack.limited).messages.create(model="openai-x-echo", max_tokens=8, messages=hi)
    assert e.value.body["error"]["type"] == "rate_limit_error"


def test_malformed_json_and_wrong_method_are_anthropic_errors(stack: Stack) -> None:
    for path, data, method in [("/v1/messages?beta=true", b"{not json", "POST"), ("/v1/messages", None, "GET")]:
        req = urllib.request.Request(stack.base + path, data=data, method=method,
                                     headers={"x-api-key": stack.key, "content-type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=10)
        body = json.load(e.value)
        assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error", body
        assert e.value.headers["request-id"]
    # Over the body limit (8 MiB): 413 request_too_large. A bad key: 401 before the body is read.
    big = json.dumps({"model": "openai-x-echo", "max_tokens": 8,
                      "messages": [{"role": "user", "content": "x" * (9 << 20)}]}).encode()
    for key, status, kind in [(stack.key, 413, "request_too_large"), ("nx-bad", 401, "authentication_error")]:
        req = urllib.request.Request(stack.base + "/v1/messages", data=big, method="POST",
                                     headers={"x-api-key": key, "content-type": "application/json"})
        try:
            urllib.request.urlopen(req, timeout=30)
            raise AssertionError("accepted")
        except urllib.error.HTTPError as e:
            assert e.code == status and json.load(e)["error"]["type"] == kind
        except (ConnectionResetError, BrokenPipeError, urllib.error.URLError):
            # The server may answer and close before the whole body is sent.
            assert status == 401


@pytest.mark.parametrize("kind", KIND_IDS)
def test_mid_stream_failure_is_an_error_event(stack: Stack, kind: str) -> None:
    with pytest.raises(anthropic.APIStatusError):
        with stack.client().messages.stream(model=f"{kind}-x-miderror", max_tokens=64,
                                            messages=[{"role": "user", "content": "one two three"}]) as s:
            for _ in s.text_stream:
                pass


def test_usage_rows_record_the_messages_endpoint(stack: Stack) -> None:
    stack.client().messages.create(model="openai-x-echo", max_tokens=8, messages=[{"role": "user", "content": "x"}])
    ts = stack.admin_get("/api/stats/timeseries?group_by=endpoint&bucket=day")
    groups = {p["group"]: p["requests"] for p in ts["points"]}
    assert groups.get("messages", 0) >= 10, ts
    assert "chat" not in groups, ts
