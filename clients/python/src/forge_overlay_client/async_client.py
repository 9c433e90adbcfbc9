"""The asynchronous client: `Client`'s methods, awaited (and its iterators, `async for`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from typing import Any, TypeVar

import httpx

from . import _protocol as api
from ._protocol import Call, Id, ManifestSource, WasmSource
from .models import (
    AuditEvent,
    CapabilityName,
    Capsule,
    CapsuleHit,
    CapsuleType,
    CreatedUser,
    HealthReport,
    LifecycleAction,
    LogEntries,
    LogLevel,
    Overlay,
    OverlayResult,
    OverlayState,
    Page,
    Role,
    ServerHealth,
    TokenInfo,
    TrustLevel,
    User,
)
from .retry import DEFAULT_RETRY, RetryPolicy

T = TypeVar("T")


class AsyncClient:
    """`Client` for asyncio: the same constructor and methods, awaited; `list_overlays` and `events`
    are async iterators. Close it with `await client.aclose()`, or use `async with`."""

    def __init__(
        self,
        base_url: str | None = None,
        token: str | None = None,
        *,
        timeout: float | httpx.Timeout = api.DEFAULT_TIMEOUT,
        retry: RetryPolicy = DEFAULT_RETRY,
        limits: httpx.Limits = api.DEFAULT_LIMITS,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        url, token = api.settings(base_url, token)
        self.base_url = url
        self.retry = retry
        self._http = httpx.AsyncClient(
            base_url=url, headers=api.headers(token), timeout=timeout, limits=limits, transport=transport
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, call: Call[T]) -> T:
        attempt = 1
        while True:
            response = await self._http.request(**call.request())
            wait = self.retry.wait_before_retry(response, retryable=call.retryable, attempt=attempt)
            if wait is None:
                return api.answer(call, response)
            await asyncio.sleep(wait)
            attempt += 1

    async def _walk(self, call: Call[Page[T]] | None) -> AsyncIterator[T]:
        while call is not None:
            page = await self._send(call)
            for item in page.data:
                yield item
            call = api.next_page(call, page)

    # Overlays

    async def register_overlay(
        self, manifest: ManifestSource, wasm: WasmSource, *, source_hash: str | None = None
    ) -> Overlay:
        return await self._send(api.register_overlay(manifest, wasm, source_hash))

    async def get_overlay(self, overlay_id: Id) -> Overlay:
        return await self._send(api.get_overlay(overlay_id))

    async def get_overlay_by_name(self, name: str, version: str) -> Overlay:
        return await self._send(api.get_overlay_by_name(name, version))

    def list_overlays(
        self,
        *,
        state: OverlayState | str | None = None,
        submitter: str | None = None,
        name: str | None = None,
        capability: CapabilityName | str | None = None,
        per_page: int | None = None,
    ) -> AsyncIterator[Overlay]:
        return self._walk(api.list_overlays(state, submitter, name, capability, per_page))

    async def activate(self, overlay_id: Id, reason: str | None = None) -> Overlay:
        return await self._send(api.transition(overlay_id, LifecycleAction.ACTIVATE, reason))

    async def suspend(self, overlay_id: Id, reason: str) -> Overlay:
        return await self._send(api.transition(overlay_id, LifecycleAction.SUSPEND, reason))

    async def resume(self, overlay_id: Id, reason: str | None = None) -> Overlay:
        return await self._send(api.transition(overlay_id, LifecycleAction.RESUME, reason))

    async def quarantine(self, overlay_id: Id, reason: str) -> Overlay:
        return await self._send(api.transition(overlay_id, LifecycleAction.QUARANTINE, reason))

    async def release(self, overlay_id: Id, reason: str | None = None) -> Overlay:
        return await self._send(api.transition(overlay_id, LifecycleAction.RELEASE, reason))

    async def deprecate(self, overlay_id: Id, reason: str | None = None) -> Overlay:
        return await self._send(api.transition(overlay_id, LifecycleAction.DEPRECATE, reason))

    async def set_trust_level(
        self, overlay_id: Id, level: TrustLevel | str, reason: str | None = None
    ) -> Overlay:
        return await self._send(api.set_trust_level(overlay_id, level, reason))

    async def delete_overlay(self, overlay_id: Id, reason: str | None = None) -> None:
        await self._send(api.delete_overlay(overlay_id, reason))

    async def invoke(
        self,
        overlay_id: Id,
        function: str,
        args: Mapping[str, Any] | None = None,
        *,
        timeout_ms: int | None = None,
        retryable: bool = False,
        include_logs: bool = False,
    ) -> OverlayResult:
        call = api.invoke(overlay_id, function, args, timeout_ms, retryable, include_logs=include_logs)
        return await self._send(call)

    async def invoke_by_name(
        self,
        name: str,
        function: str,
        args: Mapping[str, Any] | None = None,
        *,
        version: str | None = None,
        timeout_ms: int | None = None,
        retryable: bool = False,
        include_logs: bool = False,
    ) -> OverlayResult:
        if version is None:
            call = api.invoke_by_name(name, function, args, timeout_ms, retryable, include_logs=include_logs)
            return await self._send(call)
        overlay = await self.get_overlay_by_name(name, version)
        return await self.invoke(
            overlay.id, function, args, timeout_ms=timeout_ms, retryable=retryable, include_logs=include_logs
        )

    async def health(self, overlay_id: Id) -> HealthReport:
        return await self._send(api.overlay_health(overlay_id))

    def events(self, overlay_id: Id, *, per_page: int | None = None) -> AsyncIterator[AuditEvent]:
        return self._walk(api.events(overlay_id, per_page))

    async def logs(
        self,
        overlay_id: Id,
        *,
        limit: int | None = None,
        since: datetime | str | None = None,
        level: LogLevel | str | None = None,
        invocation_id: Id | None = None,
    ) -> LogEntries:
        """`Client.logs`, awaited: the overlay's kept log, newest first, at most `limit` entries
        (`.total` counts every match), filtered by `since` (strictly after), `level` (a minimum)
        and `invocation_id`. For the overlay's submitter, admins and operators."""
        return await self._send(api.overlay_logs(overlay_id, limit, since, level, invocation_id))

    # Capsules

    async def create_capsule(
        self,
        content: str,
        capsule_type: CapsuleType | str,
        *,
        trust_level: TrustLevel | str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Capsule:
        return await self._send(api.create_capsule(content, capsule_type, trust_level, metadata))

    async def get_capsule(self, capsule_id: Id) -> Capsule:
        return await self._send(api.get_capsule(capsule_id))

    async def search_capsules(self, query: str, *, limit: int | None = None) -> list[CapsuleHit]:
        return await self._send(api.search_capsules(query, limit))

    # Users and tokens

    async def create_user(
        self, name: str, roles: list[Role | str], *, trust_level: TrustLevel | str | None = None
    ) -> CreatedUser:
        return await self._send(api.create_user(name, roles, trust_level))

    async def revoke_token(self, token: str) -> bool:
        return await self._send(api.revoke_token(token))

    def user_tokens(self, name: str, *, per_page: int | None = None) -> AsyncIterator[TokenInfo]:
        return self._walk(api.user_tokens(name, per_page))

    async def revoke_user_tokens(self, name: str) -> int:
        return await self._send(api.revoke_user_tokens(name))

    async def disable_user(self, name: str) -> User:
        return await self._send(api.set_user_disabled(name, True))

    async def enable_user(self, name: str) -> User:
        return await self._send(api.set_user_disabled(name, False))

    # The server

    async def server_health(self) -> ServerHealth:
        return await self._send(api.server_health())

    async def metrics(self) -> str:
        return await self._send(api.metrics())

    async def openapi(self) -> dict[str, Any]:
        return await self._send(api.openapi())
