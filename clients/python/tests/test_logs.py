"""Invocation ids, an invocation's own log lines (`include_logs`) and an overlay's kept log (`logs`).

The overlay is the text-stats example: `process` logs one info line per call (`text-stats: N words,
...`) and fails with `overlay_error`, logging nothing, when `top` is over 50.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from datetime import datetime, timedelta, timezone

import httpx
import pytest
from conftest import FIXTURES, Server, unique

from forge_overlay_client import (
    AsyncClient,
    AuthorizationError,
    Client,
    LogEntries,
    LogLevel,
    NotFoundError,
)
from forge_overlay_client.models import ErrorKind, Overlay, OverlayResult, Role

INVOCATION_ID_HEADER = "X-Forge-Invocation-Id"
#: Makes text-stats fail with `overlay_error` before it logs anything.
FAILING_ARGS = {"text": "too many", "top": 1000}


def text_stats_manifest(name: str) -> str:
    """The text-stats fixture's manifest under another name."""
    text = (FIXTURES / "text-stats.toml").read_text()
    return re.sub(r'^name = ".*"$', f'name = "{name}"', text, flags=re.M)


def text_stats(client: Client, activate_with: Client | None = None) -> Overlay:
    """A new text-stats overlay submitted by `client`'s user, activated by `activate_with` (or it)."""
    overlay = client.register_overlay(text_stats_manifest(unique("text-stats")), FIXTURES / "text-stats.wasm")
    (activate_with or client).activate(overlay.id)
    return overlay


def words(n: int) -> dict:
    """Arguments whose call logs `text-stats: {n} words, ...`."""
    return {"text": " ".join(f"word{i}" for i in range(n)), "top": 1}


def logged_words(message: str) -> int:
    found = re.match(r"text-stats: (\d+) words", message)
    assert found, message
    return int(found.group(1))


