"""Python client of the Forge Overlay Runtime's HTTP API.

from forge_overlay_client import Client

with Client("http://127.0.0.1:8000", token) as forge:
    print(forge.invoke(overlay_id, "process", {"hello": "world"}).result)
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("forge-overlay-client")
except PackageNotFoundError:  # run from a source tree that was not installed
    __version__ = "0+unknown"

from . import models
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
from .retry import RetryPolicy

__all__ = [
    "AsyncClient",
    "AuthenticationError",
    "AuthorizationError",
    "Client",
    "ConflictError",
    "ForgeError",
    "InternalServerError",
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
