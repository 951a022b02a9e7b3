/*  A program of a zfleet user, built against an installed zfleet only (zfleet.h and
    libzfleet from `pkg-config --cflags --libs zfleet`): submits `echo` with argv[2] and
    prints the output. Exit 0 when the job succeeded with the same bytes back, else 1.
    Usage: client ENDPOINT TEXT */
#include <stdio.h>
#include <string.h>
#include <zfleet.h>

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: client ENDPOINT TEXT\n");
        return 2;
    }
    zf_client_t *c = zf_client_new(argv[1]);
    if (!c)
        return 1;
    uint64_t id;
    int rc = 1;
    if (zf_client_submit(c, "echo", argv[2], strlen(argv[2]), NULL, &id) < 0) {
        fprintf(stderr, "submit: %s\n", zf_client_error(c));
        goto out;
    }
    zf_event_t *ev = zf_client_wait(c, id, 10000);
    if (!ev) {
        fprintf(stderr, "wait: %s\n", zf_client_error(c));
        goto out;
    }
    printf("%s %.*s\n", zfleet_state_name(ev->status), (int)ev->output_len,
           (const char *)ev->output);
    if (ev->status == ZFLEET_SUCCEEDED && ev->output_len == strlen(argv[2]) &&
        !memcmp(ev->output, argv[2], ev->output_len))
        rc = 0;
    zf_event_destroy(&ev);
out:
    zf_client_destroy(&c);
    return rc;
}
