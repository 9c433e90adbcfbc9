#!/usr/bin/env python3
"""A bounded soak of one `forge-overlay serve`: mixed traffic at a fixed rate, with leak and count checks.

    scripts/soak.py SECONDS [--out DIR] [--rate-scale X]

Starts the server on a throw-away data directory (SQLite + local files, limits at their defaults),
registers an echo overlay (its `process` succeeds, its `fail` fails), a spinner (every call times
out at 100 ms), a guest that grows its memory by 32 MiB and touches every page, a guest that logs
5000 lines per call, and a second echo that is suspended and resumed every 2 s; the failing ones at
`core` trust so that they are never quarantined. Then, for SECONDS, paced client threads (open loop:
each keeps its own schedule, not flat out) send about 200 invocations per second:

    echo process 100/s, echo fail 30/s, memory 20/s, log flood 20/s, lifecycle echo 20/s, spin 5/s

while one thread suspends / resumes the lifecycle echo every 2 s and another registers a new overlay
every 3 s, activates it, invokes it three times, checks that its health counts those three, and
deletes it. `--rate-scale` multiplies every rate.

Every second the server's VmRSS and open file descriptors (/proc/PID) are sampled with the p50 / p99
latency of the calls completed in that second (the spinner's calls, which take their 100 ms deadline
by design, in a column of their own). At the end:

- every invocation answered with 200 is counted: the clients' 200s per overlay must equal
  `invocation_count` of GET /api/v1/overlays/{id}/health (refusals, 422 while suspended and 429, are
  not invocations; a request the client got no answer for may or may not have run, so it widens the
  check to a range);
- RSS and FD slopes (least squares, per minute) over the second half of the run (the first half is
  warm-up) must stay under RSS_SLOPE_BOUND_MIB_PER_MIN (8 MiB/min) and FD_SLOPE_BOUND_PER_MIN
  (2/min), unless the rise they make over that half is within the noise, RSS_NOISE_MIB (32 MiB, one
  memory-hungry call) and FD_NOISE (17, the clients' connections): a 60 s run catches gross leaks
  only, a run of 4 minutes or more is held to the slopes;
- no answer is a 5xx, and the server still serves.

Writes DIR/soak-summary.json and DIR/soak-samples.csv (DIR defaults to a new temporary directory);
`scripts/soak-plot.py DIR/soak-samples.csv OUT.svg` plots them. Exits non-zero on a failed check.
FORGE_OVERLAY_BIN runs that binary instead of building this checkout's debug binary.
"""

import argparse
import collections
import csv
import datetime
import json
import os
import shutil
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import soaklib  # noqa: E402

# Bounds on growth after warm-up (documented in docs/benchmarks.md). A leak of one file descriptor
# per registration (20 a minute here) or of one kept log / compiled module per few calls would pass
# them by far; allocator noise over a few minutes stays well inside.
RSS_SLOPE_BOUND_MIB_PER_MIN = 8.0
FD_SLOPE_BOUND_PER_MIN = 2.0
# Below these rises over the second half a slope is noise, whatever it is per minute: RSS moves by one
# memory-hungry call (32 MiB) from second to second (slopes of 30 s windows of a healthy 10-minute
# run range from -9 to +19 MiB/min), FDs by the clients' keep-alive connections (17). So a short run
# (60 s: 30 s judged) catches only gross leaks; from about 4 minutes on the slope bounds decide.
RSS_NOISE_MIB = 32.0
FD_NOISE = 17.0

SUSPEND_EVERY_S = 2.0
REGISTER_EVERY_S = 3.0


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("seconds", type=int)
    parser.add_argument("--out")
    parser.add_argument("--rate-scale", type=float, default=1.0)
    args = parser.parse_args()
    out = args.out or tempfile.mkdtemp(prefix="forge-soak-out-")
    os.makedirs(out, exist_ok=True)
    started_at = datetime.datetime.now(datetime.timezone.utc)
    print(f"$ {soaklib.command_line()}   # {started_at:%Y-%m-%d %H:%M:%S} UTC", flush=True)
    bin_path = soaklib.binary()
    print(f"binary: {bin_path}", flush=True)
    work = tempfile.mkdtemp(prefix="forge-soak-")
    server = None
    try:
        server, address = soaklib.start_server(work, "server", bin_path=bin_path)
        failed = run(args, out, server, address, started_at, bin_path)
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(10)
            except Exception:
                server.kill()
                server.wait()
        shutil.rmtree(work, ignore_errors=True)
    sys.exit(1 if failed else 0)


