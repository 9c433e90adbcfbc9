"""One exception class per error code of the server's refusal body `{code, message, details}`.

Catch `ForgeError` for every refusal, or a subclass for one kind. Transport failures (no answer,
a timeout) are httpx's own exceptions (`httpx.TransportError`, `httpx.TimeoutException`).
"""

from __future__ import annotations

from typing import Any

import httpx
import pydantic

from .models import ErrorBody, ErrorCode


class ForgeError(Exception):
    """The server refused a request; `code`, `message` and `details` are its body's."""

    code: ErrorCode | None = None

    def __init__(self, message: str, *, status: int, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.details = details or {}

    def __str__(self) -> str:
        return f"{self.status} {self.code.value if self.code else 'unexpected'}: {self.message}"


class ValidationError(ForgeError):
    """422: an invalid request (`details.errors` lists the fields), or an action the overlay's
    state does not allow."""

    code = ErrorCode.VALIDATION_ERROR


class AuthenticationError(ForgeError):
    """401: no token, or an unknown or revoked one."""

    code = ErrorCode.AUTHENTICATION_ERROR


class AuthorizationError(ForgeError):
    """403: the caller's role or trust level does not allow it."""

    code = ErrorCode.AUTHORIZATION_ERROR


class NotFoundError(ForgeError):
    """404: no such resource (or one above the caller's trust)."""

    code = ErrorCode.NOT_FOUND


class MethodNotAllowedError(ForgeError):
    """405: the route exists, but not with this HTTP method."""

    code = ErrorCode.METHOD_NOT_ALLOWED


class ConflictError(ForgeError):
    """409: already exists (an overlay's name@version, a user's name)."""

    code = ErrorCode.CONFLICT


class PayloadTooLargeError(ForgeError):
    """413: the body is larger than its route takes (`max_body_bytes` for a registration)."""

    code = ErrorCode.PAYLOAD_TOO_LARGE


class UnsupportedMediaTypeError(ForgeError):
    """415: the body is not in a format the route accepts."""

    code = ErrorCode.UNSUPPORTED_MEDIA_TYPE


class _NotNow(ForgeError):
    """A refusal that says when to ask again: `retry_after` is how many seconds to wait."""

    def __init__(self, message: str, *, status: int, details: dict[str, Any] | None = None) -> None:
        super().__init__(message, status=status, details=details)
        retry_after = self.details.get("retry_after")
        self.retry_after: int | None = retry_after if isinstance(retry_after, int) else None


class RateLimitError(_NotNow):
    """429: too many invocations in flight; `retry_after` is how many seconds to wait."""

    code = ErrorCode.RATE_LIMIT_EXCEEDED


class ServiceUnavailableError(_NotNow):
    """503: a dependency of the server (storage, the stored module) is failing for now; `retry_after`
    is how many seconds to wait."""

    code = ErrorCode.SERVICE_UNAVAILABLE


class InternalServerError(ForgeError):
    """500: the server failed; its log says why."""

    code = ErrorCode.INTERNAL_ERROR


class UnexpectedResponseError(ForgeError):
    """An answer that is not Forge's API: not its error body, or a body the models do not read
    (a proxy's error page, another service on that address, an incompatible server version)."""


_BY_CODE: dict[ErrorCode, type[ForgeError]] = {
    cls.code: cls
    for cls in (
        ValidationError,
        AuthenticationError,
        AuthorizationError,
        NotFoundError,
        MethodNotAllowedError,
        ConflictError,
        PayloadTooLargeError,
        UnsupportedMediaTypeError,
        RateLimitError,
        ServiceUnavailableError,
        InternalServerError,
    )
    if cls.code is not None
}


def error_from(response: httpx.Response) -> ForgeError:
    """The exception a refusal stands for: by its body's `code`, or `UnexpectedResponseError`."""
    try:
        body = ErrorBody.model_validate_json(response.content)
    except pydantic.ValidationError:
        text = response.text[:200] or response.reason_phrase
        return UnexpectedResponseError(f"not a Forge error body: {text}", status=response.status_code)
    return _BY_CODE[body.code](body.message, status=response.status_code, details=body.details)
