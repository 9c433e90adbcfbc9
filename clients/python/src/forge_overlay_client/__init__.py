"""Python client of the Forge Overlay Runtime's HTTP API.

from forge_overlay_client import Client

with Client("http://127.0.0.1:8000", token) as forge:
    print(forge.invoke(overlay_id, "process", {"hello": "world"}).result)
"""

from . import models
from ._version import __version__
from .async_client import AsyncClient
from .client import Client
from .errors import (
    AuthenticationError,
    AuthorizationError,
    ConflictError,
    ForgeError,
    InternalServerError,
    MethodNotAllowedError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimitError,
    ServiceUnavailableError,
    UnexpectedResponseError,
    UnsupportedMediaTypeError,
    ValidationError,
)
from .models import LogEntries, LogEntry, LogLevel, LogLine
from .retry import RetryPolicy

__all__ = [
    "AsyncClient",
    "AuthenticationError",
    "AuthorizationError",
    "Client",
    "ConflictError",
    "ForgeError",
    "InternalServerError",
    "LogEntries",
    "LogEntry",
    "LogLevel",
    "LogLine",
    "MethodNotAllowedError",
    "NotFoundError",
    "PayloadTooLargeError",
    "RateLimitError",
    "RetryPolicy",
    "ServiceUnavailableError",
    "UnexpectedResponseError",
    "UnsupportedMediaTypeError",
    "ValidationError",
    "__version__",
    "models",
]
