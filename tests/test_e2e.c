/*  End to end with real processes: broker + workers + clients over ipc:// sockets. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

Test(e2e, echo_round_trip_through_broker_and_worker)
{
    zt_env_t env;
    zt_env_init(&env);
    zt_broker(&env, 200, NULL);
    zt_worker(&env, 200, NULL);
    cr_assert(zt_wait_workers(&env, 1, 5000));
    zf_client_t *c = zt_client(&env);
    uint64_t id;
    cr_assert_eq(zf_client_submit(c, "echo", "hello", 5, NULL, &id), 0, "%s", zf_client_error(c));
    zf_event_t *r = zf_client_wait(c, id, 5000);
    cr_assert_not_null(r, "%s", zf_client_error(c));
    cr_assert_eq(r->status, ZFLEET_SUCCEEDED);
    cr_assert_eq(r->output_len, 5);
    cr_assert(memcmp(r->output, "hello", 5) == 0);
    cr_assert_eq(r->attempts, 1);
    cr_assert_str_eq(r->function, "echo");
    cr_assert(strlen(r->worker) > 0 && strlen(r->device) > 0);
    zf_event_destroy(&r);
    zf_client_destroy(&c);
    zt_kill_all();
}
