/*  `zfleet bench` checks what it measures: a worker that corrupts results makes `errors`
    non-zero and the exit status 1; an honest echo run reports no errors and exits 0. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "harness.h"

TestSuite(bench, .fini = zt_kill_all);

/* The number after "key": in a one-line JSON object, or -1 when the key is absent. */
static double field(const char *json, const char *key)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = strstr(json, pat);
    return p ? strtod(p + strlen(pat), NULL) : -1;
}

static void start(zt_env_t *env)
{
    zt_fleet_t up = {.hb_ms = 200,
                     .workers = 1,
                     .worker_args = ZT_ARGS("--module", zt_path("tests/zf_testmod.so"))};
    zt_fleet_up(env, &up);
}

Test(bench, corrupted_results_are_counted_as_errors)
{
    setenv("ZF_TEST_CORRUPT_EVERY", "50", 1); /* read by the worker's `corrupt` handler */
    zt_env_t env;
    start(&env);
    char out[4096];
    int rc = zt_cli(&env, out, sizeof out, "bench", "throughput", "--function", "corrupt", "--jobs",
                    "1000", "--inflight", "64", "--json", NULL);
    cr_assert_eq(rc, 1, "exit %d, output: %s", rc, out);
    /* one worker flips the first byte of every 50th result: exactly 20 of 1000 */
    cr_assert_eq(field(out, "mismatched"), 20, "%s", out);
    cr_assert_eq(field(out, "errors"), 20, "%s", out);
    cr_assert_eq(field(out, "results"), 1000, "%s", out);
    cr_assert_eq(field(out, "missing"), 0, "%s", out);
}

Test(bench, honest_echo_run_reports_no_errors)
{
    zt_env_t env;
    start(&env);
    char out[4096];
    int rc = zt_cli(&env, out, sizeof out, "bench", "throughput", "--jobs", "1000", "--json", NULL);
    cr_assert_eq(rc, 0, "exit %d, output: %s", rc, out);
    cr_assert_eq(field(out, "errors"), 0, "%s", out);
    cr_assert_eq(field(out, "results"), 1000, "%s", out);
    cr_assert_gt(field(out, "jobs_per_s"), 0, "%s", out);
}

Test(bench, latency_and_efficiency_report_their_figures)
{
    zt_env_t env;
    start(&env);
    char out[4096];
    int rc = zt_cli(&env, out, sizeof out, "bench", "latency", "--jobs", "50", "--warmup", "5",
                    "--json", NULL);
    cr_assert_eq(rc, 0, "exit %d, output: %s", rc, out);
    double p50 = field(out, "p50_us"), p99 = field(out, "p99_us"), max = field(out, "max_us");
    cr_assert(p50 > 0 && p50 <= field(out, "p90_us") && p99 <= max, "%s", out);
    cr_assert_eq(field(out, "errors"), 0, "%s", out);
    rc = zt_cli(&env, out, sizeof out, "--json", "bench", "efficiency", "--jobs", "20", "--spin-ms",
                "2", "--workers", "1", NULL);
    cr_assert_eq(rc, 0, "exit %d, output: %s", rc, out);
    double eff = field(out, "efficiency");
    cr_assert(eff > 0 && eff <= 1.05, "%s", out);
    cr_assert_eq(field(out, "results"), 20, "%s", out);
}

/* --forget: every result is checked as usual, and the broker keeps none of them. */
Test(bench, forget_run_leaves_no_results_in_the_broker)
{
    zt_env_t env;
    start(&env);
    char out[4096];
    int rc = zt_cli(&env, out, sizeof out, "bench", "bigpayload", "--forget", "--jobs", "20",
                    "--payload", "4096", "--json", NULL);
    cr_assert_eq(rc, 0, "exit %d, output: %s", rc, out);
    cr_assert_eq(field(out, "forget"), 1, "%s", out);
    cr_assert_eq(field(out, "results"), 20, "%s", out);
    cr_assert_eq(field(out, "errors"), 0, "%s", out);
    cr_assert_eq(zt_broker_counter(&env, "forgotten"), 20);
    cr_assert_eq(zt_broker_counter(&env, "results_kept"), 0);
}

