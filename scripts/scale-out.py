#!/usr/bin/env python3
"""Three `forge-overlay serve` processes on one PostgreSQL database and one S3 bucket, under faults.

    scripts/scale-out.py [--rate N] [--seconds S] [--kills K]

Creates a database on PostgreSQL (PG_URL_BASE, default postgres://postgres@127.0.0.1:5432) and a
bucket on an S3-compatible server (AWS_ENDPOINT_URL, default http://127.0.0.1:9000, which must accept
an unsigned `PUT /bucket`, as moto does), starts nodes a, b and c on them with one admin token, and:

1. Counts under kills. Each node's clients invoke the node's own echo overlay (echo-a only through
   a, ...) and a shared one through every node, at N calls per second per node and overlay (default
   100) for S seconds (default 16); K times (--kills, default 3), evenly spread, node c is SIGKILLed
   and restarted (same data dir, fresh port) a second later; its clients follow it. Then: the counts of echo-a and echo-b (nodes never killed) must equal their
   clients' 200s exactly; echo-c may have lost only what c answered in its last health batch before
   the kills: the loss must be no more than c's answers received in the LOSS_WINDOW_MS before each
   kill (the 5 ms batch window plus the write of a batch in flight, generously); the actual loss is
   reported, with the smallest window that holds it. The shared overlay's count must lie within the
   same bounds.
2. Quarantine propagation, by hand: while b and c invoke an overlay every 10 ms each, a quarantines it
   (POST /api/v1/overlays/{id}/quarantine with a reason). The time from a's answer to the first 422
   "not active" on b and on c, and to the last call sent after a's answer that still ran, must be
   within record_refresh (1 s) plus 200 ms of slack. Busy nodes learn sooner (each health batch
   brings back the overlay's state), so it is measured twice: with probes that run, and with idle
   probes (an entry point the overlay lacks, refused before anything runs and counted nowhere), for
   which only the cache's record_refresh can bring the news.
3. Quarantine propagation, automatic: a invokes an overlay's failing entry point until it is
   quarantined by the failure rule (first 422 on a), while b and c invoke it every 10 ms; the same
   measure from a's first refusal.

Prints the command, date and figures as JSON; exits non-zero on a failed check. Always kills its
servers and drops its database, bucket and temporary directories. FORGE_OVERLAY_BIN runs that binary
instead of building this checkout's debug binary.
"""

import argparse
import datetime
import hashlib
import hmac
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import soaklib  # noqa: E402

RECORD_REFRESH_S = 1.0
PROPAGATION_SLACK_S = 0.2
LOSS_WINDOW_MS = 50
PROBE_EVERY_S = 0.010


def s3_request(endpoint, method, path):
    """An S3 request with an empty body, signed (AWS Signature Version 4) with the AWS_* variables:
    test servers take an unsigned bucket creation, but not the deletion of signed uploads."""
    url = urllib.parse.urlparse(endpoint)
    host = url.netloc
    key_id = os.environ.get("AWS_ACCESS_KEY_ID", "test")
    secret = os.environ.get("AWS_SECRET_ACCESS_KEY", "test")
    region = os.environ.get("AWS_REGION", "us-east-1")
    now = datetime.datetime.now(datetime.timezone.utc)
    amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    payload_hash = hashlib.sha256(b"").hexdigest()
    raw_path, _, raw_query = path.partition("?")
    query = "&".join(sorted(f"{urllib.parse.quote(k, safe='-_.~')}={urllib.parse.quote(v, safe='-_.~')}"
                            for k, v in urllib.parse.parse_qsl(raw_query, keep_blank_values=True)))
    headers = {"host": host, "x-amz-content-sha256": payload_hash, "x-amz-date": amz_date}
    signed = ";".join(sorted(headers))
    canonical = "\n".join([method, raw_path, query, *(f"{k}:{headers[k]}" for k in sorted(headers)), "",
                           signed, payload_hash])
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + secret).encode()
    for part in (day, region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["Authorization"] = (f"AWS4-HMAC-SHA256 Credential={key_id}/{scope}, SignedHeaders={signed}, "
                                f"Signature={signature}")
    headers["Content-Length"] = "0"
    connection = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=30)
    connection.request(method, path, headers=headers)
    response = connection.getresponse()
    body = response.read()
    connection.close()
    return response.status, body


