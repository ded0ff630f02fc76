"""Type stubs of the compiled module ``nexus._nexus`` (hand-written; checked against the built
module by ``python -m mypy.stubtest nexus._nexus`` in scripts/test-python.sh)."""

import os
from typing import Any, Awaitable, Dict, List, Literal, Mapping, Optional, Sequence, Tuple, Type, Union, final

from .errors import NexusError
from .types import StreamSummary, Summary, TokenCount

__all__ = ["__version__", "Hub", "ChatStream", "AsyncChatStream", "ERROR_CLASSES"]

__version__: str

ERROR_CLASSES: Dict[str, Type[NexusError]]
"""The exception class of each core error kind (``kind`` attribute value → class)."""

_Message = Mapping[str, Any]
_EmbeddingInput = Union[str, Sequence[str], Sequence[int], Sequence[Sequence[int]]]
_Record = Dict[str, Any]

@final
class ChatStream:
    """A streamed chat: iterate for chunk dicts (``chat.completion.chunk``). ``close()``,
    leaving a ``with`` block or dropping the stream cancels the upstream request."""

    def __iter__(self) -> ChatStream: ...
    def __next__(self) -> Dict[str, Any]: ...
    def __enter__(self) -> ChatStream: ...
    def __exit__(self, *_exc_info: object) -> None: ...
    def close(self) -> None:
        """Stops the stream and cancels the upstream request, if it has not ended. Safe to call
        from another thread, and more than once."""
    @property
    def summary(self) -> Optional[StreamSummary]:
        """Usage, finish reason and timings once the stream has ended (or was closed)."""
    @property
    def request_id(self) -> str: ...
    @property
    def conversation_id(self) -> str: ...
    @property
    def provider(self) -> str: ...

@final
class AsyncChatStream:
    """The asyncio form of :class:`ChatStream`: ``async for``, ``async with``, ``aclose()``."""

    def __aiter__(self) -> AsyncChatStream: ...
    def __anext__(self) -> Awaitable[Dict[str, Any]]: ...
    def __aenter__(self) -> Awaitable[AsyncChatStream]: ...
    def __aexit__(self, *_exc_info: object) -> Awaitable[None]: ...
    def aclose(self) -> Awaitable[None]:
        """Stops the stream and cancels the upstream request."""
    @property
    def summary(self) -> Optional[StreamSummary]: ...
    @property
    def request_id(self) -> str: ...
    @property
    def conversation_id(self) -> str: ...
    @property
    def provider(self) -> str: ...

@final
class Hub:
    """A NexusAI Hub: providers, models and client keys in one SQLite file; chat, token counts,
    usage statistics and sessions. Thread-safe: share one per process."""

    def __new__(
        cls,
        path: Union[str, os.PathLike[str], None] = None,
        *,
        master_key: Optional[str] = None,
        record_messages: bool = True,
    ) -> Hub: ...
    # providers
    def create_provider(self, name: str, base_url: str, api_key: str, **fields: Any) -> _Record: ...
    def providers(self) -> List[_Record]: ...
    def update_provider(self, provider_id: int, **fields: Any) -> _Record: ...
    def delete_provider(self, provider_id: int) -> None: ...
    def test_provider(self, provider_id: int) -> _Record: ...
    # models
    def create_model(self, provider_id: int, name: str, **fields: Any) -> _Record: ...
    def models(self, provider_id: Optional[int] = None) -> List[_Record]: ...
    def update_model(self, model_id: int, **fields: Any) -> _Record: ...
    def delete_model(self, model_id: int) -> None: ...
    # client keys
    def create_key(self, name: str, **fields: Any) -> _Record: ...
    def keys(self) -> List[_Record]: ...
    def update_key(self, key_id: int, **fields: Any) -> _Record: ...
    def delete_key(self, key_id: int) -> None: ...
    def key_spend(self, key_id: int) -> Dict[str, Any]: ...
    def reprice(self, **query: Any) -> Dict[str, Any]: ...
    # tokens
    def count_tokens(self, model: str, text: str) -> TokenCount: ...
    def count_messages(self, model: str, messages: Sequence[_Message]) -> TokenCount: ...
    # chat
    def chat(
        self,
        model: str,
        messages: Sequence[_Message],
        *,
        api_key: Optional[str] = None,
        conversation_id: Optional[str] = None,
        **params: Any,
    ) -> Dict[str, Any]: ...
    def chat_stream(
        self,
        model: str,
        messages: Sequence[_Message],
        *,
        api_key: Optional[str] = None,
        conversation_id: Optional[str] = None,
        **params: Any,
    ) -> ChatStream: ...
    def achat(
        self,
        model: str,
        messages: Sequence[_Message],
        *,
        api_key: Optional[str] = None,
        conversation_id: Optional[str] = None,
        **params: Any,
    ) -> Awaitable[Dict[str, Any]]: ...
    def achat_stream(
        self,
        model: str,
        messages: Sequence[_Message],
        *,
        api_key: Optional[str] = None,
        conversation_id: Optional[str] = None,
        **params: Any,
    ) -> Awaitable[AsyncChatStream]: ...
    # embeddings
    def embeddings(
        self,
        model: str,
        input: _EmbeddingInput,
        *,
        dimensions: Optional[int] = None,
        encoding_format: Optional[Literal["float", "base64"]] = None,
        api_key: Optional[str] = None,
        **params: Any,
    ) -> Dict[str, Any]: ...
    def aembeddings(
        self,
        model: str,
        input: _EmbeddingInput,
        *,
        dimensions: Optional[int] = None,
        encoding_format: Optional[Literal["float", "base64"]] = None,
        api_key: Optional[str] = None,
        **params: Any,
    ) -> Awaitable[Dict[str, Any]]: ...
    # stats
    def summary(self) -> Summary: ...
    def timeseries(
        self,
        bucket: Literal["hour", "day"] = "hour",
        group_by: Optional[Literal["model", "provider", "key", "endpoint"]] = None,
        since: int = 0,
    ) -> _Record: ...
    def conversation(self, conversation_id: str) -> _Record: ...
    def flush(self) -> None: ...
    # sessions
    def create_session(
        self, model: str, *, title: str = "", settings: Optional[Mapping[str, Any]] = None
    ) -> _Record: ...
    def sessions(self) -> List[_Record]: ...
    def session(self, session_id: str) -> _Record: ...
    def append_session(
        self, session_id: str, messages: Sequence[Union[Tuple[str, str], _Message]]
    ) -> _Record: ...
    def delete_session(self, session_id: str) -> None: ...
