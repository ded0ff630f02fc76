"""Several chats at once on asyncio through one NexusAI Hub, then the usage they recorded.

Run with:  python examples/python/async_chat.py BASE_URL [MODEL]
       or: NEXUS_BASE_URL=... python examples/python/async_chat.py

BASE_URL is any OpenAI-compatible upstream (its key from UPSTREAM_API_KEY), or the test mock:
`target/debug/nexus-mock-upstream` prints its URL.
"""

from __future__ import annotations

import asyncio
import os
import sys

import nexus

QUESTIONS = ["What is 2 + 2?", "Name a primary colour.", "Say 'ready'."]


async def ask(hub: nexus.Hub, model: str, question: str) -> str:
    answer = await hub.achat(model, [{"role": "user", "content": question}], max_tokens=50)
    content: str = answer["choices"][0]["message"]["content"]
    return content


async def stream(hub: nexus.Hub, model: str, question: str) -> str:
    parts = []
    async with await hub.achat_stream(model, [{"role": "user", "content": question}]) as s:
        async for chunk in s:
            for choice in chunk["choices"]:
                parts.append(choice["delta"].get("content") or "")
    return "".join(parts)


async def run(base_url: str, model: str) -> int:
    hub = nexus.Hub()
    p = hub.create_provider("upstream", base_url, os.environ.get("UPSTREAM_API_KEY", "sk-none"))
    hub.create_model(p["id"], model)
    try:
        answers = await asyncio.gather(*(ask(hub, model, q) for q in QUESTIONS))
        streamed = await stream(hub, model, "Count from one to three.")
    except nexus.NexusError as e:
        print(f"error ({e.kind}, HTTP {e.status_code}): {e}", file=sys.stderr)
        return 1
    for q, a in zip(QUESTIONS, answers):
        print(f"Q: {q}\nA: {a}\n")
    print(f"streamed: {streamed}")
    s = hub.summary()
    print(f"[{s['requests']} requests, {s['prompt_tokens']} prompt + {s['completion_tokens']} completion tokens]")
    return 0


def main(argv: list[str]) -> int:
    base_url = argv[1] if len(argv) > 1 else os.environ.get("NEXUS_BASE_URL")
    if not base_url:
        print(__doc__, file=sys.stderr)
        return 2
    model = argv[2] if len(argv) > 2 else "gpt-4o-mini"
    return asyncio.run(run(base_url, model))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
