/*  zf_cli_util — the few helpers the zfleet CLI and its bench need beside zfleet.h.

    The CLI is a client of libzfleet like any other: it includes zfleet.h and nothing from
    proto/, so these small copies of the internal helpers live here (the library does not
    export its own).
*/
#ifndef ZF_CLI_UTIL_H
#define ZF_CLI_UTIL_H

#include <stdint.h>

/* Monotonic clock. */
int64_t zf_cli_now_us(void);
int64_t zf_cli_now_ms(void);

/* Parses a non-negative decimal integer no larger than max. Returns 0, or -1. */
int zf_cli_parse_u64(const char *s, uint64_t max, uint64_t *out);

/* "any", "cpu", "gpu" as a zfleet_device_t; -1 for anything else. */
int zf_cli_device_parse(const char *s);

/* Random 64-bit value from the OS (getrandom). */
uint64_t zf_cli_random64(void);

/* Tunes the allocator for payload-sized blocks, as zfleet's own programs do (proto's
   zf_tune_malloc, which explains why): the CLI is a zfleet program, not a host application. */
void zf_cli_tune_malloc(void);

#endif