def drop_bucket(endpoint, bucket):
    for _ in range(20):
        status, body = s3_request(endpoint, "GET", f"/{bucket}?list-type=2")
        keys = re.findall(rb"<Key>([^<]*)</Key>", body)
        for key in keys:
            s3_request(endpoint, "DELETE", f"/{bucket}/" + urllib.parse.quote(key.decode()))
        if not keys:
            break
    return s3_request(endpoint, "DELETE", f"/{bucket}")[0]


def warnings(work, name):
    """The distinct WARN / ERROR messages a node logged (ANSI colours stripped), with their counts."""
    found = {}
    try:
        text = open(os.path.join(work, name, "stderr"), errors="replace").read()
    except OSError:
        return found
    for line in re.sub(r"\x1b\[[0-9;]*m", "", text).splitlines():
        if " WARN " in line or " ERROR " in line:
            message = re.sub(r"^\S+\s+", "", line)[:200]
            found[message] = found.get(message, 0) + 1
    return found


class Node:
    def __init__(self, name, work, args, env, bin_path):
        self.name, self.work, self.args, self.env, self.bin_path = name, work, args, env, bin_path
        self.start()

    def start(self):
        self.process, self.address = soaklib.start_server(self.work, self.name, self.args, self.env,
                                                          self.bin_path)

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=100)
    parser.add_argument("--seconds", type=float, default=16)
    parser.add_argument("--kills", type=int, default=3)
    args = parser.parse_args()
    started_at = datetime.datetime.now(datetime.timezone.utc)
    print(f"$ {soaklib.command_line()}   # {started_at:%Y-%m-%d %H:%M:%S} UTC", flush=True)
    bin_path = soaklib.binary()
    endpoint = os.environ.get("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    pg_base = os.environ.get("PG_URL_BASE", "postgres://postgres@127.0.0.1:5432")
    database = f"forge_scale_{os.getpid()}"
    bucket = f"forge-scale-{os.getpid()}"
    work = tempfile.mkdtemp(prefix="forge-scale-")
    pg = urllib.parse.urlparse(pg_base)
    pg_args = ["-h", pg.hostname, "-p", str(pg.port or 5432), "-U", pg.username or "postgres"]
    nodes = []
    created_db = created_bucket = False
    problems = []
    try:
        subprocess.run(["createdb", *pg_args, database], check=True)
        created_db = True
        status, body = s3_request(endpoint, "PUT", f"/{bucket}")
        if status != 200:
            sys.exit(f"creating bucket {bucket}: {status} {body[:300]!r}")
        created_bucket = True
        env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "test"),
               "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "test"),
               "AWS_REGION": os.environ.get("AWS_REGION", "us-east-1"), "AWS_ALLOW_HTTP": "true"}
        server_args = ["--database-url", f"{pg_base}/{database}", "--object-store", f"s3://{bucket}"]
        print(f"database {pg_base}/{database}, bucket s3://{bucket} at {endpoint}, binary {bin_path}", flush=True)
        for name in "abc":  # one after the other: the first one migrates the database
            nodes.append(Node(name, work, server_args, env, bin_path))
        results = {"command": soaklib.command_line(), "binary": bin_path,
                   "started_at": started_at.strftime("%Y-%m-%dT%H:%M:%SZ")}
        results["kill"] = kill_phase(nodes, args, problems)
        results["manual_quarantine"] = propagation_phase(nodes, "manual", problems)
        results["manual_quarantine_idle_probes"] = propagation_phase(nodes, "manual", problems, idle=True)
        results["automatic_quarantine"] = propagation_phase(nodes, "automatic", problems)
        results["server_warnings"] = {node.name: warnings(work, node.name) for node in nodes}
        results["problems"] = problems
        results["passed"] = not problems
        print(json.dumps(results, indent=2))
        print("PASSED" if not problems else "FAILED: " + "; ".join(problems))
    finally:
        for node in nodes:
            node.stop()
        if created_db:
            subprocess.run(["dropdb", *pg_args, "--if-exists", database], check=False)
        if created_bucket:
            drop_bucket(endpoint, bucket)
        shutil.rmtree(work, ignore_errors=True)
    sys.exit(1 if problems else 0)


