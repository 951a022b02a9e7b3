/*  zf_cert — CURVE key files in the certificate format czmq's zcert and pyzmq's zmq.auth
    share, so keys made by either tool work here and ours work there:

        NAME.key         the public certificate:  curve / public-key = "<40 Z85 chars>"
        NAME.key_secret  the secret one (mode 0600): public-key and secret-key

    Both are ZPL text (czmq's zconfig): '#' comments, a `metadata` section and a `curve`
    section with indented `name = "value"` lines. Reading takes the two key lines wherever
    they are and ignores the rest, as pyzmq's load_certificate does.

    Errors: functions return 0 / -1 with a one-line reason in err (naming the file).
*/
#ifndef ZF_CERT_H
#define ZF_CERT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ZF_KEY_BYTES 32
#define ZF_KEY_Z85 40 /* characters of a key in Z85, without the terminating NUL */

typedef struct {
    uint8_t public_key[ZF_KEY_BYTES];
    uint8_t secret_key[ZF_KEY_BYTES];
    bool has_secret;
} zf_cert_t;

/* Reads a certificate file. need_secret: the file must hold a secret key (a .key_secret);
   otherwise a public one is enough (and a secret key in it is read too). Returns 0, or -1
   with err set: unreadable file, no public-key line, a key that is not 40 Z85 characters,
   or need_secret and no secret-key line. */
int zf_cert_load(const char *path, bool need_secret, zf_cert_t *cert, char *err, size_t errlen);

/* Makes a new keypair and writes it as DIR_OR_PREFIX.key (0644) and .key_secret (0600).
   Refuses (-1) to overwrite either file. Returns 0, or -1 with err set. */
int zf_cert_generate(const char *prefix, zf_cert_t *cert, char *err, size_t errlen);

/* Calls each(arg, path, cert) for every readable `*.key` file in dir, in name order (files
   ending `.key_secret` are not `*.key`). Returns the number of keys, or -1 with err set when
   the directory cannot be read or one of its .key files is not a certificate (no partial
   set: the caller keeps what it had). */
int zf_cert_load_dir(const char *dir, void (*each)(void *arg, const char *path, const zf_cert_t *c),
                     void *arg, char *err, size_t errlen);

/* Makes sock (not yet connected) a CURVE client with keypair mine, of the server whose
   public key is server. Returns 0, or -1 (errno from zmq_setsockopt). */
int zf_cert_apply_client(void *sock, const zf_cert_t *mine, const uint8_t server[ZF_KEY_BYTES]);

/* Reads a client's two files: its own NAME.key_secret into mine and the server's public
   key file into server. Both NULL: 0 with *on false (no CURVE). One NULL, or a file that
   cannot be read: -1 with err set. */
int zf_cert_load_pair(const char *key_file, const char *server_file, bool *on, zf_cert_t *mine,
                      uint8_t server[ZF_KEY_BYTES], char *err, size_t errlen);

/* The key in Z85 (41 bytes with the NUL). */
void zf_key_z85(const uint8_t key[ZF_KEY_BYTES], char out[ZF_KEY_Z85 + 1]);

#endif
