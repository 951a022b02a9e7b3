/*  zf_runner — the handler thread of a worker, and the queue of jobs it has been given.

    The runner owns the modules: it binds the device on its own thread, initialises the
    modules, then runs jobs one at a time from its queue. The I/O thread pushes jobs into
    the queue and can take back those not yet started (RECALL, cancel, drain); the runner
    pulls the next one itself as soon as it finishes, so a busy worker needs no round trip
    through the I/O thread per job; and with an `idle` hook it waits for the broker's socket
    itself while its queue is empty, so a job reaching an idle worker is read by the thread
    that runs it. Results ([DONE header][output]) and progress go to the broker through the
    I/O thread's `send` hook, from the runner's own thread, so a result costs no wake-up of
    the I/O thread; when the hook cannot send at once (the I/O thread is using the socket,
    or the socket is full), they go to the I/O thread over an inproc PAIR socket instead.
    A result with a job queued behind it may go to the `hold` hook instead: the runner
    starts that job first, and the result leaves a little later (on the I/O thread's
    timer, one wake-up there, while the job runs), so that the wake-ups it causes do not
    delay the next job.
    A job with a run timeout is announced to the I/O thread as it starts (the `started` hook,
    which arms a timer without waking anyone; without the hook, a one-byte "started" notice
    over the PAIR), so that the I/O thread enforces the timeout.
*/
#ifndef ZF_RUNNER_H
#define ZF_RUNNER_H

#include <stdbool.h>
#include <stdint.h>
#include <zmq.h>

#include "../proto/zf_proto.h"
#include "zf_module.h"
#include "zf_registry.h"

typedef struct zf_runner zf_runner_t;

/* What the runner is doing now. */
typedef struct {
    bool active;
    uint64_t id;
    uint32_t attempt;
    uint32_t timeout_ms; /* 0 = none */
    int64_t started_ms;  /* monotonic */
} zf_running_t;

/* The runner's hooks into its worker, all called on the runner's thread with `arg`. Any may
   be NULL. */
typedef struct {
    /* Sends [hdr][payload] (payload may be NULL) to the broker at once, if it can without
       waiting (the I/O thread may hold the socket, or have earlier messages of ours still
       to forward). Returns 0 when sent (payload consumed), or -1 at once (payload still the
       caller's): then the runner sends it over the PAIR, always. NULL: always the PAIR. */
    int (*send)(void *arg, const zf_msg_t *hdr, zmq_msg_t *payload);
    /* Keeps a DONE [hdr][payload] to be sent within delay_us, by whichever thread uses the
       socket first (at the latest a timer's), so that the runner can start the next queued
       job before the result wakes anything: a send at once would wake the I/O threads,
       ours and then the broker's, on this core, and the next job would start only after
       them. Called only when a job is queued and the run took 1 ms or more (a result so
       waits at most 2 % of its run, and never more than 200 µs: HOLD_* in runner.c).
       Returns 0 when kept (payload consumed), -1 when it cannot keep it now (payload still
       the caller's, who sends it at once). NULL: results are never held. */
    int (*hold)(void *arg, const zf_msg_t *hdr, zmq_msg_t *payload, uint32_t delay_us);
    /* Called when the queue is empty, instead of sleeping on the runner's own condition:
       waits until `wake_fd` (the runner's eventfd, written by a push from another thread, by
       zf_runner_wake and by destroy) turns readable, or reads the broker's messages itself
       (pushing the jobs they bring, on this thread), then returns. The runner looks at its
       queue after every return, so a return with nothing pushed is harmless. This is what
       lets a job reaching an idle worker wake the thread that runs it and no other.
       NULL: the runner waits on its condition for a push. */
    void (*idle)(void *arg, int wake_fd);
    /* Called when the runner leaves `idle` with a job to run: the caller takes the broker's
       socket back (at once when `at_once`, which a batch's wait for mates asks for, or soon
       enough for a cancel or a recall to be timely). */
    void (*busy)(void *arg, bool at_once);
    /* Called as a job with a run timeout starts (zf_runner_running tells it already): the
       caller arms its enforcement, without waking a thread, since the job is about to
       start. NULL: a one-byte "started" notice over the PAIR instead. */
    void (*started)(void *arg, uint32_t timeout_ms);
    void *arg;
} zf_runner_hooks_t;

/* Starts the runner thread on `ctx`, connected to the inproc endpoint `ep` that the
   caller has bound as a PAIR. mods and dev are borrowed until destroy; hooks is copied
   (NULL: none). Returns NULL when the thread cannot start. The runner then sends one frame
   over the PAIR: empty when init succeeded, or the reason it failed. */
zf_runner_t *zf_runner_new(void *ctx, const char *ep, zf_registry_t *mods, const zf_device_t *dev,
                           const zf_runner_hooks_t *hooks);

/* Makes a runner waiting in its idle hook return from it and call it again (the worker's
   socket changed). Any thread. */
void zf_runner_wake(zf_runner_t *self);

/* Queues a job. Takes `payload` (it is left empty). Returns 0, or -1 when memory runs out
   (then the payload is still the caller's). */
int zf_runner_push(zf_runner_t *self, uint64_t id, uint32_t attempt, const char *fn,
                   uint32_t timeout_ms, zmq_msg_t *payload);

/* Takes a job that has not started out of the queue. True if it was there. */
bool zf_runner_take(zf_runner_t *self, uint64_t id, uint32_t attempt);

/* Takes every job that has not started; calls fn(arg, id, attempt) for each. */
void zf_runner_take_all(zf_runner_t *self, void (*fn)(void *arg, uint64_t id, uint32_t attempt),
                        void *arg);

/* Calls fn(arg, id, attempt) for every job that has not started, in queue order, leaving
   them queued; then for the running job's batch-mates (a batched function, zf_module.h),
   which have started but are not the running one. */
void zf_runner_each(zf_runner_t *self, void (*fn)(void *arg, uint64_t id, uint32_t attempt),
                    void *arg);

/* The running job, if any. */
zf_running_t zf_runner_running(zf_runner_t *self);

/* Flags the job (id, attempt) as cancelled; zf_job_cancelled turns true for it. */
void zf_runner_cancel(zf_runner_t *self, uint64_t id, uint32_t attempt);

/* For embedded runtimes (zf_python), on the runner's thread during run(): a new reference to
   the job's input frame in *out (it shares the frame's buffer: no copy; out may outlive the
   job, the buffer lives as long as a reference does; the caller closes it). Returns 0, or
   -1 when memory runs out. */
int zf_runner_job_input(const zf_job_t *job, zmq_msg_t *out);
/* Makes msg the job's output as it is (moved: msg is left empty), so a runtime can hand over
   a buffer it owns with its own free function (zmq_msg_init_data) instead of copying it. */
void zf_runner_job_output(zf_job_t *job, zmq_msg_t *msg);

/* Stops the thread after its current job, drops what is queued, joins, frees; sets
   *self_p to NULL once the thread has ended (its hooks may still use *self_p until then).
   NULL-safe. */
void zf_runner_destroy(zf_runner_t **self_p);

#endif
