"""Python handlers for `zfleet bench` (bench/run loads this file when the worker embeds
Python): py_echo beside the C echo for throughput, np_5ms (5 ms of NumPy per job) for
efficiency."""
import time

import numpy


def init(device):
    return {"a": numpy.random.default_rng(0).random((64, 64))}


def py_echo(state, job):
    return job.data


def np_5ms(state, job):
    a = state["a"]
    until = time.perf_counter() + 0.005
    while time.perf_counter() < until:
        a = a @ state["a"]
        a /= numpy.abs(a).max()
    return b""


FUNCTIONS = {"py_echo": py_echo, "np_5ms": np_5ms}