def run(args, out, server, address, started_at, bin_path):
    setup = soaklib.Client(address)
    echo = soaklib.register(setup, soaklib.echo_manifest("soak-echo"), soaklib.echo_wasm(), trust="core")
    lifecycle = soaklib.register(setup, soaklib.echo_manifest("soak-lifecycle"), soaklib.echo_wasm())
    spin = soaklib.register(setup, {"name": "soak-spin", "version": "1.0.0", "entry_points": ["spin"],
                                    "max_execution_ms": 100, "max_fuel": 10**15},
                            soaklib.SPIN_WAT.encode(), trust="core")
    memory = soaklib.register(setup, {"name": "soak-memory", "version": "1.0.0", "entry_points": ["grow"],
                                      "max_memory_mb": 48, "max_execution_ms": 2000},
                              soaklib.MEMORY_WAT.encode(), trust="core")
    log_flood = soaklib.register(setup, {"name": "soak-log-flood", "version": "1.0.0",
                                         "entry_points": ["flood"], "max_execution_ms": 2000,
                                         "max_fuel": 10**12},
                                 soaklib.LOG_FLOOD_WAT.encode(), trust="core")
    names = {echo: "soak-echo", lifecycle: "soak-lifecycle", spin: "soak-spin", memory: "soak-memory",
             log_flood: "soak-log-flood"}
    # (kind, overlay, body, calls per second, threads)
    kinds = [
        ("echo_process", echo, {"function": "process", "args": {"text": "soak"}}, 100, 4),
        ("echo_fail", echo, {"function": "fail", "args": {"message": "soak failure"}}, 30, 2),
        ("memory", memory, {"function": "grow", "args": {}}, 20, 2),
        ("log_flood", log_flood, {"function": "flood", "args": {}}, 20, 2),
        ("lifecycle", lifecycle, {"function": "process", "args": {}}, 20, 1),
        ("spin_timeout", spin, {"function": "spin", "args": {}}, 5, 2),
    ]
    # One warm call each, so that compilation is not in the first interval's latencies.
    for _, overlay, body, _, _ in kinds:
        setup.send("POST", f"/api/v1/overlays/{overlay}/invoke", body)
    warm_counts = {overlay: setup.ok("GET", f"/api/v1/overlays/{overlay}/health")["invocation_count"]
                   for overlay in names}

    lock = threading.Lock()
    answers = collections.Counter()        # (kind, status, success) -> n
    ok_per_overlay = collections.Counter()  # overlay -> 200s
    unanswered = collections.Counter()      # overlay -> connection errors / client timeouts
    latencies = collections.defaultdict(list)  # second -> [ms], every call but the spinner's
    spin_latencies = collections.defaultdict(list)
    problems = []
    t0 = time.monotonic()
    stop = t0 + args.seconds
    behind = collections.Counter()

    def paced(kind, overlay, body, rate, offset):
        client = soaklib.Client(address)
        interval = 1.0 / rate
        next_at = t0 + offset
        path = f"/api/v1/overlays/{overlay}/invoke"
        payload = json.dumps(body)
        while True:
            now = time.monotonic()
            if next_at >= stop:
                break
            if next_at > now:
                time.sleep(next_at - now)
            elif now - next_at > 1.0:  # more than a second late: drop the backlog, note it
                with lock:
                    behind[kind] += int((now - next_at) / interval)
                next_at = now
            sent = time.monotonic()
            status, data = client.send("POST", path, payload)
            done = time.monotonic()
            success = None
            if status == 200:
                success = json.loads(data)["data"]["success"]
            with lock:
                answers[(kind, status, success)] += 1
                if status == 200:
                    ok_per_overlay[overlay] += 1
                elif status == "connection_error":
                    unanswered[overlay] += 1
                # The spinner's calls take their 100 ms deadline by design: kept apart.
                (spin_latencies if kind == "spin_timeout" else latencies)[int(done - t0)].append(
                    (done - sent) * 1000)
            next_at += interval

    def toggler():
        client = soaklib.Client(address)
        suspended = False
        while time.monotonic() < stop - SUSPEND_EVERY_S:
            time.sleep(SUSPEND_EVERY_S)
            action = "resume" if suspended else "suspend"
            status, data = client.send("POST", f"/api/v1/overlays/{lifecycle}/{action}",
                                       {"reason": "soak"} if action == "suspend" else None)
            with lock:
                answers[(action, status, None)] += 1
                if status != 200:
                    problems.append(f"{action}: {status} {data[:200]!r}")
            suspended = not suspended
        if suspended:
            client.send("POST", f"/api/v1/overlays/{lifecycle}/resume")

    def registrar():
        client = soaklib.Client(address)
        n = 0
        next_at = t0 + 1
        while next_at < stop - REGISTER_EVERY_S:
            time.sleep(max(0, next_at - time.monotonic()))
            next_at += REGISTER_EVERY_S
            n += 1
            try:
                overlay = soaklib.register(client, soaklib.echo_manifest("soak-registered", f"1.0.{n}"),
                                           soaklib.echo_wasm())
                oks = 0
                for _ in range(3):
                    status, _ = client.send("POST", f"/api/v1/overlays/{overlay}/invoke",
                                            {"function": "process", "args": {"n": n}})
                    oks += status == 200
                count = client.ok("GET", f"/api/v1/overlays/{overlay}/health")["invocation_count"]
                client.ok("DELETE", f"/api/v1/overlays/{overlay}?reason=soak", expect=(204,))
                with lock:
                    answers[("registration_cycle", "ok", None)] += 1
                    answers[("registered_invoke", 200, None)] += oks
                    if count != oks:
                        problems.append(f"registered overlay 1.0.{n}: 200s {oks}, invocation_count {count}")
            except RuntimeError as error:
                with lock:
                    answers[("registration_cycle", "error", None)] += 1
                    problems.append(f"registration cycle {n}: {error}")

    samples = []

    def sampler():
        while True:
            second = int(time.monotonic() - t0)
            target = t0 + second + 1
            if target > stop + 0.5:
                break
            time.sleep(max(0, target - time.monotonic()))
            try:
                rss, fds = soaklib.proc_sample(server.pid)
            except FileNotFoundError:
                problems.append("the server exited")
                break
            samples.append((second + 1, rss, fds))

    threads = []
    for kind, overlay, body, rate, count in kinds:
        rate *= args.rate_scale
        for i in range(count):
            threads.append(threading.Thread(target=paced, args=(kind, overlay, body, rate / count,
                                                                  i / rate)))
    threads += [threading.Thread(target=toggler), threading.Thread(target=registrar),
                threading.Thread(target=sampler)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - t0

    # Counts: the health read flushes the server's pending batch first.
    setup.close()  # idle since the start; the server may have closed it
    counts = {}
    for overlay, name in names.items():
        health = setup.ok("GET", f"/api/v1/overlays/{overlay}/health")
        got = health["invocation_count"] - warm_counts[overlay]
        low, high = ok_per_overlay[overlay], ok_per_overlay[overlay] + unanswered[overlay]
        agree = low <= got <= high
        counts[name] = {"client_200": low, "client_unanswered": unanswered[overlay], "server_counted": got,
                        "agree": agree}
        if not agree:
            problems.append(f"{name}: clients got {low} answers (+{unanswered[overlay]} unanswered), "
                            f"the server counted {got}")
    status, _ = setup.send("GET", "/health")
    if status != 200 or server.poll() is not None:
        problems.append("the server stopped serving")
    server_errors = {f"{k} {s}": n for (k, s, _), n in answers.items()
                     if s == "connection_error" or (isinstance(s, int) and s >= 500)}
    if server_errors:
        problems.append(f"5xx or connection errors: {server_errors}")

    # Per-second rows.
    rows = []
    for second, rss, fds in samples:
        lat = latencies.get(second - 1, [])
        spins = spin_latencies.get(second - 1, [])
        rows.append({"t_s": second, "rss_mib": round(rss / 1024, 2), "fds": fds,
                     "requests": len(lat) + len(spins),
                     "p50_ms": round(soaklib.percentile(lat, 0.50), 2) if lat else "",
                     "p99_ms": round(soaklib.percentile(lat, 0.99), 2) if lat else "",
                     "spin_p99_ms": round(soaklib.percentile(spins, 0.99), 2) if spins else ""})
    with open(os.path.join(out, "soak-samples.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["t_s", "rss_mib", "fds", "requests", "p50_ms", "p99_ms",
                                               "spin_p99_ms"])
        writer.writeheader()
        writer.writerows(rows)
    half = [r for r in rows if r["t_s"] > args.seconds / 2]
    rss_slope = soaklib.slope_per_minute([(r["t_s"], r["rss_mib"]) for r in half])
    fd_slope = soaklib.slope_per_minute([(r["t_s"], r["fds"]) for r in half])
    # Reported, not checked: the slope of the RSS floor (the minimum of each 30 s), which a leak
    # raises but memory the allocator keeps after a peak of concurrent memory-hungry calls does not.
    floors = [(chunk[-1]["t_s"], min(r["rss_mib"] for r in chunk))
              for chunk in (half[i:i + 30] for i in range(0, len(half), 30)) if len(chunk) == 30]
    floor_slope = soaklib.slope_per_minute(floors)
    judged_min = (half[-1]["t_s"] - half[0]["t_s"]) / 60 if len(half) > 1 else 0
    rss_allowed = max(RSS_SLOPE_BOUND_MIB_PER_MIN * judged_min, RSS_NOISE_MIB)
    fd_allowed = max(FD_SLOPE_BOUND_PER_MIN * judged_min, FD_NOISE)
    if rss_slope * judged_min > rss_allowed:
        problems.append(f"RSS slope {rss_slope:.2f} MiB/min: a rise of {rss_slope * judged_min:.1f} MiB over "
                        f"the second half, more than {rss_allowed:.1f}")
    if fd_slope * judged_min > fd_allowed:
        problems.append(f"FD slope {fd_slope:.2f}/min: a rise of {fd_slope * judged_min:.1f} over the second "
                        f"half, more than {fd_allowed:.1f}")
    p99s = [r["p99_ms"] for r in rows if r["p99_ms"] != ""]
    spin_p99s = [r["spin_p99_ms"] for r in rows if r["spin_p99_ms"] != ""]
    invocations = sum(n for (k, s, _), n in answers.items() if k in dict((x[0], 1) for x in kinds))
    summary = {
        "command": soaklib.command_line(),
        "binary": bin_path,
        "started_at": started_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "seconds": args.seconds,
        "elapsed_s": round(elapsed, 1),
        "target_rate_per_s": sum(k[3] for k in kinds) * args.rate_scale,
        "invocations_sent": invocations,
        "achieved_rate_per_s": round(invocations / elapsed, 1),
        "dropped_behind_schedule": dict(behind),
        "answers": {f"{k} {s}" + ("" if ok is None else f" success={ok}"): n
                    for (k, s, ok), n in sorted(answers.items(), key=str)},
        "counts": counts,
        "rss_mib": {"first": rows[0]["rss_mib"] if rows else None, "last": rows[-1]["rss_mib"] if rows else None,
                    "max": max((r["rss_mib"] for r in rows), default=None),
                    "slope_second_half_per_min": round(rss_slope, 3),
                    "bound_per_min": RSS_SLOPE_BOUND_MIB_PER_MIN,
                    "rise_over_second_half": round(rss_slope * judged_min, 2),
                    "rise_allowed": round(rss_allowed, 2),
                    "floor_per_30_s_slope_second_half_per_min": round(floor_slope, 3) if len(floors) > 1 else None},
        "fds": {"first": rows[0]["fds"] if rows else None, "last": rows[-1]["fds"] if rows else None,
                "max": max((r["fds"] for r in rows), default=None),
                "slope_second_half_per_min": round(fd_slope, 3), "bound_per_min": FD_SLOPE_BOUND_PER_MIN,
                "rise_over_second_half": round(fd_slope * judged_min, 2), "rise_allowed": round(fd_allowed, 2)},
        "p99_ms_per_second_excluding_spinner": {
            "min": min(p99s, default=None), "median": soaklib.percentile(p99s, 0.5),
            "max": max(p99s, default=None)},
        "spinner_p99_ms_per_second (deadline 100 ms)": {
            "min": min(spin_p99s, default=None), "max": max(spin_p99s, default=None)},
        "problems": problems,
        "passed": not problems,
    }
    with open(os.path.join(out, "soak-summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(json.dumps(summary, indent=2))
    print(f"samples: {os.path.join(out, 'soak-samples.csv')}  summary: {os.path.join(out, 'soak-summary.json')}")
    print("PASSED" if not problems else "FAILED: " + "; ".join(problems))
    return bool(problems)


if __name__ == "__main__":
    main()
