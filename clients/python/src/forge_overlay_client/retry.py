"""When a refused request is sent again, and after how long."""

from __future__ import annotations

from dataclasses import dataclass

import httpx

#: Answers that mean "not now": too many invocations in flight (429), a dependency down (503).
RETRIED_STATUSES = frozenset({429, 503})


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of 429 and 503 answers, for requests that are safe to send twice.

    Safe are the idempotent requests (GET, PUT, DELETE) and invocations the caller marks
    `retryable=True`; a refused invocation never ran, but whether running it later is right is the
    caller's call. `RetryPolicy(attempts=1)` turns retries off.
    """

    #: Attempts in all, the first included.
    attempts: int = 4
    #: Wait before the first retry when the answer has no `Retry-After`; doubled for each next one.
    backoff: float = 0.25
    #: Longest single wait in seconds. A `Retry-After` above it is not waited for: the error is raised.
    max_wait: float = 10.0

    def wait_before_retry(self, response: httpx.Response, *, retryable: bool, attempt: int) -> float | None:
        """Seconds to wait before sending again after `attempt` (from 1) got `response`; None: don't."""
        if not retryable or response.status_code not in RETRIED_STATUSES or attempt >= self.attempts:
            return None
        wait = _retry_after(response)
        if wait is None:
            wait = self.backoff * 2 ** (attempt - 1)
        return wait if wait <= self.max_wait else None


def _retry_after(response: httpx.Response) -> float | None:
    """`Retry-After` in seconds (the form this server sends); None when absent or a date."""
    value = response.headers.get("retry-after", "").strip()
    return float(value) if value.isdigit() else None


DEFAULT_RETRY = RetryPolicy()
