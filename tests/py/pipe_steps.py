"""Pipeline steps for tests/test_pipeline.c: each appends "+NAME@KIND" to its input (KIND: the
worker's device kind), so the output shows which steps ran, in which order, on what, and how
often. `fail` raises; `slow` appends after 1.5 s (a step to kill a worker during); `flaky`
fails the first two times it runs for a job; `prog` reports progress 0.5 before it appends."""
import time

_flaky_runs = {}


def init(device):
    return device.kind


def _step(name):
    def run(kind, job):
        return bytes(job.data) + ("+%s@%s" % (name, kind)).encode()
    return run


decode = _step("decode")
infer = _step("infer")
encode = _step("encode")


def slow(kind, job):
    time.sleep(1.5)
    return bytes(job.data) + ("+slow@%s" % kind).encode()


def fail(kind, job):
    raise ValueError("bad frame in step fail")


def flaky(kind, job):
    runs = _flaky_runs[job.id] = _flaky_runs.get(job.id, 0) + 1
    if runs <= 2:
        raise RuntimeError("flaky run %d" % runs)
    return bytes(job.data) + ("+flaky@%s" % kind).encode()


def prog(kind, job):
    time.sleep(0.1)  # (the worker sends no progress in a run's first 50 ms)
    job.progress(0.5, "halfway")
    time.sleep(0.3)
    return bytes(job.data) + ("+prog@%s" % kind).encode()


FUNCTIONS = {"decode": decode, "infer": infer, "encode": encode, "slow": slow, "fail": fail,
             "flaky": flaky, "prog": prog}
