"""Lists are iterators that fetch page after page."""

from __future__ import annotations

from conftest import FIXTURES, CountingTransport, Server, echo_manifest, unique

from forge_overlay_client import Client
from forge_overlay_client.models import OverlayState


def test_list_overlays_walks_every_page_of_the_filtered_list(admin: Client, server: Server) -> None:
    prefix = unique("paged")
    registered = [
        admin.register_overlay(echo_manifest(f"{prefix}-{n}"), FIXTURES / "echo.wasm").id for n in range(5)
    ]
    admin.activate(registered[0])
    counting = CountingTransport()
    with server.client(transport=counting) as client:
        listed = [overlay.id for overlay in client.list_overlays(name=prefix, per_page=2)]
        assert sorted(listed) == sorted(registered)
        assert len(counting.statuses) == 3, "5 overlays, 2 per page"
        pending = client.list_overlays(name=prefix, state=OverlayState.PENDING, per_page=2)
        assert sorted(overlay.id for overlay in pending) == sorted(registered[1:])
        active = client.list_overlays(name=prefix, state="active")
        assert [overlay.id for overlay in active] == registered[:1]


def test_an_iterator_fetches_only_the_pages_it_reaches(admin: Client, server: Server) -> None:
    prefix = unique("lazy")
    for n in range(3):
        admin.register_overlay(echo_manifest(f"{prefix}-{n}"), FIXTURES / "echo.wasm")
    counting = CountingTransport()
    with server.client(transport=counting) as client:
        first = next(client.list_overlays(name=prefix, per_page=1))
        assert first.name.startswith(prefix)
    assert len(counting.statuses) == 1


def test_an_empty_list_is_one_request_and_no_items(server: Server) -> None:
    counting = CountingTransport()
    with server.client(transport=counting) as client:
        assert list(client.list_overlays(name=unique("none"))) == []
    assert len(counting.statuses) == 1


def test_events_walk_every_page_oldest_first(admin: Client) -> None:
    overlay = admin.register_overlay(echo_manifest(unique("audited")), FIXTURES / "echo.wasm")
    admin.activate(overlay.id)
    for n in range(3):
        admin.suspend(overlay.id, f"pause {n}")
        admin.resume(overlay.id)
    events = list(admin.events(overlay.id, per_page=3))
    assert [event.action for event in events[:2]] == ["register", "activate"]
    assert [event.reason for event in events if event.action == "suspend"] == [
        "pause 0",
        "pause 1",
        "pause 2",
    ]
    assert len(events) == 8
    assert [event.id for event in events] == sorted(event.id for event in events)
