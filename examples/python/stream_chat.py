"""Streaming chat through NexusAI Hub.

Run with:  python examples/python/stream_chat.py BASE_URL [MODEL] [PROMPT]
       or: NEXUS_BASE_URL=... python examples/python/stream_chat.py

BASE_URL is any OpenAI-compatible upstream, e.g. https://api.openai.com (the key comes from
UPSTREAM_API_KEY) or the test mock: `target/debug/nexus-mock-upstream` prints its URL.
"""

from __future__ import annotations

import os
import sys

import nexus


def main(argv: list[str]) -> int:
    base_url = argv[1] if len(argv) > 1 else os.environ.get("NEXUS_BASE_URL")
    if not base_url:
        print(__doc__, file=sys.stderr)
        return 2
    model = argv[2] if len(argv) > 2 else "gpt-4o-mini"
    prompt = argv[3] if len(argv) > 3 else "Say hello in five words."

    hub = nexus.Hub()  # in memory; pass a path to keep providers, keys and stats
    p = hub.create_provider("upstream", base_url, os.environ.get("UPSTREAM_API_KEY", "sk-none"))
    hub.create_model(p["id"], model)

    try:
        # Leaving the `with` block early (Ctrl-C, break) cancels the upstream request.
        with hub.chat_stream(model, [{"role": "user", "content": prompt}]) as stream:
            for chunk in stream:
                for choice in chunk["choices"]:
                    print(choice["delta"].get("content") or "", end="", flush=True)
        print()
    except nexus.NexusError as e:
        print(f"\nerror ({e.kind}, HTTP {e.status_code}): {e}", file=sys.stderr)
        return 1

    summary = stream.summary  # set once the stream has ended
    if summary is not None:
        usage = summary["usage"]
        print(
            f"[{usage.get('prompt_tokens')} prompt + {usage.get('completion_tokens')} completion "
            f"tokens ({summary['usage_source']}), first token after {summary['ttft_ms'] or 0:.0f} ms, "
            f"finish: {summary['finish_reason']}]"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
