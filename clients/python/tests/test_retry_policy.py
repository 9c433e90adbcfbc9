"""What is retried and after how long, without a server (answers from a stand-in transport)."""

from __future__ import annotations

import httpx
import pytest

from forge_overlay_client import Client, ServiceUnavailableError
from forge_overlay_client.retry import RetryPolicy

UNAVAILABLE = b'{"code": "service_unavailable", "message": "metadata store unavailable, retry later"}'
SERVER_HEALTH = b'{"status": "ok", "version": "0.1.0"}'


def refused(status: int, **headers: str) -> httpx.Response:
    return httpx.Response(status, headers=headers)


def test_the_wait_doubles_without_retry_after_and_stops_after_the_last_attempt() -> None:
    policy = RetryPolicy(attempts=4, backoff=0.25)
    waits = [policy.wait_before_retry(refused(503), retryable=True, attempt=n) for n in (1, 2, 3, 4)]
    assert waits == [0.25, 0.5, 1.0, None]


def test_retry_after_in_seconds_is_honoured_up_to_the_longest_wait() -> None:
    policy = RetryPolicy(max_wait=5)
    assert policy.wait_before_retry(refused(429, **{"Retry-After": "3"}), retryable=True, attempt=1) == 3
    assert policy.wait_before_retry(refused(429, **{"Retry-After": "6"}), retryable=True, attempt=1) is None
    dated = refused(429, **{"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})
    assert policy.wait_before_retry(dated, retryable=True, attempt=1) == policy.backoff


@pytest.mark.parametrize("status", [400, 404, 409, 422, 500])
def test_other_refusals_and_unsafe_requests_are_not_retried(status: int) -> None:
    policy = RetryPolicy()
    assert policy.wait_before_retry(refused(status), retryable=True, attempt=1) is None
    assert policy.wait_before_retry(refused(503), retryable=False, attempt=1) is None


def sequence(*answers: tuple[int, bytes]) -> tuple[httpx.MockTransport, list[str]]:
    """A transport that gives these answers in turn, and the methods it was asked with."""
    asked: list[str] = []
    pending = list(answers)

    def answer(request: httpx.Request) -> httpx.Response:
        asked.append(request.method)
        status, body = pending.pop(0)
        return httpx.Response(status, content=body, headers={"Content-Type": "application/json"})

    return httpx.MockTransport(answer), asked


def test_an_idempotent_request_is_retried_until_it_succeeds() -> None:
    transport, asked = sequence((503, UNAVAILABLE), (503, UNAVAILABLE), (200, SERVER_HEALTH))
    with Client("http://forge.invalid", retry=RetryPolicy(backoff=0.001), transport=transport) as client:
        assert client.server_health().status == "ok"
    assert asked == ["GET", "GET", "GET"]


def test_a_registration_is_sent_once() -> None:
    transport, asked = sequence((503, UNAVAILABLE), (201, b"{}"))
    with Client("http://forge.invalid", retry=RetryPolicy(backoff=0.001), transport=transport) as client:
        with pytest.raises(ServiceUnavailableError):
            client.register_overlay({"name": "a", "version": "1.0.0"}, b"\0asm")
    assert asked == ["POST"]
