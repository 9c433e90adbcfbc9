/* {{name}}: a Forge overlay. `process` greets whoever {"name": ...} names. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "forge.h"

static cJSON *greet(const cJSON *args) {
    forge_log_info("greeting");
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(args, "name");
    if (name != NULL && !cJSON_IsString(name) && !cJSON_IsNull(name)) {
        forge_fail("invalid arguments: `name` must be a string");
    }
    const char *who = cJSON_IsString(name) ? name->valuestring : "world";
    /* Every call runs in a fresh instance: nothing needs freeing. */
    size_t size = strlen(who) + sizeof "Hello, !";
    char *greeting = malloc(size);
    if (greeting == NULL) forge_fail("out of memory");
    snprintf(greeting, size, "Hello, %s!", who);
    cJSON *out = cJSON_CreateObject();
    cJSON_AddStringToObject(out, "greeting", greeting);
    return out;
}

FORGE_ENTRY_POINT(process, greet)
