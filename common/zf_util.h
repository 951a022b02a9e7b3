/*  zf_util — clock and small helpers shared by every zfleet program. */
#ifndef ZF_UTIL_H
#define ZF_UTIL_H

#include <stdint.h>

#include "zf_log.h" /* logging lives there; included for the callers of zf_log */

/* Monotonic clock. */
int64_t zf_now_ms(void);
int64_t zf_now_us(void);
/* Wall clock, for logs and records that survive a restart. */
int64_t zf_wall_ms(void);

/* Parses a non-negative decimal integer no larger than max. Returns 0, or -1 (and leaves
   *out alone). Silent: for values that are not command-line options (ids, files). */
int zf_parse_u64(const char *s, uint64_t max, uint64_t *out);

/* The one parser for a bounded number given to a command-line option --opt, in every zfleet
   program. A value that is not a decimal integer from min to max prints one line on stderr,
       PROG: --OPT: expected a number from MIN to MAX, got 'S'
   where "PROG:" is `prog` (e.g. "zfleet", "zfleet bench"), or with prog NULL the zf_log
   prefix ("zfleet-broker: error:"), and returns -1; the caller exits with its own usage
   code (the broker and the CLI 2, the worker ZF_WORKER_EXIT_START). Returns 0 otherwise.
   *out is written only on success. zf_parse_opt_int is the same for a signed value. */
int zf_parse_opt(const char *prog, const char *opt, const char *s, uint64_t min, uint64_t max,
                 uint64_t *out);
int zf_parse_opt_int(const char *prog, const char *opt, const char *s, int64_t min, int64_t max,
                     int64_t *out);

/* Tunes this process's allocator for payload-sized blocks (for zfleet's own programs, never
   called by the client library on a host application's behalf): blocks up to 32 MiB come
   from the heap instead of a fresh mmap each, and up to 64 MiB of freed memory is kept for
   reuse instead of being returned to the kernel. Why: a 1 MiB frame received into fresh
   pages costs the kernel 256 page faults and zeroings, more than the copy itself (measured:
   clear_page was the largest cost of moving 1 MiB payloads). */
void zf_tune_malloc(void);

/* Random 64-bit value from the OS (getrandom), for ids and jitter. */
uint64_t zf_random64(void);

/* Happens-before edges ThreadSanitizer cannot see (scripts/test's TSan pass): libzmq is not
   instrumented, so a buffer handed to it with a free callback (zmq_msg_init_data), written
   by one thread and freed by ZeroMQ's I/O thread in that callback, looks unordered although
   ZeroMQ's queues order the two. ZF_TSAN_RELEASE(p) just before the hand-over and
   ZF_TSAN_ACQUIRE(p) first thing in the callback say so; both are nothing in other builds. */
#if defined(__SANITIZE_THREAD__)
#define ZF_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define ZF_TSAN 1
#endif
#endif
#ifdef ZF_TSAN
#include <sanitizer/tsan_interface.h>
#define ZF_TSAN_RELEASE(p) __tsan_release(p)
#define ZF_TSAN_ACQUIRE(p) __tsan_acquire(p)
#else
#define ZF_TSAN_RELEASE(p) ((void)(p))
#define ZF_TSAN_ACQUIRE(p) ((void)(p))
#endif

#endif
