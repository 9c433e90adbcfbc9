"""The synchronous client."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
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


class Client:
    """A client of one Forge Overlay server, acting with one token.

    `base_url` and `token` default to `FORGE_URL` and `FORGE_TOKEN` (and the URL to
    `http://127.0.0.1:8000`). Connections are pooled (`limits`); close the client, or use it as a
    context manager. `timeout` is per request, in seconds or as an `httpx.Timeout`; `transport`
    replaces httpx's (a proxy, a test double). Refusals raise a `ForgeError` subclass; `retry`
    says which are sent again.
    """

    def __init__(
        self,
        base_url: str | None = None,
        token: str | None = None,
        *,
        timeout: float | httpx.Timeout = api.DEFAULT_TIMEOUT,
        retry: RetryPolicy = DEFAULT_RETRY,
        limits: httpx.Limits = api.DEFAULT_LIMITS,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        url, token = api.settings(base_url, token)
        self.base_url = url
        self.retry = retry
        self._http = httpx.Client(
            base_url=url, headers=api.headers(token), timeout=timeout, limits=limits, transport=transport
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, call: Call[T]) -> T:
        attempt = 1
        while True:
            response = self._http.request(**call.request())
            wait = self.retry.wait_before_retry(response, retryable=call.retryable, attempt=attempt)
            if wait is None:
                return api.answer(call, response)
            time.sleep(wait)
            attempt += 1

    def _walk(self, call: Call[Page[T]] | None) -> Iterator[T]:
        while call is not None:
            page = self._send(call)
            yield from page.data
            call = api.next_page(call, page)

    # Overlays

    def register_overlay(
        self, manifest: ManifestSource, wasm: WasmSource, *, source_hash: str | None = None
    ) -> Overlay:
        """Registers an overlay (pending, at sandbox trust). `manifest`: a path (a `str` one ends in
        `.toml` or `.json`), TOML text, a dict or an `OverlayManifest`; `wasm`: a path or bytes."""
        return self._send(api.register_overlay(manifest, wasm, source_hash))

    def get_overlay(self, overlay_id: Id) -> Overlay:
        return self._send(api.get_overlay(overlay_id))

    def get_overlay_by_name(self, name: str, version: str) -> Overlay:
        return self._send(api.get_overlay_by_name(name, version))

    def list_overlays(
        self,
        *,
        state: OverlayState | str | None = None,
        submitter: str | None = None,
        name: str | None = None,
        capability: CapabilityName | str | None = None,
        per_page: int | None = None,
    ) -> Iterator[Overlay]:
        """Every overlay matching all the filters given, fetched page by page as iterated."""
        return self._walk(api.list_overlays(state, submitter, name, capability, per_page))

    def activate(self, overlay_id: Id, reason: str | None = None) -> Overlay:
        return self._send(api.transition(overlay_id, LifecycleAction.ACTIVATE, reason))

    def suspend(self, overlay_id: Id, reason: str) -> Overlay:
        return self._send(api.transition(overlay_id, LifecycleAction.SUSPEND, reason))

    def resume(self, overlay_id: Id, reason: str | None = None) -> Overlay:
        return self._send(api.transition(overlay_id, LifecycleAction.RESUME, reason))

    def quarantine(self, overlay_id: Id, reason: str) -> Overlay:
        return self._send(api.transition(overlay_id, LifecycleAction.QUARANTINE, reason))

    def release(self, overlay_id: Id, reason: str | None = None) -> Overlay:
        """Puts a quarantined overlay back to active, with fresh health counters."""
        return self._send(api.transition(overlay_id, LifecycleAction.RELEASE, reason))

    def deprecate(self, overlay_id: Id, reason: str | None = None) -> Overlay:
        return self._send(api.transition(overlay_id, LifecycleAction.DEPRECATE, reason))

    def set_trust_level(self, overlay_id: Id, level: TrustLevel | str, reason: str | None = None) -> Overlay:
        return self._send(api.set_trust_level(overlay_id, level, reason))

    def delete_overlay(self, overlay_id: Id, reason: str | None = None) -> None:
        """Deletes the overlay and its module; its audit trail stays."""
        self._send(api.delete_overlay(overlay_id, reason))

    def invoke(
        self,
        overlay_id: Id,
        function: str,
        args: Mapping[str, Any] | None = None,
        *,
        timeout_ms: int | None = None,
        retryable: bool = False,
        include_logs: bool = False,
    ) -> OverlayResult:
        """Runs one entry point. A failing overlay is a result with `success=False`, not an
        exception. `retryable=True` retries a 429/503 refusal (the call did not run) per `retry`.
        `include_logs=True` returns the lines the call logged in `result.logs` (for the overlay's
        submitter, admins and operators: others get `AuthorizationError` and the call does not run).
        `result.invocation_id` names the call, as in `logs(invocation_id=...)`."""
        call = api.invoke(overlay_id, function, args, timeout_ms, retryable, include_logs=include_logs)
        return self._send(call)

    def invoke_by_name(
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
        """Runs the newest active version of `name`, or the given `version` (looked up first)."""
        if version is None:
            call = api.invoke_by_name(name, function, args, timeout_ms, retryable, include_logs=include_logs)
            return self._send(call)
        overlay = self.get_overlay_by_name(name, version)
        return self.invoke(
            overlay.id, function, args, timeout_ms=timeout_ms, retryable=retryable, include_logs=include_logs
        )

    def health(self, overlay_id: Id) -> HealthReport:
        """The overlay's counters, failure rate and latency percentiles."""
        return self._send(api.overlay_health(overlay_id))

    def events(self, overlay_id: Id, *, per_page: int | None = None) -> Iterator[AuditEvent]:
        """The overlay's audit trail, oldest first, fetched page by page as iterated."""
        return self._walk(api.events(overlay_id, per_page))

    def logs(
        self,
        overlay_id: Id,
        *,
        limit: int | None = None,
        since: datetime | str | None = None,
        level: LogLevel | str | None = None,
        invocation_id: Id | None = None,
    ) -> LogEntries:
        """The overlay's kept log, newest first: the lines its invocations logged and, for each
        failed one, an entry with its `error_kind` and its error as `message`. For the overlay's
        submitter, admins and operators (`AuthorizationError` for others).

        `limit`: most entries returned (1 to 1000, default 100; the server brings others into
        range). `since`: only entries strictly after this instant (an aware `datetime`, or RFC 3339
        text). `level`: a minimum, `"error"` gives errors and failures only. `invocation_id`: only
        that call's entries (its result's `invocation_id`). One request, not pages: the answer is a
        list, and its `.total` counts every matching entry. The server keeps a bounded log per
        overlay (`log_retention_entries`, `log_retention_bytes`), so old entries may be gone.
        """
        return self._send(api.overlay_logs(overlay_id, limit, since, level, invocation_id))

    # Capsules

    def create_capsule(
        self,
        content: str,
        capsule_type: CapsuleType | str,
        *,
        trust_level: TrustLevel | str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Capsule:
        return self._send(api.create_capsule(content, capsule_type, trust_level, metadata))

    def get_capsule(self, capsule_id: Id) -> Capsule:
        return self._send(api.get_capsule(capsule_id))

    def search_capsules(self, query: str, *, limit: int | None = None) -> list[CapsuleHit]:
        """Full-text search within the caller's trust, best first (content cut to 500 characters)."""
        return self._send(api.search_capsules(query, limit))

    # Users and tokens

    def create_user(
        self, name: str, roles: list[Role | str], *, trust_level: TrustLevel | str | None = None
    ) -> CreatedUser:
        """Creates a user (admin); the answer holds its token, which the server shows this once."""
        return self._send(api.create_user(name, roles, trust_level))

    def revoke_token(self, token: str) -> bool:
        """Revokes a token (your own, or anyone's as an admin); it stops working at once."""
        return self._send(api.revoke_token(token))

    def user_tokens(self, name: str, *, per_page: int | None = None) -> Iterator[TokenInfo]:
        """A user's tokens, revoked ones too, oldest first (admin): metadata, never the tokens."""
        return self._walk(api.user_tokens(name, per_page))

    def revoke_user_tokens(self, name: str) -> int:
        """Revokes every live token of a user (admin); returns how many."""
        return self._send(api.revoke_user_tokens(name))

    def disable_user(self, name: str) -> User:
        """Disables a user (admin): none of its tokens works until it is enabled again."""
        return self._send(api.set_user_disabled(name, True))

    def enable_user(self, name: str) -> User:
        """Enables a disabled user again (admin)."""
        return self._send(api.set_user_disabled(name, False))

    # The server

    def server_health(self) -> ServerHealth:
        return self._send(api.server_health())

    def metrics(self) -> str:
        """Prometheus text exposition."""
        return self._send(api.metrics())

    def openapi(self) -> dict[str, Any]:
        """The server's OpenAPI document."""
        return self._send(api.openapi())
