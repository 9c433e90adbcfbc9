"""Shared by scripts/soak.py and scripts/scale-out.py: starting `forge-overlay serve`, a keep-alive
HTTP client, the guests they invoke, /proc sampling and small statistics. Standard library only."""

import base64
import http.client
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKEN = "fgo_soak-admin-token"

# Answers `{}` (the two bytes at 16) as (16 << 32) | 2.
ANSWER_EMPTY = (16 << 32) | 2

# Spins until its deadline: every call times out.
SPIN_WAT = """(module
  (memory (export "memory") 1)
  (func (export "forge_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "spin") (param i32 i32) (result i64) (loop $forever (br $forever)) (i64.const 0)))"""

# Grows its memory by 32 MiB and writes one byte on every page of it, then answers `{}`.
MEMORY_WAT = f"""(module
  (memory (export "memory") 1)
  (data (i32.const 16) "{{}}")
  (func (export "forge_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "grow") (param i32 i32) (result i64)
    (local $at i32) (local $end i32)
    (if (i32.lt_s (memory.grow (i32.const 512)) (i32.const 0)) (then unreachable))
    (local.set $at (i32.const 65536))
    (local.set $end (i32.mul (memory.size) (i32.const 65536)))
    (loop $touch
      (i32.store8 (local.get $at) (i32.const 1))
      (local.set $at (i32.add (local.get $at) (i32.const 4096)))
      (br_if $touch (i32.lt_u (local.get $at) (local.get $end))))
    (i64.const {ANSWER_EMPTY})))"""

# Logs 5000 lines of 40 bytes (far past the kept lines per call), then answers `{}`.
LOG_FLOOD_WAT = f"""(module
  (import "forge" "log_info" (func $log (param i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "{{}}")
  (data (i32.const 64) "soak log flood line, forty bytes long...")
  (func (export "forge_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "flood") (param i32 i32) (result i64)
    (local $n i32)
    (loop $more
      (call $log (i32.const 64) (i32.const 40))
      (local.set $n (i32.add (local.get $n) (i32.const 1)))
      (br_if $more (i32.lt_u (local.get $n) (i32.const 5000))))
    (i64.const {ANSWER_EMPTY})))"""


def echo_manifest(name, version="1.0.0"):
    return {"name": name, "version": version, "entry_points": ["process", "fail"], "max_memory_mb": 16,
            "max_execution_ms": 1000, "max_fuel": 1000000}


def echo_wasm():
    return open(os.path.join(REPO, "fixtures/wasm/echo.wasm"), "rb").read()


def binary():
    if os.environ.get("FORGE_OVERLAY_BIN"):
        return os.environ["FORGE_OVERLAY_BIN"]
    subprocess.run(["cargo", "build", "--bin", "forge-overlay"], cwd=REPO, check=True, stdout=sys.stderr)
    meta = json.loads(subprocess.run(["cargo", "metadata", "--format-version", "1", "--no-deps"],
                                     cwd=REPO, check=True, capture_output=True).stdout)
    return os.path.join(meta["target_directory"], "debug", "forge-overlay")


def start_server(work, name, extra_args=(), extra_env=None, bin_path=None):
    """Starts `serve` on a free port with its data under work/name; returns (Popen, (host, port))."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORGE_")}
    env.update(FORGE_ADMIN_TOKEN=TOKEN, FORGE_LOG="warn")
    env.update(extra_env or {})
    os.makedirs(os.path.join(work, name), exist_ok=True)
    out_path = os.path.join(work, name, "stdout")
    stdout = open(out_path, "w+")
    stderr = open(os.path.join(work, name, "stderr"), "a")
    server = subprocess.Popen([bin_path or binary(), "serve", "--bind", "127.0.0.1:0", "--data-dir",
                               os.path.join(work, name, "data"), *extra_args],
                              env=env, stdout=stdout, stderr=stderr)
    for _ in range(600):
        stdout.seek(0)
        line = stdout.readline()
        if line.startswith("listening on "):
            host, port = line.split("http://")[1].strip().split(":")
            return server, (host, int(port))
        if server.poll() is not None:
            break
        time.sleep(0.1)
    server.kill()
    server.wait()
    raise RuntimeError(f"server {name} did not start: " + open(os.path.join(work, name, "stderr")).read()[-2000:])


class Client:
    """One keep-alive connection; reconnects when the server closed it. Never retries a request
    that may have reached the server (a retried invocation could be counted twice)."""

    def __init__(self, address, timeout=30):
        self.address = address
        self.timeout = timeout
        self.connection = None

    def send(self, method, path, body=None):
        headers = {"Authorization": "Bearer " + TOKEN}
        if body is not None:
            headers["Content-Type"] = "application/json"
            if not isinstance(body, (bytes, str)):
                body = json.dumps(body)
        if self.connection is None:
            self.connection = http.client.HTTPConnection(*self.address, timeout=self.timeout)
        try:
            self.connection.request(method, path, body=body, headers=headers)
            response = self.connection.getresponse()
            data = response.read()
            if response.getheader("Connection", "").lower() == "close":
                self.close()
            return response.status, data
        except ConnectionRefusedError as error:  # never reached a server
            self.close()
            return "connection_refused", repr(error).encode()
        except (ConnectionError, http.client.HTTPException, OSError) as error:
            self.close()
            return "connection_error", repr(error).encode()

    def close(self):
        if self.connection is not None:
            self.connection.close()
            self.connection = None

    def ok(self, method, path, body=None, expect=(200, 201)):
        status, data = self.send(method, path, body)
        if status == "connection_error" and method == "GET":  # an idle keep-alive the server closed
            status, data = self.send(method, path, body)
        if status not in expect:
            raise RuntimeError(f"{method} {path}: {status} {data[:500]!r}")
        return json.loads(data)["data"] if data else None


def register(client, manifest, module_bytes, activate=True, trust=None):
    overlay = client.ok("POST", "/api/v1/overlays",
                        {"manifest": manifest, "wasm_base64": base64.b64encode(module_bytes).decode()})
    if activate:
        client.ok("POST", f"/api/v1/overlays/{overlay['id']}/activate")
    if trust:
        client.ok("PUT", f"/api/v1/overlays/{overlay['id']}/trust-level",
                  {"trust_level": trust, "reason": "soak: failing calls must not quarantine it"})
    return overlay["id"]


def proc_sample(pid):
    """(VmRSS in KiB, open file descriptors) of a process."""
    rss = 0
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def percentile(values, q):
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def slope_per_minute(points):
    """Least-squares slope of (seconds, value) points, per minute."""
    n = len(points)
    if n < 2:
        return 0.0
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if sxx == 0:
        return 0.0
    return 60 * sum((x - mx) * (y - my) for x, y in points) / sxx


def command_line():
    return " ".join([os.path.relpath(sys.argv[0], REPO) if sys.argv[0].startswith(REPO) else sys.argv[0],
                     *sys.argv[1:]])
