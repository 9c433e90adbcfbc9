#!/usr/bin/env python3
"""Peak memory of `forge-overlay serve` under hostile load, with default settings.

    scripts/rss-bench.py [SECONDS] [CLIENTS] [BODY_BYTES]

Starts the server on a throw-away data directory (SQLite + local files, every limit at its
default), registers an echo overlay, a guest that floods its log with empty lines and one that loops
on `capsule_search` (all at `core` trust, so that failing calls never quarantine them), then runs CLIENTS threads (default 16) for SECONDS (default 30), each cycling
through: an invocation with the largest input accepted, a registration body of the largest size
accepted (a module that fails validation, so that only the body costs), a capsule of the largest
content, a log-flood call and a search-flood call. The server's resident set is sampled every 50 ms;
the peak (VmHWM) is printed with the answers each route gave, as one JSON line.

BODY_BYTES, when given, sizes the invocation and capsule bodies instead of their routes' limits (to
see what a server does with bodies far over them: 47185920 is the 45 MiB body of issue 8).

FORGE_OVERLAY_BIN runs that binary instead of building this checkout's release binary. Only the
Python standard library is used.
"""

import base64
import collections
import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

SECONDS = int(sys.argv[1]) if len(sys.argv) > 1 else 30
CLIENTS = int(sys.argv[2]) if len(sys.argv) > 2 else 16
BODY_BYTES = int(sys.argv[3]) if len(sys.argv) > 3 else None
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKEN = "fgo_rss-bench-admin-token"

# The defaults this drives to their limits (docs/configuration.md, docs/security.md).
MAX_INPUT_BYTES = 1 << 20
MAX_MODULE_BYTES = 16 << 20
MAX_CAPSULE_CONTENT = 1 << 20

LOG_FLOOD_WAT = """(module
  (import "forge" "log_info" (func $log (param i32 i32)))
  (memory (export "memory") 1)
  (func (export "forge_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "flood") (param i32 i32) (result i64)
    (loop $forever (call $log (i32.const 0) (i32.const 0)) (br $forever))
    (i64.const 0)))"""

SEARCH_FLOOD_WAT = """(module
  (import "forge" "capsule_search" (func $search (param i32 i32) (result i64)))
  (memory (export "memory") 2)
  (global $next (mut i32) (i32.const 4096))
  (data (i32.const 16) "{\\"query\\": \\"forge\\", \\"limit\\": 100}")
  (func (export "forge_alloc") (param $len i32) (result i32)
    (local $at i32)
    (local.set $at (global.get $next))
    (global.set $next (i32.add (global.get $next) (local.get $len)))
    (if (i32.gt_u (global.get $next) (i32.const 131072)) (then (global.set $next (i32.const 4096)) (local.set $at (i32.const 4096))))
    (local.get $at))
  (func (export "flood") (param i32 i32) (result i64)
    (loop $forever (drop (call $search (i32.const 16) (i32.const 32))) (br $forever))
    (i64.const 0)))"""


def release_binary():
    if os.environ.get("FORGE_OVERLAY_BIN"):
        return os.environ["FORGE_OVERLAY_BIN"]
    subprocess.run(["cargo", "build", "--release", "--bin", "forge-overlay"], cwd=REPO, check=True,
                   stdout=sys.stderr)
    meta = json.loads(subprocess.run(["cargo", "metadata", "--format-version", "1", "--no-deps"],
                                     cwd=REPO, check=True, capture_output=True).stdout)
    return os.path.join(meta["target_directory"], "release", "forge-overlay")


def start_server(work):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORGE_")}
    env.update(FORGE_ADMIN_TOKEN=TOKEN, FORGE_LOG="warn")
    stdout = open(os.path.join(work, "stdout"), "w+")
    stderr = open(os.path.join(work, "stderr"), "w")
    server = subprocess.Popen([release_binary(), "serve", "--bind", "127.0.0.1:0", "--data-dir",
                               os.path.join(work, "data")], env=env, stdout=stdout, stderr=stderr)
    for _ in range(600):
        stdout.seek(0)
        line = stdout.readline()
        if line.startswith("listening on "):
            host, port = line.split("http://")[1].strip().split(":")
            return server, (host, int(port))
        time.sleep(0.1)
    server.kill()
    sys.exit("the server did not start: " + open(os.path.join(work, "stderr")).read())


class Client:
    """One keep-alive connection; reconnects when the server closed it."""

    def __init__(self, address):
        self.address = address
        self.connection = None

    def send(self, method, path, body=None):
        headers = {"Authorization": "Bearer " + TOKEN}
        if body is not None:
            headers["Content-Type"] = "application/json"
        for attempt in range(2):
            if self.connection is None:
                self.connection = http.client.HTTPConnection(*self.address, timeout=120)
            try:
                self.connection.request(method, path, body=body, headers=headers)
                response = self.connection.getresponse()
                data = response.read()
                if response.getheader("Connection", "").lower() == "close":
                    self.connection.close()
                    self.connection = None
                return response.status, data
            except (ConnectionError, http.client.HTTPException, OSError):
                self.connection.close()
                self.connection = None
                if attempt:
                    return "connection_error", b""
        return "connection_error", b""

    def created(self, path, body):
        status, data = self.send("POST", path, json.dumps(body))
        if status != 201:
            sys.exit(f"POST {path}: {status} {data[:500]!r}")
        return json.loads(data)["data"]


