/*  zf_bench — `zfleet bench`: throughput, latency, efficiency, bigpayload and backlog
    workloads against a running broker and workers, through the client API only (the
    idle-fleet workload, which simulates workers, is bench/idle_fleet.c). */
#ifndef ZF_BENCH_H
#define ZF_BENCH_H

/* argv[0] is "bench". ep: broker client endpoint or NULL; json: print one JSON document.
   Returns 0 when the run completed with zero errors, 1 when errors were counted, 2 on
   usage errors, 4 when the broker is unreachable. */
int zf_bench_main(int argc, char **argv, const char *ep, int json);

#endif
