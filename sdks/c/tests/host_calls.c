/* A test guest for the C SDK's host-function wrappers (crates/forge-runtime/tests/
 * example_overlays.rs): one entry point per wrapper, each answering what the wrapper gave,
 * {"ok": value} or {"error": {"code", "message"}}, so the test sees both directions. */
#include "forge.h"

static const char *text(const cJSON *args, const char *key) {
    return cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(args, key));
}

static cJSON *take_object(const cJSON *args, const char *key) {
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(args, key);
    return item ? cJSON_Duplicate(item, 1) : NULL;
}

static cJSON *answer(cJSON *ok, const forge_host_error *error) {
    cJSON *out = cJSON_CreateObject();
    if (ok != NULL) {
        cJSON_AddItemToObject(out, "ok", ok);
    } else {
        cJSON *failure = cJSON_AddObjectToObject(out, "error");
        cJSON_AddStringToObject(failure, "code", error->code);
        cJSON_AddStringToObject(failure, "message", error->message);
    }
    return out;
}

static cJSON *log_lines(const cJSON *args) {
    forge_log_info(text(args, "info"));
    forge_log_error(text(args, "error"));
    return cJSON_CreateObject();
}

static cJSON *fail(const cJSON *args) { forge_fail(text(args, "message")); }

static cJSON *read(const cJSON *args) {
    forge_host_error error;
    return answer(forge_capsule_read(text(args, "id"), &error), &error);
}

static cJSON *search(const cJSON *args) {
    forge_host_error error;
    int limit = (int)cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(args, "limit"));
    return answer(forge_capsule_search(text(args, "query"), limit, &error), &error);
}

static cJSON *create(const cJSON *args) {
    forge_host_error error;
    cJSON *capsule = forge_capsule_create(text(args, "content"), text(args, "type"),
                                          take_object(args, "metadata"), &error);
    return answer(capsule, &error);
}

static cJSON *http(const cJSON *args) {
    forge_host_error error;
    cJSON *response = forge_http_request(text(args, "method"), text(args, "url"),
                                         take_object(args, "headers"), text(args, "body"), &error);
    return answer(response, &error);
}

FORGE_ENTRY_POINT(log, log_lines)
FORGE_ENTRY_POINT(fail, fail)
FORGE_ENTRY_POINT(read, read)
FORGE_ENTRY_POINT(search, search)
FORGE_ENTRY_POINT(create, create)
FORGE_ENTRY_POINT(http, http)
