"""The API's request and response bodies, one model per schema of `GET /api/v1/openapi.json`.

Written by hand to read well; `tests/test_openapi_drift.py` holds every model to the served
document (fields, required-ness, nullability, enum values), so they cannot drift from the server.

Response models ignore fields they do not know, so a newer server that adds a field does not
break an older client. Request models forbid unknown fields, as the server does.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from enum import Enum
from typing import Any, Generic, TypeVar
from uuid import UUID

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)


class _Response(BaseModel):
    """A body the server writes."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class _Request(BaseModel):
    """A body the client writes; the server refuses fields it does not know."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class OverlayState(str, Enum):
    PENDING = "pending"
    ACTIVE = "active"
    SUSPENDED = "suspended"
    QUARANTINED = "quarantined"
    DEPRECATED = "deprecated"


class LifecycleAction(str, Enum):
    ACTIVATE = "activate"
    SUSPEND = "suspend"
    RESUME = "resume"
    QUARANTINE = "quarantine"
    RELEASE = "release"
    DEPRECATE = "deprecate"


class AuditAction(str, Enum):
    """What an audit event records; `auto_quarantine` and `probation_failed` are the service's own."""

    REGISTER = "register"
    ACTIVATE = "activate"
    SUSPEND = "suspend"
    RESUME = "resume"
    QUARANTINE = "quarantine"
    RELEASE = "release"
    DEPRECATE = "deprecate"
    AUTO_QUARANTINE = "auto_quarantine"
    PROBATION_FAILED = "probation_failed"
    SET_TRUST_LEVEL = "set_trust_level"
    DELETE = "delete"
    DELETE_CAPSULE = "delete_capsule"


class TrustLevel(str, Enum):
    """Forge's trust levels; the server also reads their numbers (core 100 ... quarantine 0)."""

    QUARANTINE = "quarantine"
    SANDBOX = "sandbox"
    STANDARD = "standard"
    TRUSTED = "trusted"
    CORE = "core"


class CapabilityName(str, Enum):
    CAPSULE_READ = "capsule:read"
    CAPSULE_WRITE = "capsule:write"
    CAPSULE_DELETE = "capsule:delete"
    NETWORK_HTTP = "network:http"
    FILE_READ = "file:read"
    FILE_WRITE = "file:write"
    GOVERNANCE_VOTE = "governance:vote"
    SYSTEM_CONFIG = "system:config"


class ErrorKind(str, Enum):
    """Why an invocation failed; `HOST_ERROR` is the host's fault and `INVALID_INPUT` the caller's,
    never held against the overlay."""

    INVALID_INPUT = "invalid_input"
    FUEL_EXHAUSTED = "fuel_exhausted"
    TIMEOUT = "timeout"
    MEMORY_LIMIT = "memory_limit"
    TRAP = "trap"
    INVALID_OUTPUT = "invalid_output"
    OVERLAY_ERROR = "overlay_error"
    CAPABILITY_DENIED = "capability_denied"
    HOST_ERROR = "host_error"


class LogLevel(str, Enum):
    """How serious a log line is: `info` for `log_info` and WASI stdout, `error` for `log_error`,
    WASI stderr and the failure that ended an invocation. As a filter it is a minimum."""

    INFO = "info"
    ERROR = "error"


class CapsuleType(str, Enum):
    KNOWLEDGE = "knowledge"
    CODE = "code"
    DECISION = "decision"
    INSIGHT = "insight"
    CONFIG = "config"
    POLICY = "policy"


class Role(str, Enum):
    ADMIN = "admin"
    OPERATOR = "operator"
    USER = "user"


class ErrorCode(str, Enum):
    """The `code` of every refusal's body; each has its exception class in `errors`."""

    VALIDATION_ERROR = "validation_error"
    AUTHENTICATION_ERROR = "authentication_error"
    AUTHORIZATION_ERROR = "authorization_error"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    CONFLICT = "conflict"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    RATE_LIMIT_EXCEEDED = "rate_limit_exceeded"
    SERVICE_UNAVAILABLE = "service_unavailable"
    INTERNAL_ERROR = "internal_error"


class ErrorBody(_Response):
    """The body of every refusal; a validation error lists `{field, message}` in `details.errors`."""

    code: ErrorCode
    message: str
    details: dict[str, Any] = Field(default_factory=dict)


class Capability(BaseModel):
    """A granted capability; a bare name (`"capsule:read"`) is read as `{"name": "capsule:read"}`."""

    model_config = ConfigDict(extra="forbid")

    name: CapabilityName
    constraints: dict[str, Any] | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_bare_name(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, (str, CapabilityName)) else value


class BuildSpec(BaseModel):
    """How `forge-overlay build` makes the module: a shell command and the module it produces."""

    model_config = ConfigDict(extra="forbid")

    command: str
    wasm: str


class OverlayManifest(BaseModel):
    """`overlay.toml` as an object: only `name` and `version` are required (defaults as the server's)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    version: str
    description: str = ""
    author: str = ""
    capabilities: list[Capability] = Field(default_factory=list)
    max_memory_mb: int = 64
    max_execution_ms: int = 5000
    max_fuel: int = 1_000_000
    entry_points: list[str] = Field(default_factory=lambda: ["process"])
    build: BuildSpec | None = None


class OverlayHealth(_Response):
    """The health counters kept on the overlay's record."""

    invocation_count: int
    failure_count: int
    host_failure_count: int
    caller_failure_count: int
    avg_execution_ms: float
    on_probation: bool
    last_invoked_at: datetime | None = None
    last_error: str | None = None


