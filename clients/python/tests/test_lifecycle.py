"""The sync client through an overlay's whole life, and the capsule, user and system endpoints."""

from __future__ import annotations

import functools
import hashlib
import uuid
from pathlib import Path

import pytest
from conftest import ADMIN_TOKEN, FIXTURES, Server, echo_manifest, eventually, unique

from forge_overlay_client import AuthenticationError, Client, NotFoundError, ValidationError
from forge_overlay_client.models import CapsuleType, ErrorKind, OverlayState, Role, TrustLevel


def test_an_overlay_from_registration_to_deletion(admin: Client) -> None:
    name = unique("echo")
    overlay = admin.register_overlay(echo_manifest(name), FIXTURES / "echo.wasm", source_hash="ab" * 32)
    assert (overlay.name, overlay.state, overlay.trust_level) == (
        name,
        OverlayState.PENDING,
        TrustLevel.SANDBOX,
    )
    assert overlay.entry_points == ["process", "fail"]
    assert overlay.source_hash == "ab" * 32
    assert admin.get_overlay(overlay.id) == overlay
    assert admin.get_overlay_by_name(name, "0.1.0").id == overlay.id

    assert admin.activate(overlay.id).state == OverlayState.ACTIVE
    result = admin.invoke(overlay.id, "process", {"hello": "world"})
    assert result.success and result.result == {"echo": {"hello": "world"}}
    assert result.fuel_consumed > 0

    failed = admin.invoke(overlay.id, "fail", {"message": "on purpose"})
    assert (failed.success, failed.error_kind) == (False, ErrorKind.OVERLAY_ERROR)
    assert "on purpose" in (failed.error or "")

    assert admin.suspend(overlay.id, "maintenance").state == OverlayState.SUSPENDED
    with pytest.raises(ValidationError) as refused:
        admin.invoke(overlay.id, "process")
    assert refused.value.details.get("state") == "suspended"
    assert admin.resume(overlay.id).state == OverlayState.ACTIVE
    assert admin.quarantine(overlay.id, "suspicious").state == OverlayState.QUARANTINED
    assert admin.release(overlay.id).state == OverlayState.ACTIVE
    assert admin.set_trust_level(overlay.id, "trusted", reason="reviewed").trust_level == TrustLevel.TRUSTED

    assert admin.health(overlay.id).overlay_id == overlay.id
    assert admin.deprecate(overlay.id, "superseded").state == OverlayState.DEPRECATED

    actions = [event.action for event in admin.events(overlay.id)]
    assert actions[0] == "register" and len(actions) >= 8, actions
    reasons = {event.reason for event in admin.events(overlay.id)}
    assert {"maintenance", "suspicious", "reviewed", "superseded"} <= reasons

    admin.delete_overlay(overlay.id, reason="cleanup")
    with pytest.raises(NotFoundError):
        admin.get_overlay(overlay.id)


def test_failures_are_counted_and_lead_to_quarantine(admin: Client) -> None:
    overlay = admin.register_overlay(echo_manifest(unique("flaky")), FIXTURES / "echo.wasm")
    admin.activate(overlay.id)
    for _ in range(10):
        assert not admin.invoke(overlay.id, "fail").success
    # The counters, and so the decision, land a few ms behind the invocations.
    health = eventually(lambda: admin.health(overlay.id), lambda h: h.state == OverlayState.QUARANTINED)
    assert (health.invocation_count, health.failure_count, health.failure_rate) == (10, 10, 1.0)
    assert health.p50_execution_ms is not None
    assert admin.release(overlay.id).state == OverlayState.ACTIVE
    assert admin.health(overlay.id).invocation_count == 0, "release resets the counters"


@pytest.mark.parametrize("form", ["dict", "text", "path", "path as str"])
def test_a_manifest_is_read_from_a_dict_text_or_path(admin: Client, form: str, tmp_path: Path) -> None:
    name = unique(form.replace(" ", "-"))
    path = tmp_path / "overlay.toml"
    path.write_text(echo_manifest(name))
    manifest = {
        "dict": {"name": name, "version": "0.1.0", "entry_points": ["process", "fail"]},
        "text": path.read_text(),
        "path": path,
        "path as str": str(path),
    }[form]
    overlay = admin.register_overlay(manifest, (FIXTURES / "echo.wasm").read_bytes())
    assert (overlay.name, overlay.entry_points) == (name, ["process", "fail"])


