/*  zf_handshake — watches one socket's security handshakes (a ZeroMQ socket monitor), so a
    client or worker whose key the broker refuses can say so in one line instead of "not
    answering": the refusal itself never reaches the socket, only its monitor.

    Ownership: the watcher owns its monitor socket (a PAIR in the watched socket's context);
    destroy it before closing the watched socket: destroy stops the socket's monitor before
    it closes the PAIR. Not thread-safe: one thread.
*/
#ifndef ZF_HANDSHAKE_H
#define ZF_HANDSHAKE_H

#include <stdbool.h>
#include <stddef.h>

typedef struct zf_handshake zf_handshake_t;

/* Starts watching sock (before it connects). NULL when the monitor cannot be made. */
zf_handshake_t *zf_handshake_new(void *ctx, void *sock);
void zf_handshake_destroy(zf_handshake_t **self_p);

/* The monitor socket, to poll beside the watched one (readable: call zf_handshake_failed). */
void *zf_handshake_socket(const zf_handshake_t *self);

/* Reads every event waiting (never blocks). Returns true while the last handshake failed,
   with why in one line ("the broker refused this key (ZAP status 400) ..."); a handshake
   that succeeds clears it. A handshake the broker ended without a word counts only when
   the one after it ends so too: a broker that died in it (restarting) is no refusal. */
bool zf_handshake_failed(zf_handshake_t *self, char *why, size_t len);

#endif
