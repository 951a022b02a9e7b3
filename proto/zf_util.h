/*  zf_util — clock, logging and small helpers shared by every zfleet program. */
#ifndef ZF_UTIL_H
#define ZF_UTIL_H

#include <stdint.h>

/* Monotonic clock. */
int64_t zf_now_ms(void);
int64_t zf_now_us(void);
/* Wall clock, for logs and records that survive a restart. */
int64_t zf_wall_ms(void);

typedef enum { ZF_LOG_ERROR, ZF_LOG_WARN, ZF_LOG_INFO, ZF_LOG_DEBUG } zf_log_level_t;

/* Sets the program name shown in log lines and the most verbose level printed
   (ZF_LOG environment variable: error|warn|info|debug; default info). */
void zf_log_init(const char *prog);
/* One line to stderr: "zfleet-broker: warn: ...". */
void zf_log(zf_log_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Parses a non-negative decimal integer no larger than max. Returns 0, or -1. */
int zf_parse_u64(const char *s, uint64_t max, uint64_t *out);

/* Random 64-bit value from the OS (getrandom), for ids and jitter. */
uint64_t zf_random64(void);

#endif
