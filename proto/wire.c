/*  zf_wire — see zf_wire.h. */
#include "zf_wire.h"

#include <assert.h>
#include <errno.h>
#include <string.h>

int zf_wire_recv(void *sock, zf_frames_t *f, int flags)
{
    f->n = 0;
    f->dropped = 0;
    for (;;) {
        zmq_msg_t tmp;
        zmq_msg_t *dst = f->n < ZF_WIRE_MAX_FRAMES ? &f->part[f->n] : &tmp;
        zmq_msg_init(dst);
        if (zmq_msg_recv(dst, sock, f->n == 0 && f->dropped == 0 ? flags : 0) < 0) {
            int e = errno;
            zmq_msg_close(dst);
            zf_frames_close(f);
            errno = e;
            return -1;
        }
        int more = zmq_msg_more(dst);
        if (dst == &tmp) {
            zmq_msg_close(&tmp);
            f->dropped++;
        } else {
            f->n++;
        }
        if (!more)
            return 0;
    }
}

void zf_frames_close(zf_frames_t *f)
{
    for (int i = 0; i < f->n; i++)
        zmq_msg_close(&f->part[i]);
    f->n = 0;
}

int zf_wire_read_batch(void *sock, int max, zf_wire_handler_t handle, void *arg)
{
    assert(max >= 1 && handle);
    int n = 0;
    for (; n < max; n++) {
        zf_frames_t f;
        if (zf_wire_recv(sock, &f, ZMQ_DONTWAIT) < 0)
            return errno == EAGAIN || errno == EINTR ? n : -1;
        handle(arg, &f);
        zf_frames_close(&f);
    }
    return n;
}

static int send_header(void *sock, const zf_msg_t *hdr, int flags)
{
    char buf[ZF_HEADER_MAX];
    int len = zf_msg_encode(hdr, buf, sizeof buf);
    assert(len > 0 && "header must fit ZF_HEADER_MAX");
    return zmq_send(sock, buf, (size_t)len, flags) < 0 ? -1 : 0;
}

/* Once the first frame of a message is queued, ZeroMQ accepts the rest of it (the pipe's
   high-water mark is checked on the first frame only), so later failures cannot happen
   short of ETERM. */
static int send_rest(void *sock, const zf_msg_t *hdr, zmq_msg_t *payload, int flags)
{
    if (send_header(sock, hdr, flags | (payload ? ZMQ_SNDMORE : 0)) < 0)
        return -1;
    if (payload && zmq_msg_send(payload, sock, flags) < 0)
        return -1;
    return 0;
}

int zf_wire_send(void *sock, zmq_msg_t *route, const zf_msg_t *hdr, zmq_msg_t *payload)
{
    if (!route)
        return send_rest(sock, hdr, payload, ZMQ_DONTWAIT);
    return zf_wire_send_to(sock, zmq_msg_data(route), zmq_msg_size(route), hdr, payload);
}

int zf_wire_send_to(void *sock, const void *rid, size_t rid_len, const zf_msg_t *hdr,
                    zmq_msg_t *payload)
{
    if (zmq_send(sock, rid, rid_len, ZMQ_DONTWAIT | ZMQ_SNDMORE) < 0)
        return -1;
    return send_rest(sock, hdr, payload, ZMQ_DONTWAIT);
}

int zf_wire_send_blocking(void *sock, const zf_msg_t *hdr, zmq_msg_t *payload)
{
    return send_rest(sock, hdr, payload, 0);
}
