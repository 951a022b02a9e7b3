/*  zf_handshake — see zf_handshake.h. */
#include "zf_handshake.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "zf_util.h"

struct zf_handshake {
    void *sock; /* the watched socket */
    void *mon;
    bool failed;
    uint32_t closed; /* handshakes in a row the broker ended without a word (NO_DETAIL) */
    char why[400];
};

zf_handshake_t *zf_handshake_new(void *ctx, void *sock)
{
    zf_handshake_t *h = calloc(1, sizeof *h);
    if (!h)
        return NULL;
    h->sock = sock;
    char ep[64];
    snprintf(ep, sizeof ep, "inproc://zf-handshake-%p-%llx", (void *)h,
             (unsigned long long)zf_random64());
    int events = ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH |
                 ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL;
    /* No high-water mark on the events: libzmq's I/O thread sends them with a blocking send,
       so a full queue (a program that never asks, over many reconnects) would wedge it; an
       event is a few bytes per handshake. */
    int zero = 0;
    if (zmq_socket_monitor(sock, ep, events) < 0 || !(h->mon = zmq_socket(ctx, ZMQ_PAIR)) ||
        zmq_setsockopt(h->mon, ZMQ_LINGER, &zero, sizeof zero) < 0 ||
        zmq_setsockopt(h->mon, ZMQ_RCVHWM, &zero, sizeof zero) < 0 || zmq_connect(h->mon, ep) < 0) {
        zf_handshake_destroy(&h);
        return NULL;
    }
    return h;
}

void zf_handshake_destroy(zf_handshake_t **self_p)
{
    zf_handshake_t *h = *self_p;
    if (!h)
        return;
    *self_p = NULL;
    /* Stop the monitor first: libzmq sends its events from the I/O thread with a blocking
       send, so an event for a socket whose monitor peer (h->mon) is closed would block that
       thread for good, and with it every connection of the context (a client that reopens
       its socket, as zf_client_set_keys does, then hangs "not answering"). */
    if (h->sock)
        zmq_socket_monitor(h->sock, NULL, 0);
    if (h->mon)
        zmq_close(h->mon);
    free(h);
}

void *zf_handshake_socket(const zf_handshake_t *h)
{
    return h->mon;
}

static void describe(zf_handshake_t *h, uint16_t event, uint32_t value)
{
    if (event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH)
        snprintf(h->why, sizeof h->why,
                 "the broker refused this key (CURVE authentication failed, ZAP status %u): "
                 "it is not in the broker's key directory for this endpoint",
                 value);
    else if (event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL &&
             value == ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH)
        snprintf(h->why, sizeof h->why,
                 "security mismatch: CURVE is on at one end only (give --key and --broker-key "
                 "for a broker with --curve-secret, neither for one without)");
    else if (event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL &&
             value == ZMQ_PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC)
        snprintf(h->why, sizeof h->why,
                 "CURVE handshake failed: the broker key given (--broker-key) is not this "
                 "broker's");
    else if (event == ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL)
        /* what a client without keys sees over TCP (the CURVE broker drops the connection
           before this end reads its greeting, so no mechanism mismatch is reported here),
           and what a wrong broker key looks like */
        snprintf(h->why, sizeof h->why,
                 "the broker closed the connection during the security handshake (%s): most "
                 "likely CURVE is on at one end only (give --key and --broker-key for a broker "
                 "with --curve-secret, neither for one without), or --broker-key is not this "
                 "broker's key",
                 strerror((int)value));
    else
        snprintf(h->why, sizeof h->why, "security handshake failed (ZeroMQ protocol error 0x%x)",
                 value);
}

bool zf_handshake_failed(zf_handshake_t *h, char *why, size_t len)
{
    for (;;) {
        zmq_msg_t ev, addr;
        zmq_msg_init(&ev);
        if (zmq_msg_recv(&ev, h->mon, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&ev);
            break;
        }
        bool more = zmq_msg_more(&ev);
        if (zmq_msg_size(&ev) >= 6) {
            const uint8_t *p = zmq_msg_data(&ev);
            uint16_t event;
            uint32_t value;
            memcpy(&event, p, 2);
            memcpy(&value, p + 2, 4);
            /* A broker that ends a handshake without a word may only have died in it (a
               restart): that is a refusal only when the next attempt ends the same way. */
            h->closed = event == ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL ? h->closed + 1 : 0;
            h->failed = event != ZMQ_EVENT_HANDSHAKE_SUCCEEDED &&
                        (event != ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL || h->closed >= 2);
            if (h->failed)
                describe(h, event, value);
        }
        zmq_msg_close(&ev);
        if (more) { /* the endpoint frame */
            zmq_msg_init(&addr);
            zmq_msg_recv(&addr, h->mon, ZMQ_DONTWAIT);
            zmq_msg_close(&addr);
        }
    }
    if (h->failed && why)
        snprintf(why, len, "%s", h->why);
    return h->failed;
}