class Recording(httpx.HTTPTransport):
    """Keeps every request and answer that passes."""

    def __init__(self) -> None:
        super().__init__()
        self.exchanges: list[tuple[httpx.Request, httpx.Response]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        self.exchanges.append((request, response))
        return response


def plain_user(admin: Client, server: Server) -> Client:
    """A client acting as a new user with the `user` role only (so not any overlay's submitter)."""
    return server.client(admin.create_user(unique("plain"), [Role.USER]).token)


# Invocation ids


def test_every_call_has_a_v7_invocation_id_that_is_also_its_header(admin: Client, server: Server) -> None:
    overlay = text_stats(admin)
    recording = Recording()
    with server.client(transport=recording) as client:
        results = [
            client.invoke(overlay.id, "process", words(2)),
            client.invoke(overlay.id, "process", FAILING_ARGS),
            client.invoke_by_name(overlay.name, "process", words(1)),
        ]
    headers = [response.headers.get(INVOCATION_ID_HEADER) for _, response in recording.exchanges]
    assert [str(result.invocation_id) for result in results] == headers
    assert all(isinstance(result.invocation_id, uuid.UUID) for result in results)
    assert {result.invocation_id.version for result in results if result.invocation_id} == {7}
    assert len({result.invocation_id for result in results}) == 3, "each call its own id"
    assert not results[1].success, "a failed call has an id too"
    assert all(result.logs is None and result.logs_dropped is None for result in results)


# include_logs


def test_include_logs_returns_the_lines_the_call_logged(admin: Client, server: Server) -> None:
    overlay = text_stats(admin)
    before = datetime.now(timezone.utc)
    result = admin.invoke(
        overlay.id, "process", {"text": "One two three. Four!", "top": 2}, include_logs=True
    )
    assert result.success and result.result and result.result["words"] == 4
    assert result.logs is not None and len(result.logs) == 1, result.logs
    (line,) = result.logs
    assert line.level == LogLevel.INFO
    assert line.message == "text-stats: 4 words, 2 sentences, 20 characters"
    assert before - timedelta(seconds=5) <= line.at <= datetime.now(timezone.utc) + timedelta(seconds=5)
    assert result.logs_dropped == 0

    by_name = admin.invoke_by_name(overlay.name, "process", words(7), include_logs=True)
    assert [logged_words(line.message) for line in by_name.logs or []] == [7]
    by_version = admin.invoke_by_name(overlay.name, "process", words(8), version="0.1.0", include_logs=True)
    assert [logged_words(line.message) for line in by_version.logs or []] == [8]

    failed = admin.invoke(overlay.id, "process", FAILING_ARGS, include_logs=True)
    assert (failed.success, failed.error_kind) == (False, ErrorKind.OVERLAY_ERROR)
    assert (failed.logs, failed.logs_dropped) == ([], 0), "it failed before logging anything"


def test_include_logs_is_sent_only_when_true(admin: Client, server: Server) -> None:
    # Servers older than `include_logs` refuse a body field they do not know, false or not.
    overlay = text_stats(admin)
    recording = Recording()
    with server.client(transport=recording) as client:
        client.invoke(overlay.id, "process", words(1))
        client.invoke(overlay.id, "process", words(1), include_logs=False)
        client.invoke(overlay.id, "process", words(1), include_logs=True)
    bodies = [json.loads(request.content) for request, _ in recording.exchanges]
    assert ["include_logs" in body for body in bodies] == [False, False, True]
    assert bodies[2]["include_logs"] is True


def test_only_the_submitter_admins_and_operators_may_see_logs(admin: Client, server: Server) -> None:
    overlay = text_stats(admin)
    operator = server.client(admin.create_user(unique("operator"), [Role.OPERATOR]).token)
    with plain_user(admin, server) as user, operator:
        assert user.invoke(overlay.id, "process", words(1)).success, "invoking without logs is allowed"
        with pytest.raises(AuthorizationError) as refused:
            user.invoke(overlay.id, "process", words(2), include_logs=True)
        assert refused.value.status == 403
        with pytest.raises(AuthorizationError):
            user.invoke_by_name(overlay.name, "process", words(2), include_logs=True)
        with pytest.raises(AuthorizationError) as refused:
            user.logs(overlay.id)
        assert refused.value.status == 403

        # The refused calls did not run: only the allowed one logged.
        assert [logged_words(entry.message) for entry in admin.logs(overlay.id)] == [1]
        seen = operator.invoke(overlay.id, "process", words(3), include_logs=True)
        assert [logged_words(line.message) for line in seen.logs or []] == [3]
        assert [logged_words(entry.message) for entry in operator.logs(overlay.id)] == [3, 1]


def test_a_plain_user_sees_the_logs_of_its_own_overlay(admin: Client, server: Server) -> None:
    with plain_user(admin, server) as submitter, plain_user(admin, server) as other:
        overlay = text_stats(submitter, activate_with=admin)
        result = submitter.invoke(overlay.id, "process", words(5), include_logs=True)
        assert [logged_words(line.message) for line in result.logs or []] == [5]
        assert [entry.invocation_id for entry in submitter.logs(overlay.id)] == [result.invocation_id]
        with pytest.raises(AuthorizationError):
            other.logs(overlay.id)


# An overlay's kept log


def test_the_log_is_newest_first_and_names_each_invocation(admin: Client) -> None:
    overlay = text_stats(admin)
    results = [admin.invoke(overlay.id, "process", words(n)) for n in (1, 2, 3)]
    entries = admin.logs(overlay.id)
    assert isinstance(entries, LogEntries) and entries.total == 3
    assert [logged_words(entry.message) for entry in entries] == [3, 2, 1]
    assert [entry.invocation_id for entry in entries] == [r.invocation_id for r in reversed(results)]
    assert all(entry.level == LogLevel.INFO and entry.error_kind is None for entry in entries)
    assert entries[0].at >= entries[1].at >= entries[2].at


def test_a_failed_invocation_leaves_an_entry_with_its_error(admin: Client) -> None:
    overlay = text_stats(admin)
    ok = admin.invoke(overlay.id, "process", words(4))
    failed = admin.invoke(overlay.id, "process", FAILING_ARGS)
    assert (failed.success, failed.error_kind) == (False, ErrorKind.OVERLAY_ERROR)

    (entry,) = admin.logs(overlay.id, invocation_id=failed.invocation_id)
    assert entry.invocation_id == failed.invocation_id
    assert (entry.level, entry.error_kind) == (LogLevel.ERROR, ErrorKind.OVERLAY_ERROR)
    assert entry.message == failed.error

    (line,) = admin.logs(overlay.id, invocation_id=str(ok.invocation_id))
    assert (line.invocation_id, line.error_kind, logged_words(line.message)) == (ok.invocation_id, None, 4)
    assert list(admin.logs(overlay.id, invocation_id=uuid.uuid4())) == []


def test_level_error_keeps_only_errors(admin: Client) -> None:
    overlay = text_stats(admin)
    admin.invoke(overlay.id, "process", words(1))
    failed = admin.invoke(overlay.id, "process", FAILING_ARGS)
    admin.invoke(overlay.id, "process", words(2))

    errors = admin.logs(overlay.id, level=LogLevel.ERROR)
    assert [(e.invocation_id, e.level, e.error_kind) for e in errors] == [
        (failed.invocation_id, LogLevel.ERROR, ErrorKind.OVERLAY_ERROR)
    ]
    assert errors.total == 1
    assert [e.level for e in admin.logs(overlay.id, level="info")] == [
        LogLevel.INFO,
        LogLevel.ERROR,
        LogLevel.INFO,
    ]
    assert len(admin.logs(overlay.id)) == 3


def test_limit_bounds_the_answer_and_total_counts_every_match(admin: Client) -> None:
    overlay = text_stats(admin)
    for n in range(1, 6):
        admin.invoke(overlay.id, "process", words(n))
    newest = admin.logs(overlay.id, limit=2)
    assert [logged_words(entry.message) for entry in newest] == [5, 4]
    assert (len(newest), newest.total) == (2, 5)
    # Out-of-range limits are brought into range by the server: 0 reads as 1, 5000 as 1000.
    assert [logged_words(entry.message) for entry in admin.logs(overlay.id, limit=0)] == [5]
    assert len(admin.logs(overlay.id, limit=5000)) == 5


def test_since_keeps_only_later_entries(admin: Client) -> None:
    overlay = text_stats(admin)
    admin.invoke(overlay.id, "process", words(1))
    time.sleep(0.01)
    mark = datetime.now(timezone.utc)
    time.sleep(0.01)
    admin.invoke(overlay.id, "process", words(2))
    assert [logged_words(entry.message) for entry in admin.logs(overlay.id, since=mark)] == [2]
    later = datetime.now(timezone.utc) + timedelta(minutes=1)
    assert list(admin.logs(overlay.id, since=later.isoformat())) == []
    assert len(admin.logs(overlay.id, since=mark - timedelta(hours=1))) == 2
    with pytest.raises(ValueError, match="time zone"):
        admin.logs(overlay.id, since=datetime.now())


def test_the_logs_of_an_unknown_overlay_are_not_found(admin: Client) -> None:
    with pytest.raises(NotFoundError) as refused:
        admin.logs(uuid.uuid4())
    assert refused.value.status == 404


def test_the_query_carries_each_filter_given(admin: Client, server: Server) -> None:
    recording = Recording()
    overlay = text_stats(admin)
    invocation = uuid.uuid4()
    since = datetime(2024, 5, 1, 12, 30, tzinfo=timezone(timedelta(hours=2)))
    with server.client(transport=recording) as client:
        client.logs(overlay.id)
        client.logs(overlay.id, limit=7, since=since, level=LogLevel.ERROR, invocation_id=invocation)
    (plain, _), (filtered, _) = recording.exchanges
    assert plain.url.path == f"/api/v1/overlays/{overlay.id}/logs" and plain.url.params == httpx.QueryParams()
    assert dict(filtered.url.params) == {
        "limit": "7",
        "since": "2024-05-01T12:30:00+02:00",
        "level": "error",
        "invocation_id": str(invocation),
    }


# The async client


async def test_async_invoke_with_logs_and_read_them_back(admin: Client, server: Server) -> None:
    overlay = text_stats(admin)
    async with server.async_client() as forge:
        ok = await forge.invoke(overlay.id, "process", words(6), include_logs=True)
        assert ok.invocation_id is not None and ok.invocation_id.version == 7
        assert [logged_words(line.message) for line in ok.logs or []] == [6]
        by_name = await forge.invoke_by_name(overlay.name, "process", words(9), include_logs=True)
        assert [logged_words(line.message) for line in by_name.logs or []] == [9]
        failed = await forge.invoke(overlay.id, "process", FAILING_ARGS)
        assert failed.logs is None

        entries = await forge.logs(overlay.id)
        assert [e.invocation_id for e in entries] == [
            failed.invocation_id,
            by_name.invocation_id,
            ok.invocation_id,
        ]
        assert entries.total == 3
        (failure,) = await forge.logs(overlay.id, invocation_id=failed.invocation_id)
        assert (failure.error_kind, failure.message) == (ErrorKind.OVERLAY_ERROR, failed.error)
        assert [e.error_kind for e in await forge.logs(overlay.id, level="error")] == [
            ErrorKind.OVERLAY_ERROR
        ]
        newest = await forge.logs(overlay.id, limit=1)
        assert ([e.invocation_id for e in newest], newest.total) == ([failed.invocation_id], 3)


async def test_async_a_plain_user_is_refused_logs(admin: Client, server: Server) -> None:
    overlay = text_stats(admin)
    token = admin.create_user(unique("plain"), [Role.USER]).token
    async with AsyncClient(server.url, token) as user:
        result: OverlayResult = await user.invoke(overlay.id, "process", words(1))
        assert result.success and result.invocation_id is not None
        with pytest.raises(AuthorizationError):
            await user.invoke(overlay.id, "process", words(1), include_logs=True)
        with pytest.raises(AuthorizationError):
            await user.logs(overlay.id)
    assert [e.invocation_id for e in admin.logs(overlay.id)] == [result.invocation_id]
