/*  zf_proto_fields — the header fields' types and the commands' required fields, shared by
    the codec (proto.c) and the reference decoder the tests check it against
    (tests/ref_decode.c). Internal to proto/ and tests/: not part of the protocol's C API.
*/
#ifndef ZF_PROTO_FIELDS_H
#define ZF_PROTO_FIELDS_H

#include <stddef.h>
#include <stdint.h>

#include "zf_proto.h"

typedef enum { T_NONE, T_U64, T_U32, T_I32, T_STR, T_F64, T_STRARR, T_CLAIMS } zf_ftype_t;

typedef struct {
    zf_ftype_t type;
    size_t off;      /* of the member in zf_msg_t */
    uint32_t maxlen; /* strings: longest accepted */
} zf_fdesc_t;

/* Indexed by key; T_NONE for keys no field has. */
extern const zf_fdesc_t zf_proto_fields[ZF_F__MAX];

/* The fields (bit 1 << key) a command must carry; UINT32_MAX for an unknown command. */
uint32_t zf_proto_required(uint8_t cmd);

#endif