def test_a_mistyped_manifest_path_fails_before_sending(admin: Client) -> None:
    with pytest.raises(FileNotFoundError):
        admin.register_overlay("no/such/overlay.toml", FIXTURES / "echo.wasm")


def test_invoke_by_name_takes_the_newest_active_version_or_the_one_given(admin: Client) -> None:
    name = unique("versions")
    for version in ("1.0.0", "1.1.0"):
        admin.activate(admin.register_overlay(echo_manifest(name, version), FIXTURES / "echo.wasm").id)
    newest = admin.invoke_by_name(name, "process", {"v": "newest"})
    assert newest.result == {"echo": {"v": "newest"}}
    admin.invoke_by_name(name, "process", version="1.0.0")
    for version in ("1.0.0", "1.1.0"):
        read = functools.partial(admin.health, admin.get_overlay_by_name(name, version).id)
        assert eventually(read, lambda h: h.invocation_count > 0).invocation_count == 1, version


def test_capsules_are_created_read_and_searched(admin: Client) -> None:
    word = uuid.uuid4().hex
    capsule = admin.create_capsule(f"Notes about {word}", CapsuleType.KNOWLEDGE, metadata={"source": "test"})
    assert (capsule.type, capsule.trust_level, capsule.metadata) == (
        CapsuleType.KNOWLEDGE,
        TrustLevel.STANDARD,
        {"source": "test"},
    )
    assert admin.get_capsule(capsule.id) == capsule
    hits = admin.search_capsules(word, limit=5)
    assert [hit.capsule.id for hit in hits] == [capsule.id]
    assert hits[0].score > 0


def test_a_new_users_token_works_until_revoked(admin: Client, server: Server) -> None:
    created = admin.create_user(unique("dana"), [Role.OPERATOR], trust_level="trusted")
    assert (created.user.roles, created.user.trust_level) == ([Role.OPERATOR], TrustLevel.TRUSTED)
    assert created.token.startswith("fgo_")
    with server.client(created.token) as dana:
        assert isinstance(list(dana.list_overlays(per_page=1)), list)
        assert dana.revoke_token(created.token) is True
        with pytest.raises(AuthenticationError):
            dana.get_overlay(uuid.uuid4())


def test_an_admin_lists_revokes_disables_and_enables_a_users_tokens(admin: Client, server: Server) -> None:
    name = unique("erin")
    created = admin.create_user(name, [Role.USER])
    tokens = list(admin.user_tokens(name))
    assert [token.id for token in tokens] == [hashlib.sha256(created.token.encode()).hexdigest()[:12]]
    assert tokens[0].revoked_at is None and not tokens[0].bootstrap
    with server.client(created.token) as erin:
        assert admin.disable_user(name).disabled is True
        with pytest.raises(AuthenticationError):
            erin.get_overlay(uuid.uuid4())
        assert admin.enable_user(name).disabled is False
        assert isinstance(list(erin.list_overlays(per_page=1)), list)
        assert admin.revoke_user_tokens(name) == 1
        with pytest.raises(AuthenticationError):
            erin.get_overlay(uuid.uuid4())
    assert all(token.revoked_at is not None for token in admin.user_tokens(name))
    with pytest.raises(NotFoundError):
        admin.disable_user(unique("nobody"))


def test_url_and_token_come_from_the_environment(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORGE_URL", server.url + "/")
    monkeypatch.setenv("FORGE_TOKEN", ADMIN_TOKEN)
    with Client() as client:
        assert client.base_url == server.url
        assert isinstance(client.openapi()["paths"], dict)


def test_probes_and_the_document(admin: Client) -> None:
    assert admin.server_health().status == "ok"
    assert "forge_http_requests_total" in admin.metrics()
    assert admin.openapi()["info"]["title"] == "Forge Overlay Runtime"
