"""NexusAI Hub for Python.

Many OpenAI-compatible providers, their models and client keys in one SQLite file; chat through
them (sync or asyncio, streamed or not), count tokens exactly and offline, and read usage
statistics::

    import nexus

    hub = nexus.Hub("hub.db")
    p = hub.create_provider("openai", "https://api.openai.com", "sk-...")
    hub.create_model(p["id"], "gpt-4o-mini")
    answer = hub.chat("gpt-4o-mini", [{"role": "user", "content": "Hi"}])
    print(answer["choices"][0]["message"]["content"])

Every failure raises a subclass of :class:`nexus.NexusError` (see :mod:`nexus.errors`).
"""

# The exception classes first: the compiled module imports them when it loads.
from .errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConfigError,
    ConflictError,
    InsufficientQuotaError,
    InternalServerError,
    NexusError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RateLimitError,
    ServiceUnavailableError,
    StorageError,
)
from ._nexus import AsyncChatStream, ChatStream, Hub, __version__

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AsyncChatStream",
    "AuthenticationError",
    "BadRequestError",
    "ChatStream",
    "ConfigError",
    "ConflictError",
    "Hub",
    "InsufficientQuotaError",
    "InternalServerError",
    "NexusError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "RateLimitError",
    "ServiceUnavailableError",
    "StorageError",
    "__version__",
]
