/*  Writes the fuzzer's seed corpus: one file per command, each a valid header frame with
    the fields the broker, worker and client really send, plus a few edge cases (longest
    strings, most functions, negative priority, float progress, forward-compatible unknown
    keys). Header frames only: payload frames never reach zf_msg_decode.

    Usage: make_corpus DIR     (tests/fuzz/run.sh builds and runs it; the committed corpus
    in tests/fuzz/corpus/ is its output.)
*/
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "zf_proto.h"

static const char *dir;
static int nfiles;

static void write_file(const char *name, const void *buf, size_t len)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(buf, 1, len, f) != len || fclose(f) != 0) {
        fprintf(stderr, "make_corpus: cannot write %s: %s\n", path, strerror(errno));
        exit(1);
    }
    nfiles++;
}

/* Encodes m, checks that it decodes, and writes it as NN_name.bin. */
static void emit(const char *name, const zf_msg_t *m)
{
    char buf[ZF_HEADER_MAX];
    int len = zf_msg_encode(m, buf, sizeof buf);
    zf_msg_t back;
    int err;
    const char *why = "";
    if (len < 0 || zf_msg_decode(&back, buf, (size_t)len, &err, &why) < 0) {
        fprintf(stderr, "make_corpus: %s does not round-trip: %s\n", name, why);
        exit(1);
    }
    char file[128];
    snprintf(file, sizeof file, "%02x_%s.bin", m->cmd, name);
    write_file(file, buf, (size_t)len);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    dir = argv[1];
    mkdir(dir, 0755);

    const uint64_t id = 0x0199b2c3d4e50001ull; /* above 2^53, as older brokers made: any u64 */
    const uint64_t tag = 0x3a5f00c2d1e4b7a1ull;
    zf_msg_t m;

    /* ---- client -> broker ---- */
    zf_msg_init(&m, ZF_CMD_SUBMIT);
    zf_msg_set_str(&m, ZF_F_FN, "echo");
    zf_msg_set_u64(&m, ZF_F_TAG, tag);
    emit("submit", &m);

    zf_msg_init(&m, ZF_CMD_SUBMIT);
    zf_msg_set_str(&m, ZF_F_FN, "resize_image");
    zf_msg_set_u64(&m, ZF_F_TAG, tag + 1);
    zf_msg_set_i32(&m, ZF_F_PRIORITY, -5);
    zf_msg_set_u64(&m, ZF_F_TIMEOUT, 60000);
    zf_msg_set_u64(&m, ZF_F_DEADLINE, 5000);
    zf_msg_set_u64(&m, ZF_F_MAX_ATTEMPTS, 5);
    zf_msg_set_u64(&m, ZF_F_DEVICE, ZF_DEV_GPU);
    zf_msg_set_u64(&m, ZF_F_FLAGS, ZF_FLAG_NO_PUSH);
    emit("submit_all_options", &m);

    zf_msg_init(&m, ZF_CMD_WAIT);
    zf_msg_set_u64(&m, ZF_F_ID, id);
    zf_msg_set_u64(&m, ZF_F_TAG, tag + 2);
    emit("wait", &m);

    zf_msg_init(&m, ZF_CMD_GET);
    zf_msg_set_u64(&m, ZF_F_ID, id);
    zf_msg_set_u64(&m, ZF_F_TAG, tag + 3);
    emit("get", &m);

    zf_msg_init(&m, ZF_CMD_CANCEL);
    zf_msg_set_u64(&m, ZF_F_ID, id);
    zf_msg_set_u64(&m, ZF_F_TAG, tag + 4);
    emit("cancel", &m);

    zf_msg_init(&m, ZF_CMD_STATS);
    zf_msg_set_u64(&m, ZF_F_TAG, tag + 5);
    emit("stats", &m);

    zf_msg_init(&m, ZF_CMD_DEAD);
    zf_msg_set_u64(&m, ZF_F_TAG, tag + 6);
    emit("dead", &m);

    zf_msg_init(&m, ZF_CMD_DEAD);
    zf_msg_set_u64(&m, ZF_F_TAG, tag + 7);
    zf_msg_set_u64(&m, ZF_F_FLAGS, ZF_FLAG_PURGE);
    emit("dead_purge", &m);

    zf_msg_init(&m, ZF_CMD_RETRY);
    zf_msg_set_u64(&m, ZF_F_ID, id);
    zf_msg_set_u64(&m, ZF_F_TAG, tag + 8);
    emit("retry", &m);

    zf_msg_init(&m, ZF_CMD_PING);
    emit("ping", &m);

    /* ---- broker -> client ---- */
    zf_msg_init(&m, ZF_CMD_ACCEPTED);
    zf_msg_set_u64(&m, ZF_F_TAG, tag);
    zf_msg_set_u64(&m, ZF_F_ID, id);
    emit("accepted", &m);

    zf_msg_init(&m, ZF_CMD_REJECTED);
    zf_msg_set_u64(&m, ZF_F_TAG, tag);
    zf_msg_set_u64(&m, ZF_F_CODE, ZF_ETOO_LARGE);
    zf_msg_set_str(&m, ZF_F_TEXT, "payload too large: 70000000 bytes, limit 67108864");
    emit("rejected", &m);

    zf_msg_init(&m, ZF_CMD_RESULT);
    zf_msg_set_u64(&m, ZF_F_ID, id);
    zf_msg_set_u64(&m, ZF_F_TAG, tag);
    zf_msg_set_u64(&m, ZF_F_STATUS, ZF_ST_SUCCEEDED);
    zf_msg_set_u64(&m, ZF_F_ATTEMPT, 2);
    zf_msg_set_str(&m, ZF_F_FN, "echo");
    zf_msg_set_u64(&m, ZF_F_DURATION, 1532);
    zf_msg_set_str(&m, ZF_F_TEXT, "attempt 1: worker host:4242:cpu:0 lost: no heartbeat");
    zf_msg_set_str(&m, ZF_F_WORKER, "host:4243:cpu:1");
    zf_msg_set_str(&m, ZF_F_DEVNAME, "cpu:1");
    emit("result", &m);

    zf_msg_init(&m, ZF_CMD_STATUS);
    zf_msg_set_u64(&m, ZF_F_TAG, tag + 2);
    zf_msg_set_u64(&m, ZF_F_ID, id);
    zf_msg_set_u64(&m, ZF_F_STATUS, ZF_ST_RUNNING);
    zf_msg_set_u64(&m, ZF_F_ATTEMPT, 1);
    zf_msg_set_str(&m, ZF_F_FN, "resize_image");
    zf_msg_set_progress(&m, 0.25);
    zf_msg_set_str(&m, ZF_F_TEXT, "decoding");
    zf_msg_set_str(&m, ZF_F_WORKER, "gpubox:77:gpu:0");
    zf_msg_set_str(&m, ZF_F_DEVNAME, "gpu:0");
    emit("status", &m);

    zf_msg_init(&m, ZF_CMD_PROGRESS);
    zf_msg_set_u64(&m, ZF_F_ID, id);
    zf_msg_set_u64(&m, ZF_F_TAG, tag);
    zf_msg_set_progress(&m, 0.5);
    zf_msg_set_str(&m, ZF_F_TEXT, "half way");
    emit("progress", &m);

    zf_msg_init(&m, ZF_CMD_REPLY);
    zf_msg_set_u64(&m, ZF_F_TAG, tag + 4);
    zf_msg_set_u64(&m, ZF_F_CODE, ZF_OK);
    zf_msg_set_str(&m, ZF_F_TEXT, "cancelled");
    emit("reply", &m);

    zf_msg_init(&m, ZF_CMD_PONG);
    zf_msg_set_u64(&m, ZF_F_TAG, 0);
    emit("pong", &m);

    zf_msg_init(&m, ZF_CMD_ERROR);
    zf_msg_set_u64(&m, ZF_F_TAG, 0);
    zf_msg_set_u64(&m, ZF_F_CODE, ZF_EUNKNOWN_JOB);
    zf_msg_set_str(&m, ZF_F_TEXT, "unknown job (never accepted, or its result expired)");
    emit("error", &m);

    /* ---- worker -> broker ---- */
    zf_msg_init(&m, ZF_CMD_READY);
    zf_msg_set_str(&m, ZF_F_WORKER, "host:4242:cpu:0");
    zf_msg_set_u64(&m, ZF_F_DEVICE, ZF_DEV_CPU);
    zf_msg_set_i32(&m, ZF_F_DEVINDEX, 0);
    zf_msg_set_str(&m, ZF_F_DEVNAME, "cpu:0");
    zf_msg_set_str(&m, ZF_F_TEXT, "Intel(R) Xeon(R) CPU core 0");
    zf_msg_set_u64(&m, ZF_F_DEVMEM, 0);
    zf_msg_set_u64(&m, ZF_F_CREDITS, 1);
    zf_msg_set_u64(&m, ZF_F_HEARTBEAT, 1000);
    zf_msg_add_function(&m, "echo");
    zf_msg_add_function(&m, "spin");
    emit("ready", &m);

    zf_msg_init(&m, ZF_CMD_DONE);
    zf_msg_set_u64(&m, ZF_F_ID, id);
    zf_msg_set_u64(&m, ZF_F_ATTEMPT, 1);
    zf_msg_set_u64(&m, ZF_F_DURATION, 20871);
    zf_msg_set_u64(&m, ZF_F_STATUS, ZF_ST_SUCCEEDED);
    emit("done", &m);

    zf_msg_init(&m, ZF_CMD_DONE);
    zf_msg_set_u64(&m, ZF_F_ID, id);
    zf_msg_set_u64(&m, ZF_F_ATTEMPT, 3);
    zf_msg_set_u64(&m, ZF_F_DURATION, 88);
    zf_msg_set_u64(&m, ZF_F_STATUS, ZF_ST_FAILED);
    zf_msg_set_str(&m, ZF_F_TEXT, "bad image header");
    emit("done_failed", &m);

    zf_msg_init(&m, ZF_CMD_WPROGRESS);
    zf_msg_set_u64(&m, ZF_F_ID, id);
    zf_msg_set_u64(&m, ZF_F_ATTEMPT, 1);
    zf_msg_set_progress(&m, 0.75);
    zf_msg_set_str(&m, ZF_F_TEXT, "encoding");
    emit("wprogress", &m);

    zf_msg_init(&m, ZF_CMD_HEARTBEAT);
    emit("heartbeat", &m);

    zf_msg_init(&m, ZF_CMD_BYE);
    emit("bye_draining", &m);

    zf_msg_init(&m, ZF_CMD_BYE);
    zf_msg_set_u64(&m, ZF_F_FLAGS, 1);
    emit("bye_now", &m);

    zf_msg_init(&m, ZF_CMD_RECALLED);
    zf_msg_set_u64(&m, ZF_F_ID, id);
    zf_msg_set_u64(&m, ZF_F_ATTEMPT, 2);
    emit("recalled", &m);

    zf_msg_init(&m, ZF_CMD_OBITUARY);
    zf_msg_set_str(&m, ZF_F_WORKER, "host:4242:cpu:0");
    zf_msg_set_str(&m, ZF_F_TEXT, "killed by signal 9");
    emit("obituary", &m);

    /* ---- broker -> worker ---- */
    zf_msg_init(&m, ZF_CMD_JOB);
    zf_msg_set_u64(&m, ZF_F_ID, id);
    zf_msg_set_u64(&m, ZF_F_ATTEMPT, 1);
    zf_msg_set_str(&m, ZF_F_FN, "spin");
    zf_msg_set_u64(&m, ZF_F_TIMEOUT, 30000);
    emit("job", &m);

    zf_msg_init(&m, ZF_CMD_WCANCEL);
    zf_msg_set_u64(&m, ZF_F_ID, id);
    zf_msg_set_u64(&m, ZF_F_ATTEMPT, 1);
    emit("wcancel", &m);

    zf_msg_init(&m, ZF_CMD_BHEARTBEAT);
    zf_msg_set_u64(&m, ZF_F_HEARTBEAT, 1000);
    emit("bheartbeat", &m);

    zf_msg_init(&m, ZF_CMD_RESET);
    zf_msg_set_u64(&m, ZF_F_HEARTBEAT, 1000);
    emit("reset", &m);

    zf_msg_init(&m, ZF_CMD_RECALL);
    zf_msg_set_u64(&m, ZF_F_ID, id);
    zf_msg_set_u64(&m, ZF_F_ATTEMPT, 1);
    emit("recall", &m);

    /* ---- edge cases ---- */
    /* the largest READY: 32 functions of 63 bytes, longest names and text */
    static char fnames[ZF_MAX_FUNCTIONS][ZF_FN_MAX + 1];
    static char longtext[ZF_TEXT_MAX + 1], longname[ZF_NAME_MAX + 1];
    memset(longtext, 't', ZF_TEXT_MAX);
    memset(longname, 'w', ZF_NAME_MAX);
    zf_msg_init(&m, ZF_CMD_READY);
    zf_msg_set_str(&m, ZF_F_WORKER, longname);
    zf_msg_set_u64(&m, ZF_F_DEVICE, ZF_DEV_GPU);
    zf_msg_set_i32(&m, ZF_F_DEVINDEX, 7);
    zf_msg_set_str(&m, ZF_F_DEVNAME, longname);
    zf_msg_set_str(&m, ZF_F_TEXT, longtext);
    zf_msg_set_u64(&m, ZF_F_DEVMEM, 80ull << 30);
    zf_msg_set_u64(&m, ZF_F_CREDITS, 256);
    zf_msg_set_u64(&m, ZF_F_HEARTBEAT, 250);
    for (int i = 0; i < ZF_MAX_FUNCTIONS; i++) {
        memset(fnames[i], 'a' + i % 26, ZF_FN_MAX);
        fnames[i][0] = (char)('0' + i % 10);
        zf_msg_add_function(&m, fnames[i]);
    }
    emit("ready_max", &m);

    /* every field at once, extreme values */
    zf_msg_init(&m, ZF_CMD_RESULT);
    zf_msg_set_u64(&m, ZF_F_ID, UINT64_MAX);
    zf_msg_set_u64(&m, ZF_F_ATTEMPT, UINT32_MAX);
    zf_msg_set_u64(&m, ZF_F_TAG, UINT64_MAX);
    zf_msg_set_str(&m, ZF_F_FN, fnames[0]);
    zf_msg_set_i32(&m, ZF_F_PRIORITY, INT32_MIN);
    zf_msg_set_u64(&m, ZF_F_TIMEOUT, UINT32_MAX);
    zf_msg_set_u64(&m, ZF_F_DEADLINE, UINT32_MAX);
    zf_msg_set_u64(&m, ZF_F_MAX_ATTEMPTS, 100);
    zf_msg_set_u64(&m, ZF_F_DEVICE, ZF_DEV_ANY);
    zf_msg_set_u64(&m, ZF_F_STATUS, ZF_ST_LOST);
    zf_msg_set_u64(&m, ZF_F_CODE, ZF_EINTERNAL);
    zf_msg_set_str(&m, ZF_F_TEXT, longtext);
    zf_msg_set_u64(&m, ZF_F_CREDITS, UINT32_MAX);
    zf_msg_set_u64(&m, ZF_F_DURATION, UINT64_MAX);
    zf_msg_set_str(&m, ZF_F_WORKER, longname);
    zf_msg_set_str(&m, ZF_F_DEVNAME, longname);
    zf_msg_set_progress(&m, 1.0);
    zf_msg_add_function(&m, "f");
    zf_msg_set_i32(&m, ZF_F_DEVINDEX, INT32_MAX);
    zf_msg_set_u64(&m, ZF_F_DEVMEM, UINT64_MAX);
    zf_msg_set_u64(&m, ZF_F_HEARTBEAT, UINT32_MAX);
    zf_msg_set_u64(&m, ZF_F_FLAGS, UINT32_MAX);
    zf_msg_set_u64(&m, ZF_F_QUEUED, UINT64_MAX);
    emit("all_fields_max", &m);

    /* hand-made: a future sender's header with keys this codec does not know (ignored),
       a float32 progress and a non-minimal integer; WPROGRESS {1: 7, 2: uint64 1,
       17: float32 0.5, 40: "x", 99: [nil, true]} */
    static const unsigned char future[] = {'Z',  'F',  1,    ZF_CMD_WPROGRESS,
                                           0x85, 0x01, 0x07, 0x02,
                                           0xcf, 0,    0,    0,
                                           0,    0,    0,    0,
                                           1,    0x11, 0xca, 0x3f,
                                           0x00, 0x00, 0x00, 0x28,
                                           0xa1, 'x',  0x63, 0x92,
                                           0xc0, 0xc3};
    zf_msg_t back;
    int err;
    if (zf_msg_decode(&back, future, sizeof future, &err, NULL) < 0 || back.attempt != 1 ||
        back.progress != 0.5 ||
        back.present != ((1u << ZF_F_ID) | (1u << ZF_F_ATTEMPT) | (1u << ZF_F_PROGRESS))) {
        fprintf(stderr, "make_corpus: the future-keys header does not decode as expected\n");
        return 1;
    }
    write_file("83_wprogress_future_keys.bin", future, sizeof future);

    printf("make_corpus: wrote %d files to %s\n", nfiles, dir);
    return 0;
}
