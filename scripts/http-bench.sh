#!/usr/bin/env bash
# HTTP load on loopback: starts `forge-overlay serve` on a throw-away data directory, registers and
# activates the echo example, drives `POST /api/v1/overlays/{id}/invoke` with wrk (keep-alive),
# then checks that the overlay's health counts every request wrk completed.
#
#   scripts/http-bench.sh [SECONDS] [CONNECTIONS] [WRK_THREADS]
#
# FORGE_BENCH_OVERLAY=log-line runs fixtures/wasm/log-line instead of echo: its `process` logs one
# line per call, kept in the overlay's log (the summary's log_entries_kept), and
# FORGE_BENCH_FUNCTION=quiet calls its twin that does the same without the line.
#
# The server runs on the embedded default unless FORGE_DATABASE_URL (e.g. a PostgreSQL URL) is set.
# FORGE_OVERLAY_BIN runs that binary instead of building this checkout's release binary (to compare
# two builds in one session).
# Needs wrk (Debian package `wrk`). Prints wrk's report and one JSON summary line.
set -euo pipefail
seconds="${1:-10}" connections="${2:-32}" threads="${3:-1}"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
bin="${FORGE_OVERLAY_BIN:-}"
if [[ -z "$bin" ]]; then
    cargo build --release --bin forge-overlay >&2
    bin="$(cargo metadata --format-version 1 --no-deps |
        sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/release/forge-overlay"
fi
work="$(mktemp -d)"
token="fgo_http-bench-$(date +%s)-token"
FORGE_ADMIN_TOKEN="$token" FORGE_LOG=warn "$bin" serve --bind 127.0.0.1:0 --data-dir "$work/data" \
    >"$work/stdout" 2>"$work/stderr" &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do grep -q '^listening on ' "$work/stdout" && break; sleep 0.1; done
url="$(sed -n 's/^listening on //p' "$work/stdout")"
[[ -n "$url" ]] || { cat "$work/stderr" >&2; exit 1; }
auth="Authorization: Bearer $token"
overlay="${FORGE_BENCH_OVERLAY:-echo}"
module="fixtures/wasm/$overlay.wasm"
[[ -f "$module" ]] || module="fixtures/wasm/$overlay.wat"
id="$(curl -sf -H "$auth" -F manifest=@"fixtures/wasm/$overlay.toml" -F wasm=@"$module" \
    "$url/api/v1/overlays" | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["id"])')"
curl -sf -H "$auth" -X POST "$url/api/v1/overlays/$id/activate" >/dev/null
cat >"$work/invoke.lua" <<LUA
wrk.method = "POST"
wrk.body = '{"function": "${FORGE_BENCH_FUNCTION:-process}", "args": {"hello": "world"}}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $token"
done = function(summary, latency, requests)
  io.write(string.format("WRK_SUMMARY %d %d %d %d %.1f %.1f %.1f\n", summary.requests,
    summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write,
    summary.errors.timeout, latency:percentile(50), latency:percentile(99), latency.mean))
end
LUA
wrk -t"$threads" -c"$connections" -d"${seconds}s" --latency -s "$work/invoke.lua" \
    "$url/api/v1/overlays/$id/invoke" | tee "$work/wrk.txt" >&2
read -r _ requests status_errors socket_errors timeouts p50 p99 mean < <(grep '^WRK_SUMMARY' "$work/wrk.txt")
counted="$(curl -sf -H "$auth" "$url/api/v1/overlays/$id/health" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["invocation_count"])')"
rps="$(sed -n 's/^Requests\/sec: *//p' "$work/wrk.txt")"
backend=sqlite
[[ -n "${FORGE_DATABASE_URL:-}" ]] && backend=postgres
# Requests still in flight when wrk stops are served and counted but not reported by wrk.
(( counted >= requests && counted <= requests + connections )) ||
    { echo "counted $counted invocations for $requests requests" >&2; exit 1; }
# Entries in the overlay's kept log ("null" from a build without logs, to compare with).
logged="$(curl -s -H "$auth" "$url/api/v1/overlays/$id/logs?limit=1" |
    python3 -c 'import json,sys; print(json.load(sys.stdin).get("meta", {}).get("total", "null"))')"
printf '{"overlay": "%s", "function": "%s", "backend": "%s", "seconds": %s, "connections": %s, "requests": %s, "requests_per_sec": %s, "p50_us": %s, "p99_us": %s, "mean_us": %s, "status_errors": %s, "socket_errors": %s, "timeouts": %s, "invocations_counted": %s, "log_entries_kept": %s}\n' \
    "$overlay" "${FORGE_BENCH_FUNCTION:-process}" "$backend" "$seconds" "$connections" "$requests" "$rps" \
    "$p50" "$p99" "$mean" "$status_errors" "$socket_errors" "$timeouts" "$counted" "$logged"
