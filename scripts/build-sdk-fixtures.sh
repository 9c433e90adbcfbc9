#!/usr/bin/env bash
# Builds the C and AssemblyScript examples (sdks/c/examples/*, sdks/assemblyscript/examples/*) and
# the SDKs' host-function test guests into fixtures/wasm/, the modules the runtime's tests load:
#
#   fixtures/wasm/<overlay name>.wasm / .toml   each example and its overlay.toml; the manifests
#                                               name them <example>-c and <example>-as
#   fixtures/wasm/sdk-host-calls-c.wasm         sdks/c/tests/host_calls.c
#   fixtures/wasm/sdk-host-calls-as.wasm        sdks/assemblyscript/tests/host-calls.ts
#
# Needs clang-14 with wasm-ld and wasi-libc (Debian: clang-14 lld-14 wasi-libc
# libclang-rt-14-dev-wasm32) and node/npm; installs the AssemblyScript SDK's locked packages
# (npm ci). scripts/build-fixtures.sh calls it after the Rust examples.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
out="$repo/fixtures/wasm"
mkdir -p "$out"

overlay_name() {
    sed -n 's/^name *= *"\([a-z0-9-]*\)".*/\1/p' "$1" | head -n 1
}

report() {
    printf '  %-28s %8d bytes\n' "$(basename "$1")" "$(wc -c <"$1")"
}

# The C SDK's flags (sdks/c/forge.h): a WASI reactor; 4 pages of initial memory leave the
# allocator a free tail of about 190 KiB past the 64 KiB stack, so small calls never grow memory.
build_c() { # output file, sources...
    local output="$1"
    shift
    clang-14 --target=wasm32-wasi -mexec-model=reactor -O2 -Wall -Wextra -Werror \
        -I sdks/c -I sdks/c/vendor/cjson "$@" sdks/c/forge.c sdks/c/vendor/cjson/cJSON.c \
        -Wl,--initial-memory=262144 -Wl,--strip-debug -o "$output"
    report "$output"
}

# The AssemblyScript SDK's flags (sdks/assemblyscript/README.md): json-as's transform, the stub
# runtime (a bump allocator: every call is a fresh instance, so nothing needs collecting),
# `_initialize` exported instead of a start function, and `abort` routed to forge.fail.
build_as() { # entry file relative to sdks/assemblyscript, output file
    (cd sdks/assemblyscript &&
        npx --no-install asc "$1" --transform json-as --runtime stub -O3 --noAssert \
            --exportStart _initialize --use abort=forgeAbort --disableWarning -o "$2")
    report "$2"
}

install_example_manifest() { # example directory; prints the overlay name
    local name
    name="$(overlay_name "$1/overlay.toml")"
    [[ -n "$name" ]] || { echo "$1/overlay.toml has no valid name" >&2; exit 1; }
    install -m 0644 "$1/overlay.toml" "$out/$name.toml"
    echo "$name"
}

echo "C examples (clang-14, wasm32-wasi):"
for dir in sdks/c/examples/*/; do
    dir="${dir%/}"
    name="$(install_example_manifest "$dir")"
    build_c "$out/$name.wasm" "$dir"/*.c
done
build_c "$out/sdk-host-calls-c.wasm" sdks/c/tests/host_calls.c

echo "AssemblyScript examples:"
(cd sdks/assemblyscript && npm ci --no-audit --no-fund --loglevel=error)
for dir in sdks/assemblyscript/examples/*/; do
    dir="${dir%/}"
    name="$(install_example_manifest "$dir")"
    build_as "${dir#sdks/assemblyscript/}/index.ts" "$out/$name.wasm"
done
build_as tests/host-calls.ts "$out/sdk-host-calls-as.wasm"
