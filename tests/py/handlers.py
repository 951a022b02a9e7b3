"""Python handlers for tests/test_pyhandlers.c (tests only: some crash the worker on purpose)."""
import ctypes
import os
import sys
import threading
import time

INITS = 0
kept = {}


def init(device):
    """Counts its calls (one per process is the contract) and starts a thread that ticks
    while no job runs, to show the GIL is released between jobs."""
    global INITS
    INITS += 1
    state = {"device": device, "ticks": 0}

    def tick():
        while True:
            state["ticks"] += 1
            time.sleep(0.001)

    threading.Thread(target=tick, daemon=True).start()
    print(f"handlers.py: init on {device.label}", flush=True)
    return state


def fini(state):
    print(f"handlers.py: fini after {state['ticks'] > 0 and 'ticks' or 'no ticks'}", flush=True)


def roundtrip(state, job):
    d = job.data
    if not isinstance(d, memoryview) or not d.readonly:
        raise TypeError(f"data is {type(d).__name__}, readonly={getattr(d, 'readonly', None)}")
    return d                                  # a buffer: sent back without a copy


def boom(state, job):
    raise ValueError("bad things: " + bytes(job.data).decode())


def permanent(state, job):
    """Raises zfleet.Permanent (the client package, from this checkout): not retried."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                    "client", "python"))
    import zfleet
    raise zfleet.Permanent("bad input: " + bytes(job.data).decode())


def progress(state, job):
    time.sleep(0.1)                            # reports in a job's first 50 ms are coalesced
    job.progress(0.5, "half way")
    time.sleep(0.3)
    return "done"


def wait_cancel(state, job):
    until = time.monotonic() + 20
    while not job.cancelled and time.monotonic() < until:
        time.sleep(0.01)
    return "cancelled" if job.cancelled else "not cancelled"


def spin_py(state, job):
    """Pure Python for N ms, never releasing the GIL on purpose."""
    until = time.monotonic() + int(bytes(job.data)) / 1000
    n = 0
    while time.monotonic() < until:
        n += 1
    return str(n)


def segv(state, job):
    ctypes.string_at(0)


def inits(state, job):
    return f"{os.getpid()}:{INITS}"


def ticks(state, job):
    return str(state["ticks"])


def info(state, job):
    d = job.device
    return (f"{job.id} {job.attempt} {job.function} {d.kind} {d.index} {d.cuda_index} {d.label} "
            f"{int(d.memory > 0)} {sys.prefix}")


def keep(state, job):
    """Keeps the job for the next call, which then uses it after its call ended."""
    old = kept.get("job")
    kept["job"] = job
    if old is None:
        return "kept"
    out = []
    for what, use in (("data", lambda: bytes(old.data)), ("progress", lambda: old.progress(1)),
                      ("cancelled", lambda: old.cancelled)):
        try:
            use()
            out.append(f"{what}: no error")
        except Exception as e:
            out.append(f"{what}: {type(e).__name__}")
    return "; ".join(out)


def types(state, job):
    """Each kind of return value, by the payload: the same 3 bytes 'abc' for all but none."""
    kind = bytes(job.data).decode()
    if kind == "bytes":
        return b"abc"
    if kind == "bytearray":
        return bytearray(b"abc")
    if kind == "str":
        return "abc"
    if kind == "none":
        return None
    if kind == "numpy":
        import numpy
        return numpy.frombuffer(b"abc", dtype=numpy.uint8).copy()
    if kind == "strided":
        import numpy
        return numpy.frombuffer(b"aXbXcX", dtype=numpy.uint8)[::2]
    if kind == "big":
        return bytes(range(256)) * 1024       # 256 KiB: over the no-copy threshold
    return 42                                  # not an output


def say(state, job):
    print("hello from a python handler", flush=True)
    return ""


FUNCTIONS = {
    "py_roundtrip": roundtrip, "py_boom": boom, "py_progress": progress,
    "py_wait_cancel": wait_cancel, "py_spin": spin_py, "py_segv": segv, "py_inits": inits,
    "py_ticks": ticks, "py_info": info, "py_keep": keep, "py_types": types, "py_say": say,
    "py_permanent": permanent,
}