def kill_phase(nodes, args, problems):
    a, b, c = nodes
    setup = soaklib.Client(a.address)
    own = {node.name: soaklib.register(setup, soaklib.echo_manifest(f"echo-{node.name}"), soaklib.echo_wasm())
           for node in nodes}
    shared = soaklib.register(setup, soaklib.echo_manifest("echo-shared"), soaklib.echo_wasm())
    lock = threading.Lock()
    oks = {(n.name, o): [] for n in nodes for o in ("own", "shared")}  # answer times of 200s
    unanswered = {(n.name, o): 0 for n in nodes for o in ("own", "shared")}
    other = {}
    t0 = time.monotonic()
    stop = t0 + args.seconds
    kills = []  # one dict per kill of c
    refused = {n.name: 0 for n in nodes}

    def client(node, which, offset):
        overlay = own[node.name] if which == "own" else shared
        body = json.dumps({"function": "process", "args": {"node": node.name}})
        interval = 2.0 / args.rate  # two threads per (node, overlay): each half the rate
        next_at = t0 + offset
        connection = soaklib.Client(node.address, timeout=10)
        address = node.address
        while next_at < stop:
            time.sleep(max(0, next_at - time.monotonic()))
            next_at = max(next_at + interval, time.monotonic() - 0.5)
            if node.address != address:  # restarted on a fresh port
                connection.close()
                connection = soaklib.Client(node.address, timeout=10)
                address = node.address
            status, _ = connection.send("POST", f"/api/v1/overlays/{overlay}/invoke", body)
            done = time.monotonic()
            with lock:
                if status == 200:
                    oks[(node.name, which)].append(done)
                elif status == "connection_error":
                    unanswered[(node.name, which)] += 1
                elif status == "connection_refused":  # c is down: never reached a server
                    refused[node.name] += 1
                else:
                    other[f"{node.name} {which} {status}"] = other.get(f"{node.name} {which} {status}", 0) + 1

    def killer():
        monitor = soaklib.Client(a.address)
        for k in range(args.kills):
            kill = {}
            time.sleep(max(0, t0 + args.seconds * (k + 1) / (args.kills + 1) - 0.5 - time.monotonic()))
            with lock:
                kill["at"] = time.monotonic()
                c.process.send_signal(signal.SIGKILL)
            c.process.wait()
            kill["died_after_ms"] = round((time.monotonic() - kill["at"]) * 1000, 2)
            time.sleep(1.0)
            # c is down: everything it answered has reached its clients, and its count in the
            # database is final for this life (read through a, which has no pending calls of echo-c).
            with lock:
                kill["answered"] = list(oks[("c", "own")])
                kill["unanswered"] = unanswered[("c", "own")]
            kill["counted"] = monitor.ok("GET", f"/api/v1/overlays/{own['c']}/health")["invocation_count"]
            restart = time.monotonic()
            c.start()
            kill["restart_s"] = round(time.monotonic() - restart, 2)
            kills.append(kill)

    threads = [threading.Thread(target=client, args=(n, w, i / args.rate))
               for n in nodes for w in ("own", "shared") for i in range(2)]
    threads.append(threading.Thread(target=killer))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    def counted(overlay, via):
        """The count read through each node of `via` in turn (a health read first writes the reading
        node's pending counts), the last one."""
        count = None
        for node in via:
            count = soaklib.Client(node.address).ok("GET", f"/api/v1/overlays/{overlay}/health")["invocation_count"]
        return count

    kill_times = [k["at"] for k in kills]
    previous_loss = previous_unanswered = 0
    per_kill = []
    for kill in kills:  # each kill's own loss: the growth of answered - counted over that life of c
        loss = len(kill["answered"]) - kill["counted"] - previous_loss
        newest = sorted((kill["at"] - t for t in kill["answered"] if t <= kill["at"]))
        window = sum(1 for age in newest if age < LOSS_WINDOW_MS / 1000)
        kill_out = {"at_s": round(kill["at"] - t0, 2), "process_gone_after_ms": kill["died_after_ms"],
                    "restart_took_s": kill["restart_s"], "lost": loss,
                    "unanswered_in_flight": kill["unanswered"] - previous_unanswered,
                    f"answered_in_last_{LOSS_WINDOW_MS}_ms": window,
                    # The loss fits in the answers of this last stretch before the kill.
                    "window_holding_the_loss_ms": round(newest[loss - 1] * 1000, 1) if 0 < loss <= len(newest) else 0}
        if loss > window:
            problems.append(f"kill at {kill_out['at_s']} s: c lost {loss}, more than its {window} answers "
                            f"of the last {LOSS_WINDOW_MS} ms")
        previous_loss += loss
        previous_unanswered = kill["unanswered"]
        per_kill.append(kill_out)
    out = {"rate_per_node_per_overlay": args.rate, "seconds": args.seconds,
           "kills_of_c": per_kill,
           "refused_while_c_was_down": refused["c"], "other_answers": other, "overlays": {}}
    for name in "abc":
        for which in ("own", "shared"):
            out["overlays"].setdefault(which, {})[name] = {"200": len(oks[(name, which)]),
                                                            "unanswered": unanswered[(name, which)]}
    # Nodes never killed: exact.
    for name in "ab":
        got = counted(own[name], [{"a": a, "b": b}[name]])
        expected = len(oks[(name, "own")])
        out["overlays"]["own"][name]["counted"] = got
        if got != expected:
            problems.append(f"echo-{name} (node never killed): clients got {expected} answers, counted {got}")

    def in_last_window(times):
        return sum(1 for t in times for k in kill_times if k - LOSS_WINDOW_MS / 1000 < t <= k)

    # The killed node: bounded loss, per kill at most what it answered in the window before it.
    got_c = counted(own["c"], [c])
    answered_c = len(oks[("c", "own")])
    loss = answered_c - got_c
    in_window = in_last_window(oks[("c", "own")])
    # The answers just before each kill, newest first, to find the smallest window holding the loss.
    gaps = sorted(k - t for t in oks[("c", "own")] for k in kill_times if 0 <= k - t < 1)
    out["overlays"]["own"]["c"]["counted"] = got_c
    out["killed_node"] = {"kills": len(kills), "answered": answered_c, "counted": got_c, "lost": loss,
                          "unanswered_in_flight_at_kills": unanswered[("c", "own")],
                          f"answered_in_last_{LOSS_WINDOW_MS}_ms_before_kills": in_window,
                          "answer_gaps_before_kills_ms": [round(g * 1000, 1) for g in gaps[:8]]}
    # A call c never answered may still have been counted (recorded and written before the kill).
    if not (-unanswered[("c", "own")] <= loss <= in_window):
        problems.append(f"echo-c (killed): lost {loss}, outside [-{unanswered[('c', 'own')]}, {in_window}] "
                        f"(the answers of its last {LOSS_WINDOW_MS} ms before the kills)")
    # The shared overlay: a and b exact, c's part within the same kind of bound.
    shared_expected = sum(len(oks[(n, "shared")]) for n in "abc")
    shared_got = counted(shared, [a, b, c])
    shared_in_window = in_last_window(oks[("c", "shared")])
    shared_loss = shared_expected - shared_got
    out["shared"] = {"answered": shared_expected, "counted": shared_got, "lost": shared_loss,
                     f"c_answered_in_last_{LOSS_WINDOW_MS}_ms_before_kills": shared_in_window}
    if not (-unanswered[("c", "shared")] <= shared_loss <= shared_in_window):
        problems.append(f"echo-shared: lost {shared_loss}, outside [-{unanswered[('c', 'shared')]}, "
                        f"{shared_in_window}]")
    return out


