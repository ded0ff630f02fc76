"""The real nexus-server binary, driven by the official `openai` Python SDK's Responses API
(`/v1/responses`).

Uses the server and mock set-up of test_anthropic_sdk.py (one provider of every kind on the mock,
models `{kind}-x-{word}`, a client key and a key limited to 1 request a minute), and checks
`responses.create` (plain and streamed, with the SDK's stream helper), function tools with a
`function_call_output` turn (by `previous_response_id`, and by sending the whole conversation
with `store=False` as Codex CLI does), `responses.retrieve` / `input_items.list` / `delete`
scoped to the key, the SDK's exception classes, and the usage rows' endpoint `responses`.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import openai
import pytest

from test_anthropic_sdk import KIND_IDS, Stack, stack  # noqa: F401  (the module's fixture)
from test_openai_sdk import ADMIN


def client(stack: Stack, key: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.base + "/v1", api_key=key or stack.key, max_retries=0, timeout=30)


def new_key(stack: Stack, name: str) -> str:
    req = urllib.request.Request(stack.base + "/api/keys", data=json.dumps({"name": name}).encode(),
                                 headers={"Authorization": "Bearer " + ADMIN, "Content-Type": "application/json"},
                                 method="POST")
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r)["key"]


# "relay": an `openai` provider with the `responses_api` option on the same mock, which serves
# OpenAI's Responses API itself: requests are relayed to it, not translated.
KINDS = KIND_IDS + ["relay"]


@pytest.fixture(scope="module")
def rs(stack: Stack) -> Stack:
    def call(method: str, path: str, body: dict) -> dict:
        req = urllib.request.Request(stack.base + path, data=json.dumps(body).encode(), method=method,
                                     headers={"Authorization": "Bearer " + ADMIN, "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.load(r)

    mock_url = next(p["base_url"] for p in stack.admin_get("/api/providers") if p["kind"] == "openai")
    p = call("POST", "/api/providers", {"name": "relay", "kind": "openai", "base_url": mock_url,
                                        "api_key": "sk-relay-upstream-0123456789", "options": {"responses_api": True}})
    for w in ("echo", "tools", "miderror", "chunks3", "fail503"):
        call("POST", f"/api/providers/{p['id']}/models", {"name": f"relay-x-{w}", "upstream_name": f"up-{w}"})
    return stack


TOOLS = [
    {"type": "function", "name": "lookup", "description": "Look a word up.", "strict": True,
     "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"],
                    "additionalProperties": False}},
    {"type": "web_search"},
]


@pytest.mark.parametrize("kind", KINDS)
def test_create(rs: Stack, kind: str) -> None:
    r = client(rs).responses.create(model=f"{kind}-x-echo", instructions="Be brief.",
                                       input="hello from responses", max_output_tokens=64)
    assert r.object == "response" and r.status == "completed"
    assert r.id.startswith("resp_")
    assert r.model == f"{kind}-x-echo"
    assert r.output_text == "hello from responses"
    assert r.output[-1].type == "message" and r.output[-1].role == "assistant"
    assert r.usage is not None and r.usage.input_tokens > 0 and r.usage.output_tokens > 0
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens
    assert r.instructions == "Be brief."


@pytest.mark.parametrize("kind", KINDS)
def test_stream_helper(rs: Stack, kind: str) -> None:
    deltas = []
    with client(rs).responses.stream(model=f"{kind}-x-echo", input=[
            {"role": "developer", "content": "Answer in English."},
            {"role": "user", "content": [{"type": "input_text", "text": "one two three"}]}]) as s:
        for ev in s:
            if ev.type == "response.output_text.delta":
                deltas.append(ev.delta)
        final = s.get_final_response()
    assert "".join(deltas) == "one two three"
    assert final.status == "completed" and final.output_text == "one two three"
    assert final.usage is not None and final.usage.input_tokens > 0


def test_raw_event_sequence(rs: Stack) -> None:
    events = list(client(rs).responses.create(model="openai-x-chunks3", input="go", stream=True))
    assert [e.type for e in events] == [
        "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.delta", "response.output_text.delta",
        "response.output_text.done", "response.content_part.done", "response.output_item.done",
        "response.completed"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    done = events[-1].response
    assert done.output_text == "tok0 tok1 tok2 " and done.usage is not None


def _call(r) -> object:
    calls = [o for o in r.output if o.type == "function_call"]
    assert calls, r
    assert calls[0].name == "lookup"
    assert isinstance(json.loads(calls[0].arguments), dict)
    return calls[0]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("streamed", [False, True])
def test_function_call_and_output_turn(rs: Stack, kind: str, streamed: bool) -> None:
    c = client(rs)
    model = f"{kind}-x-tools"
    if streamed:
        with c.responses.stream(model=model, input="define nexus", tools=TOOLS) as s:
            for _ in s:
                pass
            first = s.get_final_response()
    else:
        first = c.responses.create(model=model, input="define nexus", tools=TOOLS)
    call = _call(first)
    # Continued from the stored response.
    second = c.responses.create(model=model, tools=TOOLS, previous_response_id=first.id,
                                input=[{"type": "function_call_output", "call_id": call.call_id,
                                        "output": "a hub of AI providers"}])
    assert second.status == "completed" and second.output
    assert second.previous_response_id == first.id


@pytest.mark.parametrize("kind", KINDS)
def test_whole_conversation_without_store(rs: Stack, kind: str) -> None:
    """Codex CLI's way: `store=False`, every turn sends the whole conversation."""
    c = client(rs)
    model = f"{kind}-x-tools"
    question = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "define nexus"}]}
    first = c.responses.create(model=model, input=[question], tools=TOOLS, store=False,
                               include=["reasoning.encrypted_content"], parallel_tool_calls=True)
    call = _call(first)
    with pytest.raises(openai.NotFoundError):
        c.responses.retrieve(first.id)
    items = [question] + [o.model_dump(exclude_none=True) for o in first.output] + [
        {"type": "function_call_output", "call_id": call.call_id, "output": "a hub of AI providers"}]
    second = c.responses.create(model=model, input=items, tools=TOOLS, store=False)
    assert second.status == "completed" and second.output


