/*
 * Forge overlay SDK for C: the Overlay ABI v1 (docs/abi.md) for clang's wasm32-wasi target, with
 * typed wrappers for every host function and JSON through the vendored cJSON (vendor/cjson).
 *
 * Build a reactor (the host calls its `_initialize` once per fresh instance):
 *
 *   clang-14 --target=wasm32-wasi -mexec-model=reactor -O2 \
 *       -I sdks/c -I sdks/c/vendor/cjson overlay.c sdks/c/forge.c sdks/c/vendor/cjson/cJSON.c \
 *       -Wl,--initial-memory=262144 -o overlay.wasm
 *
 * Memory: every call runs in a fresh instance, so nothing needs freeing. `forge_alloc`, cJSON
 * and the SDK all allocate with wasi-libc's malloc, which serves the initial memory's free tail
 * (from `__heap_base` to the end of the initial memory) before it grows memory, so a small call
 * never grows memory; `--initial-memory` sets how large that tail is.
 */
#ifndef FORGE_H
#define FORGE_H

#include <stdint.h>

#include "cJSON.h"

/*
 * An entry point `name` that runs `handler` on the call's arguments (a cJSON object) and returns
 * what the handler returns: a cJSON object (success), or NULL (the result `null`). The handler
 * ends a call as a failure with forge_fail(), or with forge_reject_input() when the caller's
 * arguments are wrong. Arguments that are not a JSON object fail the call as `invalid_input`.
 *
 *   static cJSON *shout(const cJSON *args) { ... }
 *   FORGE_ENTRY_POINT(process, shout)
 */
#define FORGE_ENTRY_POINT(name, handler)                                                 \
    __attribute__((export_name(#name))) int64_t forge_entry_##name(int32_t ptr, int32_t len) { \
        return forge_run(handler, ptr, len);                                             \
    }

typedef cJSON *(*forge_handler)(const cJSON *args);

/* What FORGE_ENTRY_POINT expands to: parse, call, serialise and pack. */
int64_t forge_run(forge_handler handler, int32_t ptr, int32_t len);

/* `(ptr << 32) | len`, the ABI's packing of an entry point's result or a host answer. */
static inline int64_t forge_pack(const void *ptr, uint32_t len) {
    return (int64_t)(((uint64_t)(uintptr_t)ptr << 32) | len);
}

/* The ABI's `forge_alloc(size)`: `size` bytes for the host to write into, 0 on failure. */
int32_t forge_alloc(int32_t size);

/* ---- logging and failure (no capability needed) ---- */

void forge_log_info(const char *line);
void forge_log_error(const char *line);
/* Ends the call at once as a failure (`overlay_error`) with `message`. */
_Noreturn void forge_fail(const char *message);
/*
 * Ends the call at once as an `invalid_input` failure with `message`: the caller's arguments are
 * wrong. Such failures are the caller's and never count toward the overlay's quarantine.
 */
_Noreturn void forge_reject_input(const char *message);

/* ---- request / response host functions ---- */

/*
 * A host function's refusal (`{"error": {"code", "message"}}`): `not_found`,
 * `invalid_request`, `unavailable`, `limit_exceeded` (the call used up its
 * host calls), `network_denied` (`http_request` refused a request inside the manifest's patterns,
 * docs/abi.md), or `invalid_response` when the answer could not be read. Both strings live until the call ends.
 */
typedef struct {
    const char *code;
    const char *message;
} forge_host_error;

/*
 * Each wrapper returns the answer's `ok` value (a cJSON tree the caller owns), or NULL and fills
 * `*error`. The module imports a host function only if it calls its wrapper, and the manifest
 * must request that function's capability.
 */

/* `capsule_read` (capsule:read): the capsule with `id`. */
cJSON *forge_capsule_read(const char *id, forge_host_error *error);
/* `capsule_search` (capsule:read): an array of `{"capsule": {...}, "score": N}`, best first. */
cJSON *forge_capsule_search(const char *query, int limit, forge_host_error *error);
/*
 * `capsule_create` (capsule:write): the created capsule. `type` is a capsule type such as
 * "insight"; `metadata` is an object or NULL, and is taken over (freed) by the call.
 */
cJSON *forge_capsule_create(const char *content, const char *type, cJSON *metadata,
                            forge_host_error *error);
/*
 * `capsule_delete` (capsule:delete, privileged): `{"deleted": id}`. A capsule above the overlay's
 * trust level is left alone and answers `not_found`, exactly like a missing one.
 */
cJSON *forge_capsule_delete(const char *id, forge_host_error *error);
/*
 * `http_request` (network:http, to the manifest's host patterns; see docs/abi.md): `{"status", "headers", "body"}`.
 * `headers` (an object of strings, or NULL) is taken over; `body` may be NULL.
 */
cJSON *forge_http_request(const char *method, const char *url, cJSON *headers, const char *body,
                          forge_host_error *error);

#endif
