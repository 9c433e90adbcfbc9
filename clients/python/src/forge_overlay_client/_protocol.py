"""Every API call described once, without I/O: the sync and async clients only send these.

A `Call` holds the route, the path, the query, the body, whether it may be retried and how its
answer is read. `ROUTES` lists every route the client speaks, which the drift test holds to the
served OpenAPI document.
"""

from __future__ import annotations

import base64
import dataclasses
import os
from collections.abc import Callable, Mapping
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any, Generic, NamedTuple, TypeVar
from urllib.parse import quote
from uuid import UUID

import httpx
import pydantic

from . import errors
from ._version import __version__
from .models import (
    AuditEvent,
    CapabilityName,
    Capsule,
    CapsuleHit,
    CapsuleType,
    CreatedUser,
    Data,
    HealthReport,
    LifecycleAction,
    LogEntries,
    LogEntry,
    LogLevel,
    NewCapsule,
    NewUser,
    Overlay,
    OverlayInvocation,
    OverlayManifest,
    OverlayResult,
    OverlayState,
    Page,
    ReasonBody,
    RegisterJson,
    RevokeBody,
    Revoked,
    RevokedTokens,
    Role,
    ServerHealth,
    TokenInfo,
    TrustLevel,
    TrustLevelBody,
    User,
)

T = TypeVar("T")

DEFAULT_URL = "http://127.0.0.1:8000"
#: Per request: 5 s to connect, 60 s for the rest (an invocation may run 30 s on the server).
DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=5.0)
#: httpx's pool: up to 100 connections, 20 kept alive between requests.
DEFAULT_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)
PREFIX = "/api/v1"

#: An overlay's or capsule's id, as a UUID or its text.
Id = UUID | str
#: A manifest: a path to `overlay.toml` (or JSON; a `str` path ends in `.toml` or `.json`), its
#: text, a dict or the model.
ManifestSource = os.PathLike[str] | str | Mapping[str, Any] | OverlayManifest
#: A module: a path to the `.wasm` (or `.wat`) file, or its bytes.
WasmSource = os.PathLike[str] | str | bytes | bytearray | memoryview


class Route(NamedTuple):
    method: str
    template: str


ROUTES: list[Route] = []


def _route(method: str, template: str) -> Route:
    route = Route(method, template)
    ROUTES.append(route)
    return route


REGISTER = _route("POST", f"{PREFIX}/overlays")
LIST_OVERLAYS = _route("GET", f"{PREFIX}/overlays")
GET_OVERLAY = _route("GET", f"{PREFIX}/overlays/{{id}}")
DELETE_OVERLAY = _route("DELETE", f"{PREFIX}/overlays/{{id}}")
GET_BY_NAME = _route("GET", f"{PREFIX}/overlays/by-name/{{name}}/{{version}}")
TRANSITION = _route("POST", f"{PREFIX}/overlays/{{id}}/{{action}}")
SET_TRUST = _route("PUT", f"{PREFIX}/overlays/{{id}}/trust-level")
INVOKE = _route("POST", f"{PREFIX}/overlays/{{id}}/invoke")
INVOKE_BY_NAME = _route("POST", f"{PREFIX}/overlays/by-name/{{name}}/invoke")
OVERLAY_HEALTH = _route("GET", f"{PREFIX}/overlays/{{id}}/health")
EVENTS = _route("GET", f"{PREFIX}/overlays/{{id}}/events")
OVERLAY_LOGS = _route("GET", f"{PREFIX}/overlays/{{id}}/logs")
CREATE_CAPSULE = _route("POST", f"{PREFIX}/capsules")
SEARCH_CAPSULES = _route("GET", f"{PREFIX}/capsules")
GET_CAPSULE = _route("GET", f"{PREFIX}/capsules/{{id}}")
CREATE_USER = _route("POST", f"{PREFIX}/users")
REVOKE_TOKEN = _route("POST", f"{PREFIX}/tokens/revoke")
USER_TOKENS = _route("GET", f"{PREFIX}/users/{{name}}/tokens")
REVOKE_USER_TOKENS = _route("POST", f"{PREFIX}/users/{{name}}/revoke-tokens")
DISABLE_USER = _route("POST", f"{PREFIX}/users/{{name}}/disable")
ENABLE_USER = _route("POST", f"{PREFIX}/users/{{name}}/enable")
OPENAPI = _route("GET", f"{PREFIX}/openapi.json")
SERVER_HEALTH = _route("GET", "/health")
METRICS = _route("GET", "/metrics")

