/* count-vowels with the C SDK: {"text": "..."} in, {"vowels": N} out, counting `aeiouAEIOU`
 * exactly as the Rust example does. */
#include <string.h>

#include "forge.h"

static cJSON *count_vowels(const cJSON *args) {
    const char *text = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(args, "text"));
    if (text == NULL) forge_reject_input("invalid arguments: `text` must be a string");
    int vowels = 0;
    for (const char *c = text; *c; c++) {
        if (strchr("aeiouAEIOU", *c) != NULL) vowels++;
    }
    cJSON *out = cJSON_CreateObject();
    cJSON_AddNumberToObject(out, "vowels", vowels);
    return out;
}

FORGE_ENTRY_POINT(count_vowels, count_vowels)
