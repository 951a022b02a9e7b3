"""Python handlers for `zfleet bench` (bench/run loads this file when the worker embeds
Python): py_echo beside the C echo for throughput, np_5ms (NumPy work for 5 ms per job)
beside the C spin for efficiency.

np_5ms follows the C spin's contract, so that `zfleet bench efficiency --function np_5ms`
checks it as it checks spin: the payload is a decimal number of milliseconds (5 from
`--spin-ms 5`, whence the name), the handler computes for that long and returns the
payload. The work is 32 x 32 matrix products in NumPy, about 15 microseconds each here
(Debian's reference BLAS), with the clock read after each, so a job overshoots its time by
about half of one product: 64 x 64 ones (80 us each) made jobs 1.7 % long, which the
efficiency figure counted as lost.
"""
import time

import numpy


def init(device):
    return {"a": numpy.random.default_rng(0).random((32, 32))}


def py_echo(state, job):
    return job.data


def np_5ms(state, job):
    ms = int(bytes(job.data))           # ValueError (the job fails) when not a number
    a = state["a"]
    until = time.perf_counter() + ms / 1000.0
    while time.perf_counter() < until:
        a = a @ state["a"]
        a /= numpy.abs(a).max()
    return job.data


FUNCTIONS = {"py_echo": py_echo, "np_5ms": np_5ms}
