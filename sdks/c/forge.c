/* The C SDK's implementation: see forge.h. */
#include "forge.h"

#include <stdlib.h>
#include <string.h>

/* ---- raw host imports (module "forge"), each called from exactly one wrapper ---- */

#define FORGE_IMPORT(name) __attribute__((import_module("forge"), import_name(#name)))

FORGE_IMPORT(log_info) void forge_raw_log_info(const char *ptr, int32_t len);
FORGE_IMPORT(log_error) void forge_raw_log_error(const char *ptr, int32_t len);
FORGE_IMPORT(fail) void forge_raw_fail(const char *ptr, int32_t len);
FORGE_IMPORT(reject_input) void forge_raw_reject_input(const char *ptr, int32_t len);
FORGE_IMPORT(capsule_read) int64_t forge_raw_capsule_read(const char *ptr, int32_t len);
FORGE_IMPORT(capsule_search) int64_t forge_raw_capsule_search(const char *ptr, int32_t len);
FORGE_IMPORT(capsule_create) int64_t forge_raw_capsule_create(const char *ptr, int32_t len);
FORGE_IMPORT(capsule_delete) int64_t forge_raw_capsule_delete(const char *ptr, int32_t len);
FORGE_IMPORT(http_request) int64_t forge_raw_http_request(const char *ptr, int32_t len);

__attribute__((export_name("forge_alloc"))) int32_t forge_alloc(int32_t size) {
    if (size < 0) return 0;
    /* malloc(0) may answer NULL; the host needs a real address even for empty input. */
    return (int32_t)(uintptr_t)malloc(size == 0 ? 1 : (size_t)size);
}

void forge_log_info(const char *line) { forge_raw_log_info(line, (int32_t)strlen(line)); }

void forge_log_error(const char *line) { forge_raw_log_error(line, (int32_t)strlen(line)); }

_Noreturn void forge_fail(const char *message) {
    forge_raw_fail(message, (int32_t)strlen(message));
    /* The host never returns from `fail`; should one ever do, trap. */
    __builtin_trap();
}

_Noreturn void forge_reject_input(const char *message) {
    forge_raw_reject_input(message, (int32_t)strlen(message));
    /* As for `fail`: the host never returns. */
    __builtin_trap();
}

int64_t forge_run(forge_handler handler, int32_t ptr, int32_t len) {
    /* The host's bytes are not NUL-terminated: parse by length, and quote none of them. */
    cJSON *args = cJSON_ParseWithLength((const char *)(uintptr_t)ptr, (size_t)len);
    if (args == NULL) forge_reject_input("invalid arguments: not JSON");
    if (!cJSON_IsObject(args)) forge_reject_input("invalid arguments: not a JSON object");
    cJSON *result = handler(args);
    if (result == NULL) return 0;
    if (!cJSON_IsObject(result)) forge_fail("the result must be a JSON object");
    char *text = cJSON_PrintUnformatted(result);
    if (text == NULL) forge_fail("out of memory serialising the result");
    return forge_pack(text, (uint32_t)strlen(text));
}

typedef int64_t (*raw_call)(const char *ptr, int32_t len);

static cJSON *refused(forge_host_error *error, const char *code, const char *message) {
    error->code = code;
    error->message = message;
    return NULL;
}

/* Sends `request` (freed here) through one host function and reads its ok / error answer. */
static cJSON *exchange(raw_call call, cJSON *request, forge_host_error *error) {
    char *text = cJSON_PrintUnformatted(request);
    cJSON_Delete(request);
    if (text == NULL) return refused(error, "invalid_request", "out of memory serialising the request");
    uint64_t packed = (uint64_t)call(text, (int32_t)strlen(text));
    free(text);
    const char *answer = (const char *)(uintptr_t)(packed >> 32);
    cJSON *envelope = cJSON_ParseWithLength(answer, (size_t)(packed & 0xffffffffu));
    cJSON *ok = cJSON_DetachItemFromObjectCaseSensitive(envelope, "ok");
    cJSON *failure = cJSON_GetObjectItemCaseSensitive(envelope, "error");
    if (ok != NULL) {
        cJSON_Delete(envelope);
        return ok;
    }
    const char *code = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(failure, "code"));
    const char *message = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(failure, "message"));
    if (code == NULL || message == NULL) {
        cJSON_Delete(envelope);
        return refused(error, "invalid_response", "the host answered neither {\"ok\"} nor {\"error\"}");
    }
    /* The envelope is not freed: `code` and `message` point into it until the call ends. */
    return refused(error, code, message);
}

cJSON *forge_capsule_read(const char *id, forge_host_error *error) {
    cJSON *request = cJSON_CreateObject();
    cJSON_AddStringToObject(request, "id", id);
    return exchange(forge_raw_capsule_read, request, error);
}

cJSON *forge_capsule_search(const char *query, int limit, forge_host_error *error) {
    cJSON *request = cJSON_CreateObject();
    cJSON_AddStringToObject(request, "query", query);
    cJSON_AddNumberToObject(request, "limit", limit);
    return exchange(forge_raw_capsule_search, request, error);
}

cJSON *forge_capsule_create(const char *content, const char *type, cJSON *metadata,
                            forge_host_error *error) {
    cJSON *request = cJSON_CreateObject();
    cJSON_AddStringToObject(request, "content", content);
    cJSON_AddStringToObject(request, "type", type);
    cJSON_AddItemToObject(request, "metadata", metadata ? metadata : cJSON_CreateObject());
    return exchange(forge_raw_capsule_create, request, error);
}

cJSON *forge_capsule_delete(const char *id, forge_host_error *error) {
    cJSON *request = cJSON_CreateObject();
    cJSON_AddStringToObject(request, "id", id);
    return exchange(forge_raw_capsule_delete, request, error);
}

cJSON *forge_http_request(const char *method, const char *url, cJSON *headers, const char *body,
                          forge_host_error *error) {
    cJSON *request = cJSON_CreateObject();
    cJSON_AddStringToObject(request, "method", method);
    cJSON_AddStringToObject(request, "url", url);
    cJSON_AddItemToObject(request, "headers", headers ? headers : cJSON_CreateObject());
    if (body != NULL) cJSON_AddStringToObject(request, "body", body);
    return exchange(forge_raw_http_request, request, error);
}
