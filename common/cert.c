/*  zf_cert — see zf_cert.h. */
#include "zf_cert.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#define CERT_FILE_MAX 65536 /* a certificate is a few hundred bytes; more is not one */

static int fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

void zf_key_z85(const uint8_t key[ZF_KEY_BYTES], char out[ZF_KEY_Z85 + 1])
{
    zmq_z85_encode(out, key, ZF_KEY_BYTES);
}

/* The value of `name = "value"` on line (leading blanks skipped), when line names it: 1
   with the key decoded into key, 0 when the line is about something else, -1 when it names
   it but the value is no Z85 key. Quotes may be " or ' or none, as zconfig allows. */
static int key_line(const char *line, const char *name, uint8_t key[ZF_KEY_BYTES])
{
    line += strspn(line, " \t");
    size_t n = strlen(name);
    if (strncmp(line, name, n) != 0)
        return 0;
    const char *p = line + n;
    p += strspn(p, " \t");
    if (*p != '=')
        return 0;
    p++;
    p += strspn(p, " \t");
    char quote = (*p == '"' || *p == '\'') ? *p++ : 0;
    char z85[ZF_KEY_Z85 + 1];
    size_t len = quote ? strcspn(p, quote == '"' ? "\"" : "'") : strcspn(p, " \t\r\n#");
    if (len != ZF_KEY_Z85 || (quote && p[len] != quote))
        return -1;
    memcpy(z85, p, len);
    z85[len] = '\0';
    return zmq_z85_decode(key, z85) ? 1 : -1;
}

/* The whole file (at most CERT_FILE_MAX bytes), NUL-terminated, malloc'd; NULL with err. */
static char *read_small(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "re");
    if (!f) {
        fail(err, errlen, "cannot read key file %s: %s", path, strerror(errno));
        return NULL;
    }
    char *buf = malloc(CERT_FILE_MAX + 1);
    size_t n = buf ? fread(buf, 1, CERT_FILE_MAX + 1, f) : 0;
    int bad = buf ? ferror(f) : ENOMEM;
    fclose(f);
    if (!buf || bad) {
        fail(err, errlen, "cannot read key file %s: %s", path,
             buf ? "read error" : "out of memory");
        free(buf);
        return NULL;
    }
    if (n > CERT_FILE_MAX) {
        fail(err, errlen, "%s is not a key file: over %d bytes", path, CERT_FILE_MAX);
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    return buf;
}

int zf_cert_load(const char *path, bool need_secret, zf_cert_t *cert, char *err, size_t errlen)
{
    char *text = read_small(path, err, errlen);
    if (!text)
        return -1;
    memset(cert, 0, sizeof *cert);
    bool has_public = false;
    int rc = 0;
    for (char *save = NULL, *line = strtok_r(text, "\n", &save); line && rc == 0;
         line = strtok_r(NULL, "\n", &save)) {
        int pub = key_line(line, "public-key", cert->public_key);
        int sec = key_line(line, "secret-key", cert->secret_key);
        if (pub < 0 || sec < 0)
            rc = fail(err, errlen, "%s: the %s is not 40 Z85 characters in quotes", path,
                      pub < 0 ? "public-key" : "secret-key");
        has_public |= pub == 1;
        cert->has_secret |= sec == 1;
    }
    free(text);
    if (rc == 0 && !has_public)
        rc = fail(err, errlen, "%s is not a CURVE certificate: no public-key line", path);
    if (rc == 0 && need_secret && !cert->has_secret)
        rc = fail(err, errlen,
                  "%s holds no secret-key: give the NAME.key_secret file, not the public NAME.key",
                  path);
    if (rc == 0 && cert->has_secret) {
        /* a secret file whose public half does not match would fail every handshake with
           nothing to say why: say it here */
        uint8_t derived[ZF_KEY_BYTES];
        char pz[ZF_KEY_Z85 + 1], sz[ZF_KEY_Z85 + 1];
        zf_key_z85(cert->secret_key, sz);
        if (zmq_curve_public(pz, sz) == 0 && zmq_z85_decode(derived, pz) &&
            memcmp(derived, cert->public_key, ZF_KEY_BYTES) != 0)
            rc = fail(err, errlen, "%s: its public-key is not the secret-key's public half", path);
    }
    return rc;
}

/* Writes text to path, created with mode and never over an existing file. */
static int write_new(const char *path, const char *text, mode_t mode, char *err, size_t errlen)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0)
        return fail(err, errlen, "cannot create %s: %s%s", path, strerror(errno),
                    errno == EEXIST ? " (remove it first: keys are never overwritten)" : "");
    size_t n = strlen(text);
    bool ok = write(fd, text, n) == (ssize_t)n && fsync(fd) == 0;
    int e = errno;
    if (close(fd) != 0 || !ok) {
        unlink(path);
        return fail(err, errlen, "cannot write %s: %s", path, strerror(ok ? errno : e));
    }
    return 0;
}

