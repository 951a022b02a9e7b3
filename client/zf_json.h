/*  zf_json — writing JSON for the zfleet CLI: escaped strings and msgpack documents. */
#ifndef ZF_JSON_H
#define ZF_JSON_H

#include <stddef.h>
#include <stdio.h>

/* Writes s (len bytes) as a JSON string literal; invalid UTF-8 bytes become U+FFFD. */
void zf_json_string(FILE *out, const char *s, size_t len);
/* Writes a msgpack document as JSON. Returns 0, or -1 if it is not valid msgpack. */
int zf_json_from_msgpack(FILE *out, const void *data, size_t len);
/* True when the bytes are valid UTF-8 without control characters other than \t \n \r. */
int zf_json_is_text(const void *data, size_t len);

struct msgpack_object;
/* The value under a string key of a msgpack map (borrowed from it), or NULL when map is NULL,
   not a map, or has no such key. The CLI's documents (STATS, DEAD) are read with it. */
const struct msgpack_object *zf_json_get(const struct msgpack_object *map, const char *key);

#endif
