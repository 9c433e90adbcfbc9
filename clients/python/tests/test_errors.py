"""Every error code of the server's refusal body raises its own exception class."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest
from conftest import FIXTURES, CountingTransport, Server, echo_manifest, raw, start_server, unique

from forge_overlay_client import (
    AuthenticationError,
    AuthorizationError,
    Client,
    ConflictError,
    ForgeError,
    InternalServerError,
    MethodNotAllowedError,
    NotFoundError,
    PayloadTooLargeError,
    RetryPolicy,
    ServiceUnavailableError,
    UnexpectedResponseError,
    UnsupportedMediaTypeError,
    ValidationError,
)
from forge_overlay_client.errors import error_from
from forge_overlay_client.models import Role

#: The body limit of this module's server: the echo fixture (70 KiB, 94 KiB in base64) fits, a
#: module of 512 KiB does not.
MAX_BODY_BYTES = 256 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = start_server(tmp_path_factory.mktemp("forge"), "--max-body-bytes", str(MAX_BODY_BYTES))
    yield running
    running.stop()


def test_an_invalid_manifest_is_a_validation_error_listing_the_fields(admin: Client) -> None:
    with pytest.raises(ValidationError) as refused:
        admin.register_overlay(echo_manifest("Not A Valid Name"), FIXTURES / "echo.wasm")
    error = refused.value
    assert (error.status, error.code.value) == (422, "validation_error")
    assert any(problem["field"] == "name" for problem in error.details["errors"]), error.details
    assert "422 validation_error" in str(error)


def test_an_unknown_token_is_an_authentication_error(server: Server) -> None:
    with (
        server.client("fgo_nobody-has-this-token") as stranger,
        pytest.raises(AuthenticationError) as refused,
    ):
        stranger.get_overlay(uuid.uuid4())
    assert refused.value.status == 401


def test_a_user_activating_is_an_authorization_error(admin: Client, server: Server) -> None:
    overlay = admin.register_overlay(echo_manifest(unique("guarded")), FIXTURES / "echo.wasm")
    token = admin.create_user(unique("user"), [Role.USER]).token
    with server.client(token) as user, pytest.raises(AuthorizationError) as refused:
        user.activate(overlay.id)
    assert refused.value.status == 403


def test_a_missing_overlay_is_not_found(admin: Client) -> None:
    with pytest.raises(NotFoundError) as refused:
        admin.health(uuid.uuid4())
    assert refused.value.status == 404


def test_a_second_registration_of_a_name_and_version_is_a_conflict(admin: Client) -> None:
    manifest = echo_manifest(unique("twice"))
    admin.register_overlay(manifest, FIXTURES / "echo.wasm")
    with pytest.raises(ConflictError):
        admin.register_overlay(manifest, FIXTURES / "echo.wasm")


def test_a_body_over_the_limit_is_payload_too_large(admin: Client) -> None:
    with pytest.raises(PayloadTooLargeError) as refused:
        admin.register_overlay(echo_manifest(unique("huge")), b"\0" * (512 * 1024))
    assert refused.value.status == 413


def test_a_missing_module_is_service_unavailable_and_retried_when_marked(
    admin: Client, server: Server
) -> None:
    overlay = admin.register_overlay(echo_manifest(unique("lost")), FIXTURES / "echo.wasm")
    admin.activate(overlay.id)
    (server.data_dir / "blobs" / overlay.wasm_key).unlink()
    counting = CountingTransport()
    with server.client(retry=RetryPolicy(attempts=3, backoff=0.01), transport=counting) as client:
        with pytest.raises(ServiceUnavailableError) as refused:
            client.invoke(overlay.id, "process", retryable=True)
        assert counting.statuses == [503, 503, 503], "three attempts, each after the 503's Retry-After"
        counting.statuses.clear()
        with pytest.raises(ServiceUnavailableError):
            client.invoke(overlay.id, "process")
        assert counting.statuses == [503], "an invocation not marked retryable is sent once"
    assert refused.value.message == "overlay binary unavailable"
    assert refused.value.retry_after == 1


# The client never sends a wrong method or a body of the wrong type; these check that the server's
# answers to them still map to their classes.


def test_a_wrong_method_maps_to_method_not_allowed(server: Server) -> None:
    error = error_from(raw(server, "PATCH", "/api/v1/overlays"))
    assert isinstance(error, MethodNotAllowedError) and error.status == 405


def test_a_body_of_another_type_maps_to_unsupported_media_type(server: Server) -> None:
    response = raw(server, "POST", "/api/v1/overlays", content=b"x", headers={"Content-Type": "text/plain"})
    error = error_from(response)
    assert isinstance(error, UnsupportedMediaTypeError) and error.status == 415


# The server answers 500 only on a bug and the client meets foreign answers only behind a broken
# proxy, so these two are answered by a stand-in transport.


def answering(status: int, body: bytes, content_type: str) -> Client:
    reply = httpx.Response(status, content=body, headers={"Content-Type": content_type})
    return Client("http://forge.invalid", "fgo_x", transport=httpx.MockTransport(lambda _: reply))


def test_an_internal_error_body_is_an_internal_server_error() -> None:
    body = b'{"code": "internal_error", "message": "internal storage error", "details": {}}'
    with answering(500, body, "application/json") as client, pytest.raises(InternalServerError) as refused:
        client.get_overlay(uuid.uuid4())
    assert refused.value.message == "internal storage error"


def test_an_answer_that_is_not_forges_is_an_unexpected_response() -> None:
    with answering(502, b"<html>Bad Gateway</html>", "text/html") as client:
        with pytest.raises(UnexpectedResponseError) as refused:
            client.get_overlay(uuid.uuid4())
        assert refused.value.status == 502 and "Bad Gateway" in refused.value.message
    with answering(200, b'{"data": {"id": 1}}', "application/json") as client:
        with pytest.raises(UnexpectedResponseError, match="does not match the API"):
            client.get_overlay(uuid.uuid4())
    assert issubclass(UnexpectedResponseError, ForgeError)