class Overlay(OverlayManifest, _Response):
    """A registered overlay: its manifest's fields and its record."""

    model_config = ConfigDict(extra="ignore")

    id: UUID
    state: OverlayState
    trust_level: TrustLevel
    wasm_key: str
    wasm_hash: str
    source_hash: str | None = None
    submitted_by: str
    requires_approval: bool
    created_at: datetime
    updated_at: datetime
    health: OverlayHealth


class HealthReport(_Response):
    overlay_id: UUID
    name: str
    version: str
    state: OverlayState
    trust_level: TrustLevel
    invocation_count: int
    failure_count: int
    host_failure_count: int
    caller_failure_count: int
    failure_rate: float
    window_invocation_count: int
    window_failure_count: int
    window_failure_rate: float
    on_probation: bool
    avg_execution_ms: float
    p50_execution_ms: float | None = None
    p95_execution_ms: float | None = None
    last_invoked_at: datetime | None = None
    last_error: str | None = None


class OverlayInvocation(_Request):
    function: str
    args: dict[str, Any] = Field(default_factory=dict)
    timeout_ms: int | None = None
    #: Return the call's log lines in the result (`logs`); only for the overlay's submitter, admins
    #: and operators. Left out of the body when false, so servers older than it are never sent it.
    include_logs: bool = False

    @model_serializer(mode="wrap")
    def _without_false_include_logs(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        body = handler(self)
        if not self.include_logs:
            body.pop("include_logs", None)
        return body


class LogLine(_Response):
    """One line a call logged, in its result when it was invoked with `include_logs`."""

    level: LogLevel
    message: str
    #: When the overlay wrote it.
    at: datetime


class LogEntry(_Response):
    """One entry of an overlay's kept log: a line one of its invocations logged, or the failure that
    ended one (then `error_kind` is set and `message` is the invocation's error)."""

    invocation_id: UUID
    level: LogLevel
    message: str
    at: datetime
    error_kind: ErrorKind | None = None


class OverlayResult(_Response):
    """An invocation that ran: `success` says whether the overlay succeeded."""

    success: bool
    result: dict[str, Any] | None = None
    error: str | None = None
    error_kind: ErrorKind | None = None
    execution_time_ms: float
    fuel_consumed: int
    #: The call's id (a UUIDv7), also in the `X-Forge-Invocation-Id` header and on its log entries.
    invocation_id: UUID | None = None
    #: The lines the call logged, when it was invoked with `include_logs=True`.
    logs: list[LogLine] | None = None
    #: Lines the call wrote past its log budget, left out of `logs`; set with `logs` only.
    logs_dropped: int | None = None


class AuditEvent(_Response):
    id: int
    overlay_id: UUID
    actor: str
    action: AuditAction
    from_state: OverlayState | None = None
    to_state: OverlayState | None = None
    reason: str | None = None
    details: dict[str, Any]
    created_at: datetime


class Capsule(_Response):
    id: UUID
    content: str
    type: CapsuleType
    trust_level: TrustLevel
    version: int
    metadata: dict[str, Any]
    owner: str | None = None
    created_by_overlay: UUID | None = None
    created_at: datetime


class NewCapsule(_Request):
    content: str
    type: CapsuleType
    trust_level: TrustLevel = TrustLevel.STANDARD
    metadata: dict[str, Any] = Field(default_factory=dict)


class CapsulePreview(_Response):
    id: UUID
    content: str
    type: CapsuleType
    trust_level: TrustLevel


class CapsuleHit(_Response):
    capsule: CapsulePreview
    score: float


class User(_Response):
    id: UUID
    name: str
    roles: list[Role]
    trust_level: TrustLevel
    created_at: datetime
    #: A disabled user's tokens all fail authentication until an admin enables it again.
    disabled: bool = False


class NewUser(_Request):
    name: str
    roles: list[Role]
    trust_level: TrustLevel = TrustLevel.STANDARD


class CreatedUser(_Response):
    """A new user and its API token, which the server shows this once."""

    user: User
    token: str


class RegisterJson(_Request):
    """`POST /overlays` as JSON: the manifest as an object or as TOML/JSON text, the module in base64."""

    manifest: OverlayManifest | str
    wasm_base64: str
    source_hash: str | None = None


class ReasonBody(_Request):
    reason: str | None = None


class TrustLevelBody(_Request):
    trust_level: TrustLevel
    reason: str | None = None


class RevokeBody(_Request):
    token: str


class Revoked(_Response):
    revoked: bool


class TokenInfo(_Response):
    """One of a user's API tokens as an admin sees it: never the token, never its hash."""

    #: The first 12 hex digits of the token's SHA-256.
    id: str
    created_at: datetime
    revoked_at: datetime | None = None
    #: True for the token installed from `FORGE_ADMIN_TOKEN`.
    bootstrap: bool


class RevokedTokens(_Response):
    revoked: int


class ServerHealth(_Response):
    status: str
    version: str


class Meta(_Response):
    """Where a page sits in the whole list."""

    total: int
    page: int
    per_page: int
    pages: int


T = TypeVar("T")


class Data(_Response, Generic[T]):
    """A single resource: `{"data": ...}`."""

    data: T


class Page(_Response, Generic[T]):
    """One page of a list: `{"data": [...], "meta": {...}}`."""

    data: list[T]
    meta: Meta


class LogEntries(list[LogEntry]):
    """What `logs()` answers: the entries, newest first, as a list; `total` is how many entries
    matched in all, more than the list holds when `limit` cut it. (Not a schema of the API: the
    list envelope's `data` and `meta.total`.)"""

    def __init__(self, entries: Iterable[LogEntry] = (), total: int | None = None) -> None:
        super().__init__(entries)
        self.total = len(self) if total is None else total

    def __repr__(self) -> str:
        return f"LogEntries({super().__repr__()}, total={self.total})"
