/*  zf_json — see zf_json.h. */
#include "zf_json.h"

#include <msgpack.h>
#include <stdint.h>
#include <string.h>

/* Length of the valid UTF-8 sequence at s (at most n bytes), or 0 if invalid. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    if (s[0] < 0x80)
        return 1;
    size_t len = (s[0] & 0xe0) == 0xc0   ? 2
                 : (s[0] & 0xf0) == 0xe0 ? 3
                 : (s[0] & 0xf8) == 0xf0 ? 4
                                         : 0;
    if (!len || len > n || (len == 2 && s[0] < 0xc2))
        return 0;
    for (size_t i = 1; i < len; i++)
        if ((s[i] & 0xc0) != 0x80)
            return 0;
    return len;
}

int zf_json_is_text(const void *data, size_t len)
{
    const unsigned char *s = data;
    for (size_t i = 0; i < len;) {
        if (s[i] < 0x20 && s[i] != '\n' && s[i] != '\r' && s[i] != '\t')
            return 0;
        size_t l = utf8_len(s + i, len - i);
        if (!l)
            return 0;
        i += l;
    }
    return 1;
}

void zf_json_string(FILE *out, const char *str, size_t len)
{
    const unsigned char *s = (const unsigned char *)str;
    fputc('"', out);
    for (size_t i = 0; i < len;) {
        unsigned char ch = s[i];
        if (ch == '"' || ch == '\\') {
            fprintf(out, "\\%c", ch);
            i++;
        } else if (ch == '\n') {
            fputs("\\n", out);
            i++;
        } else if (ch == '\t') {
            fputs("\\t", out);
            i++;
        } else if (ch == '\r') {
            fputs("\\r", out);
            i++;
        } else if (ch < 0x20) {
            fprintf(out, "\\u%04x", ch);
            i++;
        } else {
            size_t l = utf8_len(s + i, len - i);
            if (l) {
                fwrite(s + i, 1, l, out);
                i += l;
            } else {
                fputs("\\ufffd", out);
                i++;
            }
        }
    }
    fputc('"', out);
}

static void emit(FILE *out, const msgpack_object *o)
{
    switch (o->type) {
    case MSGPACK_OBJECT_NIL: fputs("null", out); break;
    case MSGPACK_OBJECT_BOOLEAN: fputs(o->via.boolean ? "true" : "false", out); break;
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        fprintf(out, "%llu", (unsigned long long)o->via.u64);
        break;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: fprintf(out, "%lld", (long long)o->via.i64); break;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: fprintf(out, "%.17g", o->via.f64); break;
    case MSGPACK_OBJECT_STR: zf_json_string(out, o->via.str.ptr, o->via.str.size); break;
    case MSGPACK_OBJECT_BIN: zf_json_string(out, o->via.bin.ptr, o->via.bin.size); break;
    case MSGPACK_OBJECT_ARRAY:
        fputc('[', out);
        for (uint32_t i = 0; i < o->via.array.size; i++) {
            if (i)
                fputc(',', out);
            emit(out, &o->via.array.ptr[i]);
        }
        fputc(']', out);
        break;
    case MSGPACK_OBJECT_MAP:
        fputc('{', out);
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            if (i)
                fputc(',', out);
            const msgpack_object *k = &o->via.map.ptr[i].key;
            if (k->type == MSGPACK_OBJECT_STR)
                emit(out, k);
            else {
                fputc('"', out);
                emit(out, k);
                fputc('"', out);
            }
            fputc(':', out);
            emit(out, &o->via.map.ptr[i].val);
        }
        fputc('}', out);
        break;
    default: fputs("null", out);
    }
}

int zf_json_from_msgpack(FILE *out, const void *data, size_t len)
{
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    int rc = -1;
    if (msgpack_unpack_next(&u, data, len, &off) == MSGPACK_UNPACK_SUCCESS) {
        emit(out, &u.data);
        rc = 0;
    }
    msgpack_unpacked_destroy(&u);
    return rc;
}

const msgpack_object *zf_json_get(const msgpack_object *map, const char *key)
{
    if (!map || map->type != MSGPACK_OBJECT_MAP)
        return NULL;
    size_t n = strlen(key);
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object *k = &map->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == n &&
            !memcmp(k->via.str.ptr, key, n))
            return &map->via.map.ptr[i].val;
    }
    return NULL;
}