/* --no-ack: the broker sends no ACCEPTED, every result still arrives once and intact. */
Test(bench, no_ack_runs_report_no_errors)
{
    zt_env_t env;
    start(&env);
    const char *workloads[] = {"latency", "throughput"};
    for (int i = 0; i < 2; i++) {
        char out[4096];
        int rc = zt_cli(&env, out, sizeof out, "bench", workloads[i], "--no-ack", "--jobs", "50",
                        "--json", NULL);
        cr_assert_eq(rc, 0, "%s: exit %d, output: %s", workloads[i], rc, out);
        cr_assert_eq(field(out, "no_ack"), 1, "%s", out);
        cr_assert_eq(field(out, "errors"), 0, "%s", out);
    }
    cr_assert_geq(zt_broker_counter(&env, "accepted"), 100);
}

/* --run-timeout: every job carries it to the worker. Jobs within it report no errors; a job
   past it is timed out by the worker, which then leaves with code 3 (as it does on a run
   timeout), and the run counts the job that never came back. */
Test(bench, run_timeout_reaches_every_job)
{
    zt_env_t env;
    zt_fleet_t up = {.hb_ms = 200,
                     .workers = 1,
                     .worker_args = ZT_ARGS("--module", zt_path("tests/zf_testmod.so"))};
    zt_fleet_up(&env, &up);
    char out[4096];
    int rc = zt_cli(&env, out, sizeof out, "bench", "efficiency", "--jobs", "20", "--spin-ms", "2",
                    "--workers", "1", "--run-timeout", "5000", "--json", NULL);
    cr_assert_eq(rc, 0, "exit %d, output: %s", rc, out);
    cr_assert_eq(field(out, "run_timeout_ms"), 5000, "%s", out);
    cr_assert_eq(field(out, "errors"), 0, "%s", out);
    rc = zt_cli(&env, out, sizeof out, "bench", "efficiency", "--function", "hang", "--jobs", "1",
                "--spin-ms", "20000", "--workers", "1", "--run-timeout", "200", "--stall-ms",
                "3000", "--json", NULL);
    cr_assert_eq(rc, 1, "exit %d, output: %s", rc, out);
    cr_assert_eq(field(out, "missing"), 1, "%s", out);
    int status = zt_wait_exit(up.worker[0], 5000);
    cr_assert(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 3,
              "the worker did not time the job out (status %d)", status);
    cr_assert_eq(zt_cli(&env, NULL, 0, "bench", "efficiency", "--run-timeout", "0", NULL), 2);
}

Test(bench, usage_errors_exit_2_and_an_absent_broker_exits_4)
{
    zt_env_t env;
    zt_env_init(&env);
    cr_assert_eq(zt_cli(&env, NULL, 0, "bench", "nosuch", NULL), 2);
    cr_assert_eq(zt_cli(&env, NULL, 0, "bench", "throughput", "--jobs", "x", NULL), 2);
    cr_assert_eq(zt_cli(&env, NULL, 0, "bench", "throughput", "--jobs", "10", NULL), 4);
}

/* The idle-fleet workload is its own program (bench/idle_fleet.c: it speaks the worker
   protocol, which the CLI does not): its simulated workers all register, none is reset or
   sent a job, and the broker's CPU is reported. */
Test(bench, idle_fleet_program_registers_every_simulated_worker, .timeout = 120)
{
    zt_env_t env;
    zt_env_init(&env);
    pid_t broker = zt_broker(&env, 200, NULL);
    char pid[16], log[160], out[8192];
    snprintf(pid, sizeof pid, "%d", (int)broker);
    snprintf(log, sizeof log, "%s/idle-fleet.out", env.dir);
    const char *args[] = {"--broker",    env.client_ep, "--worker-endpoint", env.worker_ep,
                          "--fleet",     "20",          "--seconds",         "1",
                          "--heartbeat", "200",         "--broker-pid",      pid,
                          "--json",      NULL};
    pid_t p = zt_spawn("bench/zfleet-idle-fleet", log, args);
    int st = zt_wait_exit(p, 90000);
    zt_read_file(log, out, sizeof out);
    cr_assert(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "status %d, output: %s", st, out);
    cr_assert_eq(field(out, "registered"), 20, "%s", out);
    cr_assert_eq(field(out, "errors"), 0, "%s", out);
    cr_assert_eq(field(out, "resets"), 0, "%s", out);
    cr_assert_geq(field(out, "broker_cpu_pct"), 0, "%s", out);
    /* the CLI names the program instead of running it */
    char err[512];
    cr_assert_eq(zt_cli_err(&env, NULL, 0, err, sizeof err, "bench", "idle-fleet", NULL), 2);
    cr_assert(strstr(err, "zfleet-idle-fleet"), "%s", err);
}
