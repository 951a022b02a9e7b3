/*  ref_decode — the reference header decoder (msgpack-c based), for tests only: the same
    contract as zf_msg_decode (zf_proto.h), which must agree with it on every input.
*/
#ifndef REF_DECODE_H
#define REF_DECODE_H

#include <stdbool.h>
#include <stddef.h>

#include "zf_proto.h"

int ref_msg_decode(zf_msg_t *m, const void *buf, size_t len, int *err, const char **why);

/* Two decoded headers are the same: every field present, strings by content (a decoder's
   empty string may be any ""), functions and claims up to their counts. */
bool ref_msg_same(const zf_msg_t *a, const zf_msg_t *b);

#endif
