#!/usr/bin/env bash
# Runs the cargo-fuzz (libFuzzer) targets of fuzz/, seeded from this repository's own overlays.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# SECONDS per target (default 20: the smoke `.ci/run` runs, a minute for the three); TARGETs default
# to all: manifest, registration, abi. A recorded run: `scripts/fuzz.sh 1800`.
#
# Seeds, rebuilt on every run so they follow the sources:
# - manifest: every example's overlay.toml and every fixture manifest, and each of them as JSON;
# - registration: every fixture module (binary and text) behind the selector byte 0, which feeds the
#   bytes to the checks as they are;
# - abi: none (its input describes a guest; libFuzzer finds its way from nothing in seconds).
# What libFuzzer adds goes to fuzz/corpus/TARGET, kept between runs and ignored by git; a crash,
# leak or hang (10 s) stops the target with its input in fuzz/artifacts/TARGET, and the script fails.
#
# Built without a sanitizer: the code under test is safe Rust and Wasmtime (fuzzed upstream with
# sanitizers), and what these targets look for is a panic, a hang or an allocation over 2 GiB, which
# libFuzzer catches without one, at about twice the executions per second. Installs cargo-fuzz when
# missing; needs no nightly (RUSTC_BOOTSTRAP=1).
set -euo pipefail
seconds="${1:-20}"
shift || true
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(manifest registration abi)
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo/fuzz"
export RUSTC_BOOTSTRAP=1
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz

seeds="$(mktemp -d)"
trap 'rm -rf "$seeds"' EXIT
mkdir -p "$seeds/manifest" "$seeds/registration" "$seeds/abi"
for manifest in "$repo"/examples/*/overlay.toml "$repo"/fixtures/wasm/*.toml; do
    name="$(basename "$(dirname "$manifest")")-$(basename "$manifest")"
    cp "$manifest" "$seeds/manifest/$name"
    python3 -c 'import json, sys, tomllib; print(json.dumps(tomllib.load(open(sys.argv[1], "rb"))))' \
        "$manifest" >"$seeds/manifest/$name.json"
done
for module in "$repo"/fixtures/wasm/*.wasm "$repo"/fixtures/wasm/*.wat; do
    { printf '\0'; cat "$module"; } >"$seeds/registration/$(basename "$module")"
done

cargo fuzz build --sanitizer none 2>&1 | tail -n 3
for target in "${targets[@]}"; do
    echo "=== $target: ${seconds} s"
    mkdir -p "corpus/$target"
    cargo fuzz run --sanitizer none "$target" "corpus/$target" "$seeds/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 2>&1 |
        grep -E '^(#[0-9]+[[:space:]]+(INITED|DONE)|stat::|==[0-9]+==|SUMMARY|Done|INFO: (seed|-max_len))|artifact|panicked|Test unit' || true
    test "${PIPESTATUS[0]}" -eq 0 || { echo "fuzz target $target failed: see fuzz/artifacts/$target" >&2; exit 1; }
done