#: Methods whose requests may be sent twice with the effect of once.
IDEMPOTENT = frozenset({"GET", "PUT", "DELETE"})


@dataclasses.dataclass(frozen=True)
class Call(Generic[T]):
    """One request and how to read its answer."""

    route: Route
    path: str
    read: Callable[[httpx.Response], T]
    body: pydantic.BaseModel | None = None
    params: Mapping[str, str | int] = dataclasses.field(default_factory=dict)
    #: An invocation the caller marked safe to send again.
    marked_retryable: bool = False

    @property
    def retryable(self) -> bool:
        return self.route.method in IDEMPOTENT or self.marked_retryable

    def request(self) -> dict[str, Any]:
        """The arguments of `httpx.Client.request` that send this call.

        Body fields left `None` are left out, so the server applies its defaults.
        """
        sent: dict[str, Any] = {"method": self.route.method, "url": self.path, "params": self.params}
        if self.body is not None:
            sent["content"] = self.body.model_dump_json(exclude_none=True).encode()
            sent["headers"] = {"Content-Type": "application/json"}
        return sent


def settings(base_url: str | None, token: str | None) -> tuple[str, str | None]:
    """The server and token: as given, else from `FORGE_URL` / `FORGE_TOKEN`, else the default URL."""
    url = base_url or os.environ.get("FORGE_URL") or DEFAULT_URL
    return url.rstrip("/"), token if token is not None else os.environ.get("FORGE_TOKEN")


def headers(token: str | None) -> dict[str, str]:
    sent = {"User-Agent": f"forge-overlay-client/{__version__}", "Accept": "application/json"}
    if token:
        sent["Authorization"] = f"Bearer {token}"
    return sent


def answer(call: Call[T], response: httpx.Response) -> T:
    """The call's result, or the exception its refusal stands for."""
    if not response.is_success:
        raise errors.error_from(response)
    try:
        return call.read(response)
    except (pydantic.ValidationError, ValueError) as e:
        raise errors.UnexpectedResponseError(
            f"{call.route.method} {call.route.template}: the answer does not match the API: {e}",
            status=response.status_code,
        ) from e


def next_page(call: Call[Page[T]], page: Page[T]) -> Call[Page[T]] | None:
    """The call for the page after `page`, or None after the last."""
    if page.meta.page >= page.meta.pages:
        return None
    return dataclasses.replace(call, params={**call.params, "page": page.meta.page + 1})


# How answers are read.


def _data(model: Any) -> Callable[[httpx.Response], Any]:
    adapter = pydantic.TypeAdapter(Data[model])
    return lambda response: adapter.validate_json(response.content).data


def _page(model: Any) -> Callable[[httpx.Response], Any]:
    adapter = pydantic.TypeAdapter(Page[model])
    return lambda response: adapter.validate_json(response.content)


def _nothing(_: httpx.Response) -> None:
    return None


def _path(route: Route, **segments: Any) -> str:
    """The route's path, each segment escaped as one path segment."""
    return route.template.format(**{k: quote(str(v), safe="") for k, v in segments.items()})


def _query(**params: Any) -> dict[str, str | int]:
    """The query string's pairs, those left `None` out, enums as their values and UUIDs as text."""
    return {k: _param(v) for k, v in params.items() if v is not None}


def _param(value: Any) -> str | int:
    if isinstance(value, Enum):
        return value.value
    return str(value) if isinstance(value, UUID) else value


def _instant(value: datetime | str | None) -> str | None:
    """An instant as RFC 3339 text; a naive `datetime` is refused, as its time zone is unknown."""
    if not isinstance(value, datetime):
        return value
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{value!r} has no time zone: pass an aware datetime, e.g. one in UTC")
    return value.isoformat()