def test_retrieve_input_items_delete_scoped_to_the_key(rs: Stack) -> None:
    c = client(rs)
    r = c.responses.create(model="openai-x-echo", input="keep me")
    got = c.responses.retrieve(r.id)
    assert got.id == r.id and got.output_text == "keep me"
    items = c.responses.input_items.list(r.id)
    assert [i.type for i in items.data] == ["message"]
    other = client(rs, new_key(rs, "other-tenant"))
    with pytest.raises(openai.NotFoundError):
        other.responses.retrieve(r.id)
    with pytest.raises(openai.NotFoundError):
        other.responses.create(model="openai-x-echo", input="x", previous_response_id=r.id)
    with pytest.raises(openai.NotFoundError):
        other.responses.delete(r.id)
    c.responses.delete(r.id)
    with pytest.raises(openai.NotFoundError):
        c.responses.retrieve(r.id)


def test_errors_map_to_sdk_classes(rs: Stack) -> None:
    with pytest.raises(openai.AuthenticationError):
        client(rs, "nx-not-a-key").responses.create(model="openai-x-echo", input="x")
    with pytest.raises(openai.BadRequestError) as e:
        client(rs).responses.create(model="openai-x-echo", input="x", background=True)
    assert "background" in str(e.value)
    with pytest.raises(openai.BadRequestError):
        client(rs).responses.create(model="openai-x-echo", input=[{"type": "item_reference", "id": "msg_1"}])
    with pytest.raises(openai.NotFoundError):
        client(rs).responses.create(model="no-such-model", input="x")
    with pytest.raises(openai.InternalServerError) as e:
        client(rs).responses.create(model="openai-x-fail503", input="x")
    # Upstream internals stay in the operator's log.
    assert "10.9.8.7" not in str(e.value.body) and "sk-mock" not in str(e.value.body)
    limited = client(rs, rs.limited)
    with pytest.raises(openai.RateLimitError):
        for _ in range(3):
            limited.responses.create(model="openai-x-echo", input="x")


def test_websocket_attempt_is_a_plain_status(rs: Stack) -> None:
    """Codex CLI first tries a WebSocket `GET /v1/responses`; a non-101 answer makes it use HTTP."""
    req = urllib.request.Request(rs.base + "/v1/responses", headers={
        "Authorization": "Bearer " + rs.key, "Connection": "Upgrade", "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 405
    assert json.load(e.value)["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("kind", KINDS)
def test_mid_stream_failure_is_a_failed_event(rs: Stack, kind: str) -> None:
    events = list(client(rs).responses.create(model=f"{kind}-x-miderror", input="one two three", stream=True))
    assert events[-1].type == "response.failed"
    assert events[-1].response.status == "failed"
    assert events[-1].response.error is not None
    assert not any(e.type == "response.completed" for e in events)


def test_usage_rows_record_the_responses_endpoint(rs: Stack) -> None:
    client(rs).responses.create(model="openai-x-echo", input="x")
    ts = rs.admin_get("/api/stats/timeseries?group_by=endpoint&bucket=day")
    groups = {p["group"]: p["requests"] for p in ts["points"]}
    assert groups.get("responses", 0) >= 10, ts
    assert "chat" not in groups and "messages" not in groups, ts
