"""The exceptions of NexusAI Hub: a ``NexusError`` base and one subclass per core error kind.

Every failure of a ``nexus`` call raises one of these, never a bare ``Exception``. The names
follow the ``openai`` SDK so that handlers read the same::

    try:
        hub.chat("gpt-4o", messages, api_key=key)
    except nexus.RateLimitError as e:
        time.sleep(e.retry_after or 1)
    except nexus.NexusError as e:
        print(e.kind, e.status_code, e.message)

The compiled module imports these classes when it loads and raises them with their data set.
They can also be raised by hand (in tests, or in a fake ``Hub``): every argument but the message
has a default that fits the class.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple


class NexusError(Exception):
    """Base class of every NexusAI Hub error.

    Attributes:
        message: What went wrong, for humans (do not parse it).
        kind: The stable machine-readable kind, e.g. ``"rate_limited"`` or ``"not_found"``.
        status_code: The HTTP status a gateway would answer with (for an upstream error that the
            caller can act on, the upstream's own status, e.g. 400 or 429).
        retry_after: Seconds to wait before retrying, when known, else None.
        code: The OpenAI error ``code``, e.g. ``"model_not_found"``.
        param: The offending request parameter, when there is one.
        body: The upstream's error body as received (upstream errors only).
    """

    default_kind = "internal"
    default_status_code = 500
    default_code = "internal_error"

    message: str
    kind: str
    status_code: int
    retry_after: Optional[float]
    code: str
    param: Optional[str]
    body: Optional[str]

    def __init__(
        self,
        message: str,
        kind: Optional[str] = None,
        status_code: Optional[int] = None,
        retry_after: Optional[float] = None,
        code: Optional[str] = None,
        param: Optional[str] = None,
        body: Optional[str] = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.kind = self.default_kind if kind is None else kind
        self.status_code = self.default_status_code if status_code is None else status_code
        self.retry_after = retry_after
        self.code = self.default_code if code is None else code
        self.param = param
        self.body = body

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        extra = f", retry_after={self.retry_after!r}" if self.retry_after is not None else ""
        return (
            f"{type(self).__name__}({self.message!r}, kind={self.kind!r}, "
            f"status_code={self.status_code!r}{extra})"
        )

    def __reduce__(self) -> Tuple[Any, ...]:
        # The default would rebuild from `args` (the message only) and lose the data.
        return (
            type(self),
            (
                self.message,
                self.kind,
                self.status_code,
                self.retry_after,
                self.code,
                self.param,
                self.body,
            ),
        )


class BadRequestError(NexusError):
    """The request is invalid: a missing model or messages, a bad field, bad input (HTTP 400)."""

    default_kind = "invalid_request"
    default_status_code = 400
    default_code = "invalid_request"


class PayloadTooLargeError(NexusError):
    """The request is larger than allowed (HTTP 413)."""

    default_kind = "payload_too_large"
    default_status_code = 413
    default_code = "payload_too_large"


class AuthenticationError(NexusError):
    """The client key is unknown, expired or disabled (HTTP 401)."""

    default_kind = "authentication"
    default_status_code = 401
    default_code = "invalid_api_key"


class PermissionDeniedError(NexusError):
    """The client key may not use that model or provider (HTTP 403)."""

    default_kind = "permission_denied"
    default_status_code = 403
    default_code = "model_not_allowed"


class NotFoundError(NexusError):
    """No such model, provider, key, session or conversation (HTTP 404)."""

    default_kind = "not_found"
    default_status_code = 404
    default_code = "not_found"


class ConflictError(NexusError):
    """A unique name is already taken (HTTP 409)."""

    default_kind = "conflict"
    default_status_code = 409
    default_code = "conflict"


class RateLimitError(NexusError):
    """A rate limit was hit (HTTP 429): the client key's own limit (kind ``rate_limited``) or
    the upstream's 429 (kind ``upstream``). ``retry_after`` says how long to wait, when known."""

    default_kind = "rate_limited"
    default_status_code = 429
    default_code = "rate_limit_exceeded"


class InsufficientQuotaError(RateLimitError):
    """The client key's spending budget for its period is used up (HTTP 429, OpenAI's
    ``insufficient_quota``). A subclass of :class:`RateLimitError`, as the openai SDK reports
    it; unlike a rate limit it is not worth retrying before ``retry_after`` (the period's end)."""

    default_kind = "insufficient_quota"
    default_status_code = 429
    default_code = "insufficient_quota"


class APITimeoutError(NexusError):
    """The upstream did not connect, answer or continue a stream in time (HTTP 504)."""

    default_kind = "timeout"
    default_status_code = 504
    default_code = "timeout"


class APIStatusError(NexusError):
    """The upstream answered with an error status or a malformed response. ``status_code`` is
    the upstream status when the caller can act on it (400-428), else 502; ``body`` is what the
    upstream sent."""

    default_kind = "upstream"
    default_status_code = 502
    default_code = "upstream_error"


class APIConnectionError(NexusError):
    """The upstream could not be reached, or the connection broke mid-answer (HTTP 502)."""

    default_kind = "transport"
    default_status_code = 502
    default_code = "connection_error"


class ServiceUnavailableError(NexusError):
    """Every provider serving the model is cooling down after failures (HTTP 503)."""

    default_kind = "unavailable"
    default_status_code = 503
    default_code = "provider_unavailable"


class StorageError(NexusError):
    """The hub database failed."""

    default_kind = "storage"
    default_status_code = 500
    default_code = "storage_error"


class ConfigError(NexusError):
    """The configuration is wrong, e.g. a master key that does not open this database."""

    default_kind = "config"
    default_status_code = 500
    default_code = "config_error"


class InternalServerError(NexusError):
    """A bug in NexusAI Hub: an invariant did not hold. Please report it."""

    default_kind = "internal"
    default_status_code = 500
    default_code = "internal_error"


__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "ConfigError",
    "ConflictError",
    "InsufficientQuotaError",
    "InternalServerError",
    "NexusError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "RateLimitError",
    "ServiceUnavailableError",
    "StorageError",
]