def register_and_activate(client, manifest, module_text):
    overlay = client.created("/api/v1/overlays", {
        "manifest": manifest,
        "wasm_base64": base64.b64encode(module_text).decode(),
    })
    status, data = client.send("POST", f"/api/v1/overlays/{overlay['id']}/activate")
    if status != 200:
        sys.exit(f"activate: {status} {data[:500]!r}")
    # Core trust: never quarantined automatically, so the failing floods keep running all along.
    status, data = client.send("PUT", f"/api/v1/overlays/{overlay['id']}/trust-level",
                               json.dumps({"trust_level": "core", "reason": "rss benchmark"}))
    if status != 200:
        sys.exit(f"trust level: {status} {data[:500]!r}")
    return overlay["id"]


def rss_kib(pid, field):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def main():
    work = tempfile.mkdtemp(prefix="forge-rss-")
    server, address = start_server(work)
    try:
        setup = Client(address)
        echo = register_and_activate(setup, open(os.path.join(REPO, "fixtures/wasm/echo.toml")).read(),
                                     open(os.path.join(REPO, "fixtures/wasm/echo.wasm"), "rb").read())
        flood_limits = {"max_execution_ms": 2000, "max_fuel": 10**15}
        log_flood = register_and_activate(
            setup, {"name": "log-flood", "version": "1.0.0", "entry_points": ["flood"], **flood_limits},
            LOG_FLOOD_WAT.encode())
        search_flood = register_and_activate(
            setup, {"name": "search-flood", "version": "1.0.0", "entry_points": ["flood"],
                    "capabilities": ["capsule:read"], **flood_limits},
            SEARCH_FLOOD_WAT.encode())
        for n in range(100):
            setup.created("/api/v1/capsules", {"content": f"forge capsule {n} " + "x" * 20000,
                                               "type": "knowledge"})

        # Bodies at their routes' limits, built once.
        envelope = len(json.dumps({"function": "process", "args": {"text": ""}}))
        invoke_body = json.dumps({"function": "process",
                                  "args": {"text": "a" * ((BODY_BYTES or MAX_INPUT_BYTES) - envelope)}})
        wasm_bytes = MAX_MODULE_BYTES
        registration_body = json.dumps({
            "manifest": {"name": "too-big", "version": "1.0.0"},
            "wasm_base64": base64.b64encode(b"\0asm" + b"\x01" * (wasm_bytes - 4)).decode(),
        })
        capsule_body = json.dumps({"content": "c" * (BODY_BYTES or MAX_CAPSULE_CONTENT), "type": "knowledge"})
        flood_body = json.dumps({"function": "flood", "args": {}})
        work_items = [
            ("invoke_max_input", f"/api/v1/overlays/{echo}/invoke", invoke_body),
            ("register_max_body", "/api/v1/overlays", registration_body),
            ("capsule_max_content", "/api/v1/capsules", capsule_body),
            ("log_flood", f"/api/v1/overlays/{log_flood}/invoke", flood_body),
            ("search_flood", f"/api/v1/overlays/{search_flood}/invoke", flood_body),
        ]

        baseline_kib = rss_kib(server.pid, "VmRSS")
        answers = collections.Counter()
        lock = threading.Lock()
        stop = time.monotonic() + SECONDS

        def client_loop(offset):
            client = Client(address)
            n = offset
            while time.monotonic() < stop:
                name, path, body = work_items[n % len(work_items)]
                status, _ = client.send("POST", path, body)
                with lock:
                    answers[f"{name} {status}"] += 1
                n += 1

        samples = []

        def sampler():
            while time.monotonic() < stop + 1:
                samples.append(rss_kib(server.pid, "VmRSS"))
                time.sleep(0.05)

        threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(CLIENTS)]
        threads.append(threading.Thread(target=sampler))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        status, _ = setup.send("GET", "/health")
        peak_kib = rss_kib(server.pid, "VmHWM")
        print(json.dumps({
            "clients": CLIENTS,
            "seconds": SECONDS,
            "baseline_rss_mib": round(baseline_kib / 1024, 1),
            "peak_rss_mib": round(peak_kib / 1024, 1),
            "max_sampled_rss_mib": round(max(samples) / 1024, 1),
            "serving_after": status == 200,
            "answers": dict(sorted(answers.items())),
        }))
        if status != 200 or server.poll() is not None:
            sys.exit("the server stopped serving")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
