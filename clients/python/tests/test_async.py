"""The async client: the same calls, awaited, against the same kind of server."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from conftest import FIXTURES, Server, echo_manifest, eventually_async, unique

from forge_overlay_client import AsyncClient, AuthenticationError, NotFoundError, ValidationError
from forge_overlay_client.models import CapsuleType, OverlayState, Role


async def test_register_activate_invoke_and_list(server: Server) -> None:
    name = unique("async-echo")
    async with server.async_client() as forge:
        overlay = await forge.register_overlay(echo_manifest(name), FIXTURES / "echo.wasm")
        assert (await forge.activate(overlay.id)).state == OverlayState.ACTIVE
        results = await asyncio.gather(*(forge.invoke(overlay.id, "process", {"n": n}) for n in range(10)))
        assert [r.result for r in results] == [{"echo": {"n": n}} for n in range(10)]
        by_name = await forge.invoke_by_name(name, "process", {"by": "name"}, version="0.1.0")
        assert by_name.result == {"echo": {"by": "name"}}
        health = await eventually_async(lambda: forge.health(overlay.id), lambda h: h.invocation_count >= 11)
        assert health.invocation_count == 11
        listed = [o.id async for o in forge.list_overlays(name=name, per_page=1)]
        assert listed == [overlay.id]
        actions = [event.action async for event in forge.events(overlay.id, per_page=1)]
        assert actions == ["register", "activate"]
        await forge.suspend(overlay.id, "async pause")
        with pytest.raises(ValidationError):
            await forge.invoke(overlay.id, "process")
        await forge.delete_overlay(overlay.id)
        with pytest.raises(NotFoundError):
            await forge.get_overlay(overlay.id)


async def test_capsules_users_and_probes(server: Server) -> None:
    word = uuid.uuid4().hex
    async with server.async_client() as forge:
        capsule = await forge.create_capsule(f"async {word}", CapsuleType.DECISION)
        assert (await forge.get_capsule(capsule.id)).content == f"async {word}"
        assert [hit.capsule.id for hit in await forge.search_capsules(word)] == [capsule.id]
        created = await forge.create_user(unique("async-user"), [Role.USER])
        name = created.user.name
        assert (await forge.disable_user(name)).disabled is True
        assert (await forge.enable_user(name)).disabled is False
        assert [token.revoked_at async for token in forge.user_tokens(name)] == [None]
        assert await forge.revoke_user_tokens(name) == 1
        assert [token.revoked_at is not None async for token in forge.user_tokens(name)] == [True]
        assert (await forge.server_health()).status == "ok"
        assert "forge_http_requests_total" in await forge.metrics()
        assert "paths" in await forge.openapi()


async def test_the_probes_need_no_token(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FORGE_TOKEN", raising=False)
    client = AsyncClient(server.url, token=None)
    async with client:
        assert (await client.server_health()).status == "ok"
        with pytest.raises(AuthenticationError):
            await client.get_overlay(uuid.uuid4())
