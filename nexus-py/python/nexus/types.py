"""Typed shapes of the plain dicts that ``nexus.Hub`` returns where the shape is the hub's own.

Chat answers and chunks are the upstream's OpenAI JSON and stay ``dict[str, Any]``; records
(providers, models, keys, sessions) have the field names of the admin API (docs/API.md).
These are ``TypedDict`` classes: at runtime the values are ordinary dicts.
"""

from __future__ import annotations

from typing import Literal, Optional, TypedDict


class TokenCount(TypedDict):
    """A token count: exact with a BPE encoding, or a labelled estimate."""

    tokens: int
    method: Literal["exact", "estimate"]
    encoding: Optional[Literal["cl100k_base", "o200k_base"]]


class Usage(TypedDict, total=False):
    """Token usage as OpenAI reports it (upstream detail fields may be added)."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class StreamSummary(TypedDict):
    """How a stream ended: usage, finish reason (``"cancelled"`` when closed early), timings."""

    usage: Usage
    usage_source: Literal["upstream", "estimate", "cache"]
    cost_usd: Optional[float]
    finish_reason: Optional[str]
    latency_ms: float
    ttft_ms: Optional[float]
    error_kind: Optional[str]


class Summary(TypedDict):
    """Usage totals over every recorded request."""

    providers: int
    models: int
    keys: int
    conversations: int
    rounds: int
    requests: int
    errors: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cost: float
    unpriced_requests: int
    total_conversations: int
    total_rounds: int


__all__ = ["StreamSummary", "Summary", "TokenCount", "Usage"]