int zf_cert_generate(const char *prefix, zf_cert_t *cert, char *err, size_t errlen)
{
    char pz[ZF_KEY_Z85 + 1], sz[ZF_KEY_Z85 + 1];
    if (zmq_curve_keypair(pz, sz) != 0)
        return fail(err, errlen, "cannot make a keypair: %s (libzmq without CURVE?)",
                    zmq_strerror(errno));
    memset(cert, 0, sizeof *cert);
    zmq_z85_decode(cert->public_key, pz);
    zmq_z85_decode(cert->secret_key, sz);
    cert->has_secret = true;
    char when[32];
    time_t now = time(NULL);
    strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", gmtime(&now));
    char pub[1024], sec[1024], pubpath[4096], secpath[4096];
    /* the headers czmq's zcert_save writes, so the files read as theirs */
    snprintf(pub, sizeof pub,
             "#   ****  Generated on %s by zfleet  ****\n"
             "#   ZeroMQ CURVE Public Certificate\n"
             "#   Exchange securely, or use a secure mechanism to verify the contents\n"
             "#   of this file after exchange. Store public certificates in your home\n"
             "#   directory, in the .curve subdirectory.\n\n"
             "metadata\ncurve\n    public-key = \"%s\"\n",
             when, pz);
    snprintf(sec, sizeof sec,
             "#   ****  Generated on %s by zfleet  ****\n"
             "#   ZeroMQ CURVE **Secret** Certificate\n"
             "#   DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its permissions.\n\n"
             "metadata\ncurve\n    public-key = \"%s\"\n    secret-key = \"%s\"\n",
             when, pz, sz);
    if (snprintf(pubpath, sizeof pubpath, "%s.key", prefix) >= (int)sizeof pubpath ||
        snprintf(secpath, sizeof secpath, "%s.key_secret", prefix) >= (int)sizeof secpath)
        return fail(err, errlen, "key name too long");
    /* the secret first: a public key without its secret would be of no use to anyone */
    if (write_new(secpath, sec, 0600, err, errlen) < 0)
        return -1;
    if (write_new(pubpath, pub, 0644, err, errlen) < 0) {
        unlink(secpath);
        return -1;
    }
    return 0;
}

int zf_cert_apply_client(void *sock, const zf_cert_t *mine, const uint8_t server[ZF_KEY_BYTES])
{
    if (zmq_setsockopt(sock, ZMQ_CURVE_SERVERKEY, server, ZF_KEY_BYTES) < 0 ||
        zmq_setsockopt(sock, ZMQ_CURVE_PUBLICKEY, mine->public_key, ZF_KEY_BYTES) < 0 ||
        zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, mine->secret_key, ZF_KEY_BYTES) < 0)
        return -1;
    return 0;
}

int zf_cert_load_pair(const char *key_file, const char *server_file, bool *on, zf_cert_t *mine,
                      uint8_t server[ZF_KEY_BYTES], char *err, size_t errlen)
{
    *on = false;
    if (!key_file && !server_file)
        return 0;
    if (!key_file || !server_file)
        return fail(err, errlen,
                    "CURVE needs both this side's key (--key NAME.key_secret) and the broker's "
                    "public key (--broker-key broker.key)");
    zf_cert_t theirs;
    if (zf_cert_load(key_file, true, mine, err, errlen) < 0 ||
        zf_cert_load(server_file, false, &theirs, err, errlen) < 0)
        return -1;
    memcpy(server, theirs.public_key, ZF_KEY_BYTES);
    memset(&theirs, 0, sizeof theirs);
    *on = true;
    return 0;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool is_key_name(const char *name)
{
    size_t n = strlen(name);
    return name[0] != '.' && n > 4 && strcmp(name + n - 4, ".key") == 0;
}

/* The names of dir's *.key files, sorted; NULL with err. */
static char **key_names(const char *dir, size_t *count, char *err, size_t errlen)
{
    DIR *d = opendir(dir);
    if (!d) {
        fail(err, errlen, "cannot read key directory %s: %s", dir, strerror(errno));
        return NULL;
    }
    char **names = NULL;
    size_t n = 0, cap = 0;
    bool oom = false;
    for (struct dirent *e; !oom && (e = readdir(d));) {
        if (!is_key_name(e->d_name))
            continue;
        if (n == cap) {
            char **grown = realloc(names, (cap = cap ? cap * 2 : 16) * sizeof *names);
            oom = !grown;
            names = grown ? grown : names;
        }
        if (!oom && !(names[n++] = strdup(e->d_name)))
            oom = true, n--;
    }
    closedir(d);
    if (oom) {
        for (size_t i = 0; i < n; i++)
            free(names[i]);
        free(names);
        fail(err, errlen, "cannot read key directory %s: out of memory", dir);
        return NULL;
    }
    if (n)
        qsort(names, n, sizeof *names, by_name);
    *count = n;
    return names ? names : calloc(1, sizeof *names);
}

int zf_cert_load_dir(const char *dir, void (*each)(void *arg, const char *path, const zf_cert_t *c),
                     void *arg, char *err, size_t errlen)
{
    size_t n = 0;
    char **names = key_names(dir, &n, err, errlen);
    if (!names)
        return -1;
    zf_cert_t *certs = calloc(n ? n : 1, sizeof *certs);
    int rc = certs ? 0 : fail(err, errlen, "cannot read key directory %s: out of memory", dir);
    char path[4096];
    /* all or nothing: every file is read before the first is handed out */
    for (size_t i = 0; i < n && rc == 0; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        rc = zf_cert_load(path, false, &certs[i], err, errlen);
    }
    for (size_t i = 0; i < n && rc == 0; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        each(arg, path, &certs[i]);
    }
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    if (certs)
        memset(certs, 0, n * sizeof *certs); /* secret halves, when a secret file sat there */
    free(certs);
    return rc == 0 ? (int)n : -1;
}
