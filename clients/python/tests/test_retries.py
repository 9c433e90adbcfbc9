"""Retries on 429 against a server that lets one invocation of an overlay run at a time."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from uuid import UUID

import httpx
import pytest
from conftest import (
    SPIN_WAT,
    AsyncCountingTransport,
    CountingTransport,
    Server,
    spin_manifest,
    start_server,
    unique,
)

from forge_overlay_client import Client, RateLimitError, RetryPolicy
from forge_overlay_client.models import ErrorKind

#: How long one spinning invocation holds the overlay's only slot.
SPIN_MS = 1200


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = start_server(tmp_path_factory.mktemp("forge"), "--max-in-flight-per-overlay", "1")
    yield running
    running.stop()


@pytest.fixture
def spinner(admin: Client) -> UUID:
    overlay = admin.register_overlay(spin_manifest(unique("spin"), SPIN_MS), SPIN_WAT.encode())
    return admin.activate(overlay.id).id


def occupy(server: Server, overlay_id: UUID) -> threading.Thread:
    """Starts one invocation in the background and returns once it is surely in flight."""

    def invoke() -> None:
        with server.client() as client:
            client.invoke(overlay_id, "spin")

    thread = threading.Thread(target=invoke)
    thread.start()
    time.sleep(0.3)
    return thread


def test_a_busy_overlay_refuses_with_retry_after(server: Server, spinner: UUID) -> None:
    running = occupy(server, spinner)
    with server.client() as client, pytest.raises(RateLimitError) as refused:
        client.invoke(spinner, "spin")
    assert (refused.value.status, refused.value.retry_after) == (429, 1)
    running.join()


def test_a_retryable_invocation_waits_for_the_slot(server: Server, spinner: UUID) -> None:
    running = occupy(server, spinner)
    counting = CountingTransport()
    started = time.monotonic()
    with server.client(transport=counting) as client:
        result = client.invoke(spinner, "spin", retryable=True)
    waited = time.monotonic() - started
    running.join()
    assert counting.statuses == [429, 200]
    assert waited >= 1.0, "Retry-After: 1 was honoured"
    assert (result.success, result.error_kind) == (False, ErrorKind.TIMEOUT), "then it ran to its deadline"


def test_no_retry_when_retry_after_is_beyond_the_longest_wait(server: Server, spinner: UUID) -> None:
    running = occupy(server, spinner)
    counting = CountingTransport()
    with server.client(transport=counting, retry=RetryPolicy(max_wait=0.5)) as client:
        with pytest.raises(RateLimitError):
            client.invoke(spinner, "spin", retryable=True)
    running.join()
    assert counting.statuses == [429]


async def test_the_async_client_retries_too(server: Server, spinner: UUID) -> None:
    counting = AsyncCountingTransport()
    running = occupy(server, spinner)
    async with server.async_client(transport=counting) as client:
        with pytest.raises(RateLimitError):
            await client.invoke(spinner, "spin")
        result = await client.invoke(spinner, "spin", retryable=True)
    running.join()
    assert counting.statuses == [429, 429, 200]
    assert result.error_kind == ErrorKind.TIMEOUT


async def test_concurrent_async_invocations_all_get_through(server: Server, spinner: UUID) -> None:
    """Three calls at once on a one-slot overlay: each refused call waits its turn."""
    retry = RetryPolicy(attempts=8)
    async with server.async_client(retry=retry, timeout=httpx.Timeout(30.0)) as client:
        results = await asyncio.gather(*(client.invoke(spinner, "spin", retryable=True) for _ in range(3)))
    assert [r.error_kind for r in results] == [ErrorKind.TIMEOUT] * 3
