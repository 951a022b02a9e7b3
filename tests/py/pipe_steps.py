"""Pipeline steps for tests/test_pipeline.c: each appends "+NAME@KIND" to its input (KIND: the
worker's device kind), so the output shows which steps ran, in which order, on what, and how
often. `fail` raises; `slow` appends after 1.5 s (a step to kill a worker during)."""
import time


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


FUNCTIONS = {"decode": decode, "infer": infer, "encode": encode, "slow": slow, "fail": fail}
