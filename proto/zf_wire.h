/*  zf_wire — moving whole zfleet messages over ZeroMQ sockets.

    A received message is kept as its ZeroMQ frames, so payloads are never copied: the
    caller moves a payload frame onward with zf_wire_send, which takes it over.
    Ownership rule (as nng): on success zf_wire_send has consumed `payload`; on failure the
    caller still owns it and must close or keep it.
*/
#ifndef ZF_WIRE_H
#define ZF_WIRE_H

#include <stdbool.h>
#include <zmq.h>

#include "zf_proto.h"

#define ZF_WIRE_MAX_FRAMES 4

typedef struct {
    zmq_msg_t part[ZF_WIRE_MAX_FRAMES];
    int n;       /* frames kept in part[] */
    int dropped; /* further frames that were received and discarded */
} zf_frames_t;

/* Receives every frame of one message. Returns 0, or -1 with errno (EAGAIN with
   ZMQ_DONTWAIT, ETERM, EINTR). On success the caller owns `f` and must zf_frames_close it. */
int zf_wire_recv(void *sock, zf_frames_t *f, int flags);

/* Closes every frame of f. Safe on a closed or zeroed f. */
void zf_frames_close(zf_frames_t *f);

/* A handler for zf_wire_read_batch: gets one received message, borrowed. It may move
   frames out of f (zf_wire_send, zmq_msg_move); whatever is left is closed after it. */
typedef void (*zf_wire_handler_t)(void *arg, zf_frames_t *f);

/* The one read loop of every event loop: receives up to `max` (>= 1) messages from sock
   without blocking, hands each to handle(arg, f) and closes its frames. The batch ends
   early when nothing more is waiting (EAGAIN) or a signal interrupts (EINTR): neither is an
   error, and the caller's next poll turn reads on. Returns the messages handled, or -1
   with errno on a socket error (ETERM, ENOTSOCK, ...), after those handled before it. */
int zf_wire_read_batch(void *sock, int max, zf_wire_handler_t handle, void *arg);

/* Sends [route][header][payload] with ZMQ_DONTWAIT. `route` (borrowed, may be NULL) is a
   ROUTER routing-id frame; `payload` (may be NULL) is consumed on success only. A header
   that cannot be encoded is a programmer error. Returns 0, or -1 with errno (EAGAIN,
   EHOSTUNREACH): then nothing was sent. */
int zf_wire_send(void *sock, zmq_msg_t *route, const zf_msg_t *hdr, zmq_msg_t *payload);

/* As zf_wire_send with a routing id given as bytes. */
int zf_wire_send_to(void *sock, const void *rid, size_t rid_len, const zf_msg_t *hdr,
                    zmq_msg_t *payload);

/* As zf_wire_send, blocking (for clients and tools that want to wait for room). */
int zf_wire_send_blocking(void *sock, const zf_msg_t *hdr, zmq_msg_t *payload);

#endif
