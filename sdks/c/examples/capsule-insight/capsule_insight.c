/* capsule-insight with the C SDK, the same overlay as examples/capsule-insight (Rust): searches
 * capsules for {"query": ..., "limit": N} and, when anything matched, records an `insight`
 * capsule listing the hits, with their ids in the metadata's `source_capsule_ids`. Answers
 * {"found": n, "insight_id": "..."} (null when nothing matched). */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "forge.h"

/* Most hits one insight summarises. */
#define MAX_LIMIT 50
/* Characters of each hit quoted in the insight. */
#define QUOTE_CHARS 120

/* A growing string; allocation failures end the call. */
typedef struct {
    char *text;
    size_t len, cap;
} buffer;

static void append(buffer *b, const char *text, size_t len) {
    if (b->len + len + 1 > b->cap) {
        b->cap = (b->len + len + 1) * 2;
        b->text = realloc(b->text, b->cap);
        if (b->text == NULL) forge_fail("out of memory");
    }
    memcpy(b->text + b->len, text, len);
    b->len += len;
    b->text[b->len] = '\0';
}

static void append_str(buffer *b, const char *text) { append(b, text, strlen(text)); }

static void append_fmt(buffer *b, const char *format, double number) {
    char digits[64];
    snprintf(digits, sizeof digits, format, number);
    append_str(b, digits);
}

/* The first QUOTE_CHARS characters of `text` with whitespace runs made single spaces, and an
 * ellipsis if cut. Characters are counted as UTF-8 code points, like Rust's `chars()`. */
static void append_quote(buffer *b, const char *text) {
    size_t chars = 0;
    int pending_space = 0;
    for (const char *c = text; *c; c++) {
        if (isspace((unsigned char)*c)) {
            pending_space = chars > 0;
            continue;
        }
        int starts_char = ((unsigned char)*c & 0xc0) != 0x80;
        if (starts_char) {
            /* A space goes out only before a character that follows it. */
            if (pending_space) {
                if (chars == QUOTE_CHARS) {
                    append_str(b, "…");
                    return;
                }
                append(b, " ", 1);
                chars++;
                pending_space = 0;
            }
            if (chars == QUOTE_CHARS) {
                append_str(b, "…");
                return;
            }
            chars++;
        }
        append(b, c, 1);
    }
}

static int by_name(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* "2 knowledge, 1 decision" for the hits' capsule types, in name order. */
static void append_kinds(buffer *b, const cJSON *hits) {
    int n = cJSON_GetArraySize(hits), i = 0;
    const char **kinds = malloc(sizeof *kinds * (size_t)(n ? n : 1));
    const cJSON *hit;
    cJSON_ArrayForEach(hit, hits) {
        const cJSON *capsule = cJSON_GetObjectItemCaseSensitive(hit, "capsule");
        kinds[i++] = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(capsule, "type"));
    }
    qsort(kinds, (size_t)n, sizeof *kinds, by_name);
    for (i = 0; i < n;) {
        int same = 1;
        while (i + same < n && strcmp(kinds[i], kinds[i + same]) == 0) same++;
        if (i > 0) append_str(b, ", ");
        append_fmt(b, "%.0f ", same);
        append_str(b, kinds[i]);
        i += same;
    }
}

/* The insight's content: a summary line, then one quoted line per hit. */
static char *insight_content(const char *query, const cJSON *hits) {
    buffer b = {0};
    int n = cJSON_GetArraySize(hits), i = 0;
    append_str(&b, "Insight for \"");
    append_str(&b, query);
    append_fmt(&b, "\": %.0f related capsule", n);
    append_str(&b, n == 1 ? " (" : "s (");
    append_kinds(&b, hits);
    append_str(&b, ").\n");
    const cJSON *hit;
    cJSON_ArrayForEach(hit, hits) {
        const cJSON *capsule = cJSON_GetObjectItemCaseSensitive(hit, "capsule");
        append_fmt(&b, "%.0f. [", ++i);
        append_str(&b, cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(capsule, "type")));
        append_str(&b, "] ");
        append_quote(&b, cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(capsule, "content")));
        append_fmt(&b, " (score %.2f)\n", cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(hit, "score")));
    }
    return b.text;
}

static char *trimmed(const char *text) {
    while (isspace((unsigned char)*text)) text++;
    size_t len = strlen(text);
    while (len > 0 && isspace((unsigned char)text[len - 1])) len--;
    char *copy = malloc(len + 1);
    if (copy == NULL) forge_fail("out of memory");
    memcpy(copy, text, len);
    copy[len] = '\0';
    return copy;
}

static void fail_with(const forge_host_error *error) {
    buffer b = {0};
    append_str(&b, error->code);
    append_str(&b, ": ");
    append_str(&b, error->message);
    forge_fail(b.text);
}

static cJSON *process(const cJSON *args) {
    const char *raw_query = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(args, "query"));
    if (raw_query == NULL) forge_reject_input("invalid arguments: `query` must be a string");
    const cJSON *limit_item = cJSON_GetObjectItemCaseSensitive(args, "limit");
    if (limit_item != NULL && !cJSON_IsNumber(limit_item)) {
        forge_reject_input("invalid arguments: `limit` must be a number");
    }
    double limit = limit_item ? cJSON_GetNumberValue(limit_item) : 5;
    char *query = trimmed(raw_query);
    if (*query == '\0') forge_reject_input("query must not be empty");
    if (!(limit >= 1 && limit <= MAX_LIMIT)) {
        buffer b = {0};
        append_fmt(&b, "limit must be between 1 and %.0f, ", MAX_LIMIT);
        append_fmt(&b, "got %g", limit);
        forge_reject_input(b.text);
    }

    forge_host_error error;
    cJSON *hits = forge_capsule_search(query, (int)limit, &error);
    if (hits == NULL) fail_with(&error);
    int found = cJSON_GetArraySize(hits);
    buffer line = {0};
    append_fmt(&line, "capsule-insight: %.0f capsules match \"", found);
    append_str(&line, query);
    append_str(&line, "\"");
    forge_log_info(line.text);

    cJSON *out = cJSON_CreateObject();
    cJSON_AddNumberToObject(out, "found", found);
    if (found == 0) {
        cJSON_AddNullToObject(out, "insight_id");
        return out;
    }
    cJSON *metadata = cJSON_CreateObject();
    cJSON_AddStringToObject(metadata, "query", query);
    cJSON *sources = cJSON_AddArrayToObject(metadata, "source_capsule_ids");
    const cJSON *hit;
    cJSON_ArrayForEach(hit, hits) {
        const cJSON *capsule = cJSON_GetObjectItemCaseSensitive(hit, "capsule");
        cJSON_AddItemToArray(sources, cJSON_CreateString(cJSON_GetStringValue(
                                          cJSON_GetObjectItemCaseSensitive(capsule, "id"))));
    }
    cJSON *insight = forge_capsule_create(insight_content(query, hits), "insight", metadata, &error);
    if (insight == NULL) fail_with(&error);
    const char *id = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(insight, "id"));
    buffer created = {0};
    append_str(&created, "capsule-insight: created insight ");
    append_str(&created, id);
    forge_log_info(created.text);
    cJSON_AddStringToObject(out, "insight_id", id);
    return out;
}

FORGE_ENTRY_POINT(process, process)