# Reading what the caller gave.


def _manifest(source: ManifestSource) -> OverlayManifest | str:
    """A model or dict checked here; a path read; any other text sent as is (TOML or JSON).

    A string is a path when it is one line ending in `.toml` or `.json`: manifest text never is,
    and a mistyped path then fails here rather than as a TOML error from the server.
    """
    if isinstance(source, OverlayManifest):
        return source
    if isinstance(source, Mapping):
        return OverlayManifest.model_validate(dict(source))
    if isinstance(source, os.PathLike) or _is_manifest_path(source):
        return Path(source).read_text()
    return source


def _is_manifest_path(text: str) -> bool:
    return "\n" not in text and text.strip().endswith((".toml", ".json"))


def _wasm(source: WasmSource) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    return Path(source).read_bytes()


# The calls, one per operation.


def register_overlay(manifest: ManifestSource, wasm: WasmSource, source_hash: str | None) -> Call[Overlay]:
    body = RegisterJson(
        manifest=_manifest(manifest),
        wasm_base64=base64.b64encode(_wasm(wasm)).decode(),
        source_hash=source_hash,
    )
    return Call(REGISTER, _path(REGISTER), _data(Overlay), body=body)


def get_overlay(overlay_id: Id) -> Call[Overlay]:
    return Call(GET_OVERLAY, _path(GET_OVERLAY, id=overlay_id), _data(Overlay))


def get_overlay_by_name(name: str, version: str) -> Call[Overlay]:
    return Call(GET_BY_NAME, _path(GET_BY_NAME, name=name, version=version), _data(Overlay))


def list_overlays(
    state: OverlayState | str | None,
    submitter: str | None,
    name: str | None,
    capability: CapabilityName | str | None,
    per_page: int | None,
) -> Call[Page[Overlay]]:
    params = _query(state=state, submitter=submitter, name=name, capability=capability, per_page=per_page)
    return Call(LIST_OVERLAYS, _path(LIST_OVERLAYS), _page(Overlay), params=params)


def transition(overlay_id: Id, action: LifecycleAction, reason: str | None) -> Call[Overlay]:
    path = _path(TRANSITION, id=overlay_id, action=action.value)
    return Call(TRANSITION, path, _data(Overlay), body=ReasonBody(reason=reason))


def set_trust_level(overlay_id: Id, level: TrustLevel | str, reason: str | None) -> Call[Overlay]:
    body = TrustLevelBody(trust_level=TrustLevel(level), reason=reason)
    return Call(SET_TRUST, _path(SET_TRUST, id=overlay_id), _data(Overlay), body=body)


def delete_overlay(overlay_id: Id, reason: str | None) -> Call[None]:
    path = _path(DELETE_OVERLAY, id=overlay_id)
    return Call(DELETE_OVERLAY, path, _nothing, params=_query(reason=reason))


def _invocation(
    function: str, args: Mapping[str, Any] | None, timeout_ms: int | None, include_logs: bool
) -> OverlayInvocation:
    return OverlayInvocation(
        function=function, args=dict(args or {}), timeout_ms=timeout_ms, include_logs=include_logs
    )


def invoke(
    overlay_id: Id,
    function: str,
    args: Mapping[str, Any] | None,
    timeout_ms: int | None,
    retryable: bool,
    *,
    include_logs: bool = False,
) -> Call[OverlayResult]:
    body = _invocation(function, args, timeout_ms, include_logs)
    return Call(
        INVOKE, _path(INVOKE, id=overlay_id), _data(OverlayResult), body=body, marked_retryable=retryable
    )


def invoke_by_name(
    name: str,
    function: str,
    args: Mapping[str, Any] | None,
    timeout_ms: int | None,
    retryable: bool,
    *,
    include_logs: bool = False,
) -> Call[OverlayResult]:
    body = _invocation(function, args, timeout_ms, include_logs)
    path = _path(INVOKE_BY_NAME, name=name)
    return Call(INVOKE_BY_NAME, path, _data(OverlayResult), body=body, marked_retryable=retryable)


