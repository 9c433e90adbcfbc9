#!/usr/bin/env bash
# The first run as a newcomer makes it: a fresh clone in a temporary directory, the README's first
# command exactly as written there, `GET http://127.0.0.1:8000/health` until it answers 200, then
# SIGTERM and a clean exit (status 0).
#
#   scripts/first-run.sh
#
# Clones this checkout's HEAD (commit first). The build is reused through CARGO_TARGET_DIR (default:
# this checkout's target/). Needs port 8000, the README's default, to be free.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target}"
url="http://127.0.0.1:8000/health"
# The build of a clean target takes a while; the wait ends early if the command exits.
start_timeout_secs="${FORGE_FIRST_RUN_TIMEOUT_SECS:-1800}"

work="$(mktemp -d)"
server=""
cleanup() {
    if [[ -n "$server" ]]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "first run: $*" >&2; tail -n 30 "$work/output" >&2 || true; exit 1; }

if (exec 3<>/dev/tcp/127.0.0.1/8000) 2>/dev/null; then
    echo "first run: port 8000 is taken, and the README's command listens there" >&2
    exit 1
fi
git clone --quiet "$repo" "$work/forge"
cd "$work/forge"
# The first line of the README's first shell block, without its comment.
line="$(awk '/^```sh/ { inside = 1; next } inside { print; exit }' README.md)"
command="${line%%#*}"
read -ra words <<<"$command"
[[ "${words[*]}" == "cargo run --release --bin forge-overlay -- serve" ]] \
    || fail "the README's first command changed to \`${words[*]}\`; update this script"
echo "first run: \`${words[*]}\` in a fresh clone at $work/forge"

# `cargo run` replaces itself with the binary once built, so this pid becomes the server's.
env -u FORGE_DATABASE_URL -u FORGE_OBJECT_STORE -u FORGE_DATA_DIR -u FORGE_BIND -u FORGE_CONFIG \
    "${words[@]}" >"$work/output" 2>&1 &
server=$!
started=$SECONDS
until [[ "$(curl -s -o /dev/null -w '%{http_code}' "$url" || true)" == 200 ]]; do
    kill -0 "$server" 2>/dev/null || { wait "$server" || true; server=""; fail "the command exited before $url answered 200"; }
    (( SECONDS - started < start_timeout_secs )) || fail "no 200 from $url within ${start_timeout_secs} s"
    sleep 1
done
echo "first run: $url answered 200 after $(( SECONDS - started )) s"

kill -TERM "$server"
status=0
wait "$server" || status=$?
server=""
[[ $status -eq 0 ]] || fail "the server exited with status $status after SIGTERM"
[[ -f data/forge.db ]] || fail "no database at ./data/forge.db"
echo "first run: stopped cleanly by SIGTERM; data under ./data"