def propagation_phase(nodes, mode, problems, idle=False):
    """idle: b and c probe with an entry point the overlay lacks, refused before anything runs, so
    that no health batch brings the new state back and only the cache's record_refresh can."""
    a, b, c = nodes
    setup = soaklib.Client(a.address)
    label = f"quarantine-{mode}" + ("-idle" if idle else "")
    overlay = soaklib.register(setup, soaklib.echo_manifest(label), soaklib.echo_wasm())
    path = f"/api/v1/overlays/{overlay}/invoke"
    lock = threading.Lock()
    log = {"b": [], "c": []}  # (sent, done, status, not_active)
    stop = threading.Event()

    def probe(node):
        client = soaklib.Client(node.address)
        body = json.dumps({"function": "no-such-entry-point" if idle else "process", "args": {}})
        while not stop.is_set():
            sent = time.monotonic()
            status, data = client.send("POST", path, body)
            done = time.monotonic()
            with lock:
                log[node.name].append((sent, done, status, status == 422 and b"not active" in data))
            time.sleep(max(0, sent + PROBE_EVERY_S - time.monotonic()))

    # Every node has the overlay in its cache before the change.
    for node in nodes:
        soaklib.Client(node.address).ok("POST", path, {"function": "process", "args": {}})
    threads = [threading.Thread(target=probe, args=(n,)) for n in (b, c)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    failing_calls = 0
    if mode == "manual":
        sent = time.monotonic()
        setup.ok("POST", f"/api/v1/overlays/{overlay}/quarantine", {"reason": "scale-out: by hand on node a"})
        trigger = time.monotonic()
        trigger_desc = {"quarantine_request_ms": round((trigger - sent) * 1000, 2)}
    else:
        body = {"function": "fail", "args": {"message": "scale-out"}}
        deadline = time.monotonic() + 30
        while True:
            status, data = setup.send("POST", path, body)
            if status == 422 and b"not active" in data:
                trigger = time.monotonic()
                break
            failing_calls += 1
            if time.monotonic() > deadline:
                stop.set()
                problems.append(f"{mode}: not quarantined after {failing_calls} failing calls")
                return {}
        trigger_desc = {"failing_calls_on_a_before_its_first_refusal": failing_calls}
    time.sleep(RECORD_REFRESH_S + 1.0)
    stop.set()
    for thread in threads:
        thread.join()
    out = {"overlay": label, "probe": "unknown entry point (refused before running)" if idle
           else "process (runs, so each health batch brings the state back)", **trigger_desc}
    bound = RECORD_REFRESH_S + PROPAGATION_SLACK_S
    for name in "bc":
        first_refusal = next((done for sent, done, status, na in log[name] if na and done > trigger), None)
        # Seen as still active: ran (200), or for idle probes refused for the entry point, not the state.
        late_ok = [sent for sent, done, status, na in log[name]
                   if isinstance(status, int) and status < 500 and not na and sent > trigger]
        last_ok_sent = max(late_ok, default=None)
        expected = (404, 422) if idle else (200, 422)
        wrong = [status for _, _, status, na in log[name]
                 if status not in expected or (not idle and status == 422 and not na)]
        out[name] = {
            "probes": len(log[name]),
            "first_422_not_active_after_ms": round((first_refusal - trigger) * 1000, 1) if first_refusal else None,
            "calls_sent_after_trigger_seen_active": len(late_ok),
            "last_seen_active_for_call_sent_after_trigger_ms": round((last_ok_sent - trigger) * 1000, 1) if last_ok_sent else None,
            "unexpected_answers": len(wrong),
        }
        if first_refusal is None or first_refusal - trigger > bound:
            problems.append(f"{mode} quarantine: node {name} did not refuse within {bound} s")
        if last_ok_sent is not None and last_ok_sent - trigger > bound:
            problems.append(f"{mode} quarantine: node {name} still ran a call sent "
                            f"{last_ok_sent - trigger:.3f} s after the quarantine")
        if wrong:
            problems.append(f"{mode} quarantine: node {name} gave unexpected answers {sorted(set(map(str, wrong)))}")
    return out


if __name__ == "__main__":
    main()
