#!/usr/bin/env bash
# Tests the HTTP API against its own OpenAPI document with schemathesis: starts `forge-overlay
# serve` on a throw-away data directory, seeds it (a plain user, the echo overlay registered and
# activated, a capsule), then runs `st run` on `GET /api/v1/openapi.json` twice, as the admin and as
# the plain user (role `user`, trust `standard`), with the checks
#   not_a_server_error, status_code_conformance, content_type_conformance,
#   response_schema_conformance
# over every phase (examples, coverage, fuzzing, stateful). Prints a summary line per role and
# exits non-zero if either run found anything; the server is always stopped.
#
#   scripts/api-fuzz.sh [BUDGET]
#
# BUDGET is seconds per role (`--max-time`, default 45: the CI mode, under two minutes in all), or
# `Nx` for at most N examples per operation and phase (`--max-examples N`, no time limit). A longer
# recorded run: `scripts/api-fuzz.sh 600`.
#
# FORGE_OVERLAY_BIN runs that binary instead of this checkout's debug build; FORGE_FUZZ_SEED fixes
# schemathesis's seed; FORGE_FUZZ_REPORT_DIR keeps schemathesis's JUnit and NDJSON reports there.
# Installs schemathesis 4.32.5 (the version of the recorded runs) with pip when `st` is missing.
set -euo pipefail
budget="${1:-45}"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
if ! command -v st >/dev/null 2>&1; then
    python3 -m pip install --quiet 'schemathesis==4.32.5' >&2
fi
case "$budget" in
    *x) limit=(--max-examples "${budget%x}") ;;
    *[!0-9]* | '') echo "usage: $0 [SECONDS | EXAMPLESx]" >&2; exit 2 ;;
    *) limit=(--max-time "$budget") ;;
esac
bin="${FORGE_OVERLAY_BIN:-}"
if [[ -z "$bin" ]]; then
    cargo build --bin forge-overlay >&2
    bin="$(cargo metadata --format-version 1 --no-deps |
        sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/debug/forge-overlay"
fi
work="$(mktemp -d)"
token="fgo_api-fuzz-$(date +%s)-admin-token"
# Limits that would otherwise answer most of the run with 429 (documented, but not what is tested):
# fuzzers send many unknown tokens and registrations from one address.
FORGE_ADMIN_TOKEN="$token" FORGE_LOG=warn "$bin" serve --bind 127.0.0.1:0 --data-dir "$work/data" \
    --failed-auth-per-minute 1000000 --registrations-per-minute 1000000 \
    >"$work/stdout" 2>"$work/stderr" &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do grep -q '^listening on ' "$work/stdout" && break; sleep 0.1; done
url="$(sed -n 's/^listening on //p' "$work/stdout")"
[[ -n "$url" ]] || { cat "$work/stderr" >&2; exit 1; }
admin="Authorization: Bearer $token"
json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
user_token="$(curl -sf -H "$admin" -H 'Content-Type: application/json' \
    -d '{"name": "plain", "roles": ["user"]}' "$url/api/v1/users" | json '["data"]["token"]')"
id="$(curl -sf -H "$admin" -F manifest=@fixtures/wasm/echo.toml -F wasm=@fixtures/wasm/echo.wasm \
    "$url/api/v1/overlays" | json '["data"]["id"]')"
curl -sf -H "$admin" -X POST "$url/api/v1/overlays/$id/activate" >/dev/null
curl -sf -H "$admin" -H 'Content-Type: application/json' \
    -d '{"type": "knowledge", "content": "The echo overlay echoes its arguments."}' \
    "$url/api/v1/capsules" >/dev/null
curl -sf -H "Authorization: Bearer $user_token" -H 'Content-Type: application/json' \
    -d '{"function": "process", "args": {"hello": "world"}}' "$url/api/v1/overlays/$id/invoke" >/dev/null

checks=not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance
seed=()
[[ -n "${FORGE_FUZZ_SEED:-}" ]] && seed=(--seed "$FORGE_FUZZ_SEED")
status=0
summary=()
# The plain user first: the admin's run may disable or delete what the user's run would reach.
for role in user admin; do
    if [[ "$role" == admin ]]; then auth="$admin"; else auth="Authorization: Bearer $user_token"; fi
    reports=()
    if [[ -n "${FORGE_FUZZ_REPORT_DIR:-}" ]]; then
        mkdir -p "$FORGE_FUZZ_REPORT_DIR"
        reports=(--report junit,ndjson --report-dir "$FORGE_FUZZ_REPORT_DIR/$role")
    fi
    echo "== schemathesis as $role ($budget) ==" >&2
    set +e
    (cd "$work" && st run "$url/api/v1/openapi.json" -H "$auth" --checks "$checks" \
        --phases examples,coverage,fuzzing,stateful "${limit[@]}" "${seed[@]}" "${reports[@]}" \
        --no-color --output-sanitize true) 2>&1 | tee "$work/st-$role.txt" >&2
    code=${PIPESTATUS[0]}
    set -e
    [[ "$code" -eq 0 ]] || status=1
    cases="$(sed -n 's/^ *\([0-9]* generated.*\)$/\1/p' "$work/st-$role.txt" | tail -1)"
    ops="$(sed -n 's/^ *Tested: *\([0-9]*\).*/\1/p' "$work/st-$role.txt" | tail -1)"
    summary+=("$role: exit $code, operations tested ${ops:-?}, test cases ${cases:-?}")
done
if grep -qi 'panicked' "$work/stderr"; then
    echo "the server panicked:" >&2
    grep -i -A3 'panicked' "$work/stderr" >&2
    status=1
fi
echo "== api-fuzz summary ($(st --version), budget $budget per role) =="
printf '%s\n' "${summary[@]}"
[[ "$status" -eq 0 ]] && echo "no failures" || echo "FAILURES (see above)"
exit "$status"
