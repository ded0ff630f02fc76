"""Token counter: exact counts for OpenAI encodings (o200k for gpt-4o/4.1/o-series/gpt-5,
cl100k for gpt-4/3.5), a labelled estimate for other models. Offline; no upstream needed.

Run with:  python examples/python/count_tokens.py MODEL [TEXT...]
       or: echo "some text" | python examples/python/count_tokens.py MODEL
"""

from __future__ import annotations

import sys

import nexus


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    model = argv[1]
    text = " ".join(argv[2:]) if len(argv) > 2 else sys.stdin.read()
    hub = nexus.Hub()
    c = hub.count_tokens(model, text)
    how = f"exact, {c['encoding']}" if c["method"] == "exact" else "estimate"
    print(f"{c['tokens']} tokens ({how}) for {model}")
    # As a one-message chat prompt, with OpenAI's per-message overhead.
    m = hub.count_messages(model, [{"role": "user", "content": text}])
    print(f"{m['tokens']} prompt tokens as a user message")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
