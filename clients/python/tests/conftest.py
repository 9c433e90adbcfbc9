"""A real `forge-overlay serve` per test module that asks for one, and helpers shared by the suites.

The binary is `FORGE_OVERLAY_BIN`, or `target/debug/forge-overlay` of this repository. A missing
binary fails the suite: it never passes without a server.
"""

from __future__ import annotations

import asyncio
import os
import queue
import re
import subprocess
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import httpx
import pytest

from forge_overlay_client import AsyncClient, Client

REPO = Path(__file__).resolve().parents[3]
FIXTURES = REPO / "fixtures" / "wasm"
ADMIN_TOKEN = "fgo_python-client-suite-admin"
T = TypeVar("T")
STARTUP_SECONDS = 60

#: A module whose `spin` entry point loops until its deadline stops it: an invocation that stays
#: in flight for `max_execution_ms`.
SPIN_WAT = """(module
  (memory (export "memory") 1)
  (func (export "forge_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "spin") (param i32 i32) (result i64) (loop $forever (br $forever)) (i64.const 0)))"""


def spin_manifest(name: str, max_execution_ms: int) -> dict:
    return {
        "name": name,
        "version": "1.0.0",
        "entry_points": ["spin"],
        "max_execution_ms": max_execution_ms,
        "max_fuel": 10**15,
    }


def binary() -> Path:
    path = Path(os.environ.get("FORGE_OVERLAY_BIN") or REPO / "target" / "debug" / "forge-overlay")
    if not path.is_file():
        pytest.fail(
            f"no server binary at {path}: build it (cargo build --bin forge-overlay) or set FORGE_OVERLAY_BIN"
        )
    return path


@dataclass
class Server:
    url: str
    process: subprocess.Popen[str]
    data_dir: Path
    log: Path

    def client(self, token: str | None = ADMIN_TOKEN, **options) -> Client:
        return Client(self.url, token, **options)

    def async_client(self, token: str | None = ADMIN_TOKEN, **options) -> AsyncClient:
        return AsyncClient(self.url, token, **options)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_server(data_dir: Path, *flags: str) -> Server:
    """Starts `serve` on a free port with its own data directory and waits for its address."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORGE_")}
    log = data_dir / "server.log"
    command = [str(binary()), "serve", "--bind", "127.0.0.1:0", "--data-dir", str(data_dir)]
    command += ["--admin-token", ADMIN_TOKEN, *flags]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=log.open("w"), text=True, env=env, cwd=data_dir
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
    try:
        while True:
            line = lines.get(timeout=STARTUP_SECONDS)
            if found := re.search(r"listening on (http://\S+)", line):
                return Server(found.group(1), process, data_dir, log)
    except queue.Empty:
        process.kill()
        pytest.fail(f"the server did not start within {STARTUP_SECONDS} s: {log.read_text()}")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = start_server(tmp_path_factory.mktemp("forge"))
    yield running
    running.stop()


@pytest.fixture
def admin(server: Server) -> Iterator[Client]:
    with server.client() as client:
        yield client


def eventually(read: Callable[[], T], done: Callable[[T], bool], seconds: float = 5.0) -> T:
    """`read()` once `done` holds for it. Health counters are written in batches behind the
    invocations (every few ms), so a count read right after a call may not include it yet."""
    deadline = time.monotonic() + seconds
    while not done(value := read()):
        assert time.monotonic() < deadline, f"still {value!r} after {seconds} s"
        time.sleep(0.02)
    return value


async def eventually_async(
    read: Callable[[], Awaitable[T]], done: Callable[[T], bool], seconds: float = 5.0
) -> T:
    """`eventually` for the async client."""
    deadline = time.monotonic() + seconds
    while not done(value := await read()):
        assert time.monotonic() < deadline, f"still {value!r} after {seconds} s"
        await asyncio.sleep(0.02)
    return value


def unique(prefix: str) -> str:
    """An overlay or user name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def echo_manifest(name: str, version: str = "0.1.0") -> str:
    """The echo fixture's manifest under another name and version."""
    text = (FIXTURES / "echo.toml").read_text()
    text = re.sub(r'^name = ".*"$', f'name = "{name}"', text, flags=re.M)
    return re.sub(r'^version = ".*"$', f'version = "{version}"', text, flags=re.M)


def raw(server: Server, method: str, path: str, **options) -> httpx.Response:
    """A request the client would never send (wrong method, wrong body), with the admin's token."""
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}", **options.pop("headers", {})}
    return httpx.request(method, server.url + path, headers=headers, **options)


class CountingTransport(httpx.HTTPTransport):
    """Records the status of every answer that passes: how many attempts a call took."""

    def __init__(self) -> None:
        super().__init__()
        self.statuses: list[int] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        self.statuses.append(response.status_code)
        return response


class AsyncCountingTransport(httpx.AsyncHTTPTransport):
    """`CountingTransport` for the async client."""

    def __init__(self) -> None:
        super().__init__()
        self.statuses: list[int] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await super().handle_async_request(request)
        self.statuses.append(response.status_code)
        return response