def overlay_health(overlay_id: Id) -> Call[HealthReport]:
    return Call(OVERLAY_HEALTH, _path(OVERLAY_HEALTH, id=overlay_id), _data(HealthReport))


def events(overlay_id: Id, per_page: int | None) -> Call[Page[AuditEvent]]:
    path = _path(EVENTS, id=overlay_id)
    return Call(EVENTS, path, _page(AuditEvent), params=_query(per_page=per_page))


def overlay_logs(
    overlay_id: Id,
    limit: int | None,
    since: datetime | str | None,
    level: LogLevel | str | None,
    invocation_id: Id | None,
) -> Call[LogEntries]:
    """One request, not pages: the newest `limit` matching entries and how many match in all."""
    read_page = _page(LogEntry)

    def read(response: httpx.Response) -> LogEntries:
        page = read_page(response)
        return LogEntries(page.data, total=page.meta.total)

    params = _query(limit=limit, since=_instant(since), level=level, invocation_id=invocation_id)
    return Call(OVERLAY_LOGS, _path(OVERLAY_LOGS, id=overlay_id), read, params=params)


def create_capsule(
    content: str,
    capsule_type: CapsuleType | str,
    trust_level: TrustLevel | str | None,
    metadata: Mapping[str, Any] | None,
) -> Call[Capsule]:
    fields: dict[str, Any] = {"content": content, "type": CapsuleType(capsule_type)}
    if trust_level is not None:
        fields["trust_level"] = TrustLevel(trust_level)
    if metadata is not None:
        fields["metadata"] = dict(metadata)
    return Call(CREATE_CAPSULE, _path(CREATE_CAPSULE), _data(Capsule), body=NewCapsule(**fields))


def get_capsule(capsule_id: Id) -> Call[Capsule]:
    return Call(GET_CAPSULE, _path(GET_CAPSULE, id=capsule_id), _data(Capsule))


def search_capsules(query: str, limit: int | None) -> Call[list[CapsuleHit]]:
    read_page = _page(CapsuleHit)
    params = _query(query=query, limit=limit)
    return Call(SEARCH_CAPSULES, _path(SEARCH_CAPSULES), lambda r: read_page(r).data, params=params)


def create_user(
    name: str, roles: list[Role | str], trust_level: TrustLevel | str | None
) -> Call[CreatedUser]:
    fields: dict[str, Any] = {"name": name, "roles": [Role(role) for role in roles]}
    if trust_level is not None:
        fields["trust_level"] = TrustLevel(trust_level)
    return Call(CREATE_USER, _path(CREATE_USER), _data(CreatedUser), body=NewUser(**fields))


def revoke_token(token: str) -> Call[bool]:
    read = _data(Revoked)
    body = RevokeBody(token=token)
    return Call(REVOKE_TOKEN, _path(REVOKE_TOKEN), lambda r: read(r).revoked, body=body)


def user_tokens(name: str, per_page: int | None) -> Call[Page[TokenInfo]]:
    path = _path(USER_TOKENS, name=name)
    return Call(USER_TOKENS, path, _page(TokenInfo), params=_query(per_page=per_page))


def revoke_user_tokens(name: str) -> Call[int]:
    read = _data(RevokedTokens)
    return Call(REVOKE_USER_TOKENS, _path(REVOKE_USER_TOKENS, name=name), lambda r: read(r).revoked)


def set_user_disabled(name: str, disabled: bool) -> Call[User]:
    route = DISABLE_USER if disabled else ENABLE_USER
    return Call(route, _path(route, name=name), _data(User))


def server_health() -> Call[ServerHealth]:
    adapter = pydantic.TypeAdapter(ServerHealth)
    return Call(SERVER_HEALTH, _path(SERVER_HEALTH), lambda r: adapter.validate_json(r.content))


def metrics() -> Call[str]:
    return Call(METRICS, _path(METRICS), lambda r: r.text)


def openapi() -> Call[dict[str, Any]]:
    return Call(OPENAPI, _path(OPENAPI), lambda r: r.json())
