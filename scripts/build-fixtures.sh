#!/usr/bin/env bash
# Rebuilds the example overlays (examples/*) and copies them to fixtures/wasm/, the modules the
# runtime's tests load:
#
#   fixtures/wasm/<overlay name>.wasm     built for wasm32-unknown-unknown with the `wasm` profile
#   fixtures/wasm/<overlay name>.toml     the example's overlay.toml
#   fixtures/wasm/text-stats-wasip1.wasm  text-stats built for wasm32-wasip1 (a WASI reactor)
#   fixtures/wasm/file-notes.wasm         file-notes, built for wasm32-wasip1 only (it uses std::fs)
#
# then scripts/build-sdk-fixtures.sh builds the C and AssemblyScript examples the same way.
#
# Idempotent: run it again after changing the SDK or an example and commit what changed. Honours
# CARGO_TARGET_DIR (cargo metadata reports where the artifacts go) and adds missing rustup targets.
#
# Paths of downloaded dependencies end up in the modules (in panic locations); they are remapped to
# /deps so the fixtures do not depend on where, or from which registry, this machine keeps its
# crates. That uses CARGO_ENCODED_RUSTFLAGS, so RUSTFLAGS from the environment do not apply here.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
out="$repo/fixtures/wasm"

# package directory under examples/ = overlay name; the cdylib file is the package's lib name.
examples=(echo text-stats capsule-insight count-vowels fetch-json)
wasi_examples=(text-stats)
# Examples that only make sense on WASI: their fixture is the wasm32-wasip1 build.
wasi_only_examples=(file-notes)

ensure_target() {
    if ! rustup target list --installed | grep -qx "$1"; then
        echo "adding rust target $1"
        rustup target add "$1"
    fi
}

overlay_name() {
    sed -n 's/^name *= *"\([a-z0-9-]*\)".*/\1/p' "$1" | head -n 1
}

target_dir="$(cargo metadata --format-version 1 --no-deps |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
[[ -n "$target_dir" ]] || { echo "cargo metadata reported no target_directory" >&2; exit 1; }

flags=()
for source_dir in "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/ "${CARGO_HOME:-$HOME/.cargo}"/git/checkouts/; do
    if [[ -d "$source_dir" ]]; then
        flags+=("--remap-path-prefix=${source_dir%/}=/deps")
    fi
done
CARGO_ENCODED_RUSTFLAGS="$(IFS=$'\x1f'; echo "${flags[*]}")"
export CARGO_ENCODED_RUSTFLAGS

build() { # target, examples...
    local target="$1"
    shift
    ensure_target "$target"
    local packages=()
    for example in "$@"; do packages+=(-p "$example"); done
    cargo build --profile wasm --target "$target" "${packages[@]}"
}

copy() { # target, example, destination file name without extension
    local file="$target_dir/$1/wasm/${2//-/_}.wasm"
    [[ -f "$file" ]] || { echo "missing $file" >&2; exit 1; }
    install -m 0644 "$file" "$out/$3.wasm"
    printf '  %-28s %8d bytes\n' "$3.wasm" "$(wc -c <"$out/$3.wasm")"
}

mkdir -p "$out"
build wasm32-unknown-unknown "${examples[@]}"
build wasm32-wasip1 "${wasi_examples[@]}" "${wasi_only_examples[@]}"

echo "fixtures in ${out#"$repo"/}:"
for example in "${examples[@]}"; do
    manifest="examples/$example/overlay.toml"
    name="$(overlay_name "$manifest")"
    [[ -n "$name" ]] || { echo "$manifest has no valid name" >&2; exit 1; }
    copy wasm32-unknown-unknown "$example" "$name"
    install -m 0644 "$manifest" "$out/$name.toml"
done
for example in "${wasi_examples[@]}"; do
    copy wasm32-wasip1 "$example" "$(overlay_name "examples/$example/overlay.toml")-wasip1"
done
for example in "${wasi_only_examples[@]}"; do
    manifest="examples/$example/overlay.toml"
    name="$(overlay_name "$manifest")"
    copy wasm32-wasip1 "$example" "$name"
    install -m 0644 "$manifest" "$out/$name.toml"
done

# The C and AssemblyScript SDKs' examples and test guests.
"$repo/scripts/build-sdk-fixtures.sh"
