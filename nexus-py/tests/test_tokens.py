"""Token counts: exact for known encodings (values from OpenAI's tiktoken), else labelled
estimates; chat messages with OpenAI's per-message overhead."""

from __future__ import annotations

import nexus

# The example of OpenAI's cookbook "How to count tokens with tiktoken": 129 prompt tokens for
# gpt-3.5-turbo and gpt-4 (cl100k_base).
COOKBOOK_MESSAGES = [
    {"role": "system", "content": "You are a helpful, pattern-following assistant that translates corporate jargon into plain English."},
    {"role": "system", "name": "example_user", "content": "New synergies will help drive top-line growth."},
    {"role": "system", "name": "example_assistant", "content": "Things working well together will increase revenue."},
    {"role": "system", "name": "example_user", "content": "Let's circle back when we have more bandwidth to touch base on opportunities for increased leverage."},
    {"role": "system", "name": "example_assistant", "content": "Let's talk later when we're less busy about how to do better."},
    {"role": "user", "content": "This late pivot means we don't have time to boil the ocean for the client deliverable."},
]


def test_exact_counts_for_gpt_4o_use_o200k() -> None:
    hub = nexus.Hub()
    assert hub.count_tokens("gpt-4o", "hello world") == {"tokens": 2, "method": "exact", "encoding": "o200k_base"}
    assert hub.count_tokens("gpt-4o-mini", "")["tokens"] == 0
    assert hub.count_tokens("o3-mini", "hello world")["encoding"] == "o200k_base"


def test_exact_counts_for_gpt_4_use_cl100k() -> None:
    hub = nexus.Hub()
    assert hub.count_tokens("gpt-4", "tiktoken is great!") == {"tokens": 6, "method": "exact", "encoding": "cl100k_base"}
    assert hub.count_tokens("gpt-3.5-turbo", "hello world")["tokens"] == 2


def test_unknown_models_get_a_labelled_estimate() -> None:
    c = nexus.Hub().count_tokens("some-local-llama", "hello world")
    assert c["method"] == "estimate" and c["encoding"] is None
    assert c["tokens"] > 0


def test_message_overhead_matches_the_cookbook() -> None:
    hub = nexus.Hub()
    c = hub.count_messages("gpt-4", COOKBOOK_MESSAGES)
    assert c == {"tokens": 129, "method": "exact", "encoding": "cl100k_base"}


def test_message_overhead_is_three_per_message_one_per_name_three_to_reply() -> None:
    hub = nexus.Hub()

    def n(text: str) -> int:
        tokens: int = hub.count_tokens("gpt-4o", text)["tokens"]
        return tokens

    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "name": "ann", "content": "你好，世界! How are you?"},
    ]
    expected = 3 + (3 + n("system") + n("Be brief.")) + (3 + n("user") + n("ann") + 1 + n("你好，世界! How are you?"))
    assert hub.count_messages("gpt-4o", messages)["tokens"] == expected
    # Multi-part content counts its text parts.
    parts = [{"role": "user", "content": [{"type": "text", "text": "Be brief."}, {"type": "image_url", "image_url": {"url": "x"}}]}]
    assert hub.count_messages("gpt-4o", parts)["tokens"] == 3 + 3 + n("user") + n("Be brief.")
