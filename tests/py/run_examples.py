#!/usr/bin/python3
"""Checks the Python handler examples (examples/python/) against their contract, with a
fake device and fake jobs, until the worker that embeds Python runs them for real.

    /usr/bin/python3 tests/py/run_examples.py BUILD_DIR

- handlers.py: sobel_np is bit-identical to the built-in C `sobel`, which it gets by
  running the real thing (zfleet-broker, zfleet-worker and the zfleet CLI from BUILD_DIR,
  on ipc:// endpoints): on examples/sample.pgm, tests/data/odd.pgm and random images of
  awkward sizes; and to the reference files in tests/data; bad inputs fail with the C
  function's own messages. fingerprint's weights are built once: init_calls is 1 across
  200 jobs, in this process and in another one.
- torch_handlers.py: torch_classify gives the same output twice, after a second init, and
  in another process.

The fake job follows the contract: data is a read-only memoryview of the payload;
progress(fraction, text=None); cancelled is a property. Prints one line per check and
`pyexamples: N passed, M failed`. Exits 0, 1 on a failure, or 77 (skipped) when NumPy or
PyTorch is missing, after running what it can.
"""
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
EXAMPLES = os.path.join(ROOT, "examples", "python")
SAMPLE = os.path.join(ROOT, "examples", "sample.pgm")
DATA = os.path.join(ROOT, "tests", "data")
SKIP = 77


# ------------------------------------------------------------------ fake device and job

class FakeDevice:
    def __init__(self, kind="cpu", index=0):
        self.kind, self.index = kind, index
        self.label = "%s:%d" % (kind, index)
        self.name = "fake %s (tests)" % kind
        self.memory = 1 << 30


class FakeJob:
    def __init__(self, payload, function, device, cancel_after=None):
        self.data = memoryview(payload).toreadonly()
        self.id, self.attempt, self.function, self.device = 1, 1, function, device
        self.reports = []
        self._cancel_after = cancel_after       # progress reports before cancelled turns true

    def progress(self, fraction, text=None):
        self.reports.append((fraction, text))

    @property
    def cancelled(self):
        return self._cancel_after is not None and len(self.reports) >= self._cancel_after


def output_bytes(result):
    """A handler's return value as the worker would send it."""
    if result is None:
        return b""
    if isinstance(result, str):
        return result.encode("utf-8")
    return memoryview(result).tobytes()


def call(module, state, function, payload, device, **kw):
    job = FakeJob(payload, function, device, **kw)
    return output_bytes(module.FUNCTIONS[function](state, job)), job


def load(name):
    sys.path.insert(0, EXAMPLES)
    try:
        return __import__(name)
    finally:
        sys.path.remove(EXAMPLES)


def check(cond, what):
    if not cond:
        raise AssertionError(what)


# ------------------------------------------------------------------ the built-in C sobel

class CFleet:
    """A real broker and CPU worker from the build directory, on ipc:// endpoints."""

    def __init__(self, build, tmp):
        self.build, self.tmp = build, tmp
        self.clients, workers = "ipc://%s/c" % tmp, "ipc://%s/w" % tmp
        self.procs = []
        self.spawn("broker/zfleet-broker", "--clients", self.clients, "--workers", workers)
        self.spawn("worker/zfleet-worker", "--broker", workers, "--device", "cpu")

    def spawn(self, binary, *args):
        log = open(os.path.join(self.tmp, os.path.basename(binary) + ".log"), "ab")
        self.procs.append(subprocess.Popen([os.path.join(self.build, binary)] + list(args),
                                           stdout=log, stderr=subprocess.STDOUT,
                                           stdin=subprocess.DEVNULL))
        log.close()

    def sobel(self, payload):
        """(True, output) or (False, error text) from the C `sobel`."""
        src, out = os.path.join(self.tmp, "in.pgm"), os.path.join(self.tmp, "out.pgm")
        with open(src, "wb") as f:
            f.write(payload)
        if os.path.exists(out):
            os.unlink(out)
        r = subprocess.run([os.path.join(self.build, "client", "zfleet"), "--broker",
                            self.clients, "--json", "submit", "sobel", "--file", src, "--out",
                            out, "--wait", "--timeout", "30000"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
        doc = json.loads(r.stdout or b"{}")
        if doc.get("status") == "succeeded":
            with open(out, "rb") as f:
                return True, f.read()
        check(doc.get("status") == "failed", "zfleet submit sobel: rc %d, %r, %r"
              % (r.returncode, r.stdout, r.stderr))
        return False, doc["error"]

    def stop(self):
        for p in self.procs:
            p.kill()
        for p in self.procs:
            p.wait()


def random_pgm(rng, w, h, header=None):
    px = bytes(rng.choice((0, 255, rng.randrange(256))) for _ in range(w * h))
    return (header or b"P5\n%d %d\n255\n" % (w, h)) + px


# ------------------------------------------------------------------ handlers.py

def t_sobel_np_matches_the_reference_files(hm, state, fleet):
    for src, ref in (("sample.pgm", "sample_sobel.pgm"), ("odd.pgm", "odd_sobel.pgm")):
        path = SAMPLE if src == "sample.pgm" else os.path.join(DATA, src)
        out, _ = call(hm, state, "sobel_np", open(path, "rb").read(), FakeDevice())
        want = open(os.path.join(DATA, ref), "rb").read()
        check(out == want, "%s: differs from tests/data/%s" % (src, ref))


def t_sobel_np_is_bit_identical_to_the_c_sobel(hm, state, fleet):
    rng = random.Random(11)
    cases = [("sample.pgm", open(SAMPLE, "rb").read()),
             ("odd.pgm", open(os.path.join(DATA, "odd.pgm"), "rb").read())]
    for w, h in ((1, 1), (1, 7), (9, 1), (2, 2), (65, 130), (300, 3)):
        cases.append(("%dx%d" % (w, h), random_pgm(rng, w, h)))
    cases.append(("comments", random_pgm(rng, 5, 4, b"P5#c\n5#w\t\n4 #h\r255\n")))
    cases.append(("trailing bytes", random_pgm(rng, 4, 4) + b"extra"))
    for name, img in cases:
        ok, c_out = fleet.sobel(img)
        check(ok, "%s: the C sobel failed: %s" % (name, c_out))
        out, job = call(hm, state, "sobel_np", img, FakeDevice())
        check(out == c_out, "%s: sobel_np differs from the C sobel" % name)
        check(job.reports and job.reports[-1][0] == 1.0, "%s: progress ends at 1" % name)


def t_sobel_np_fails_bad_input_with_the_c_message(hm, state, fleet):
    bad = {"P6": b"P6\n1 1\n255\nx", "empty": b"", "no magic": b"hello",
           "maxval": b"P5\n1 1\n65535\nxx", "truncated": b"P5\n4 4\n255\n" + b"x" * 10,
           "too large": b"P5\n20000 2\n255\n", "zero": b"P5\n0 5\n255\n",
           "no separator": b"P5\n2 2\n255x1234", "header ends": b"P5\n2 ",
           "junk": b"P5\n2 z\n255\n1234", "huge": b"P5\n123456789012 1\n255\n"}
    for name, img in bad.items():
        ok, text = fleet.sobel(img)
        check(not ok and text.startswith("sobel: "), "%s: C said %r" % (name, text))
        try:
            call(hm, state, "sobel_np", img, FakeDevice())
        except ValueError as e:
            check(str(e) == text[len("sobel: "):], "%s: %r, C says %r" % (name, str(e), text))
        else:
            raise AssertionError("%s: sobel_np accepted it" % name)


def t_sobel_np_stops_when_cancelled(hm, state, fleet):
    img = random_pgm(random.Random(3), 50, 200)
    try:
        call(hm, state, "sobel_np", img, FakeDevice(), cancel_after=1)
    except RuntimeError as e:
        check("cancelled" in str(e), "message: %s" % e)
    else:
        raise AssertionError("a cancelled sobel_np ran to the end")


def t_fingerprint_loads_its_weights_once_per_process(hm, state, fleet):
    first = None
    for i in range(200):
        out, _ = call(hm, state, "fingerprint", b"payload %d" % (i % 2), FakeDevice())
        doc = json.loads(out)
        check(doc["init_calls"] == 1, "job %d: init_calls %r" % (i, doc["init_calls"]))
        check(doc["pid"] == os.getpid() and doc["jobs"] == i + 1, "job %d: %r" % (i, doc))
        check(doc["device"] == "cpu:0" and len(doc["vector"]) == 8, "job %d: %r" % (i, doc))
        if i == 0:
            first = doc["vector"]
        elif i % 2 == 0:
            check(doc["vector"] == first, "job %d: same payload, another vector" % i)
    check(hm.INIT_CALLS == 1, "init ran %d times" % hm.INIT_CALLS)
    # another process loads its own weights, once, and they are the same weights
    other = json.loads(child("fingerprint"))
    check(other["init_calls"] == 1 and other["pid"] != os.getpid(), "other: %r" % other)
    check(other["vector"] == first, "another process made other weights")


# ------------------------------------------------------------------ torch_handlers.py

def t_torch_classify_is_deterministic(tm, state, fleet):
    img = open(SAMPLE, "rb").read()
    a, job = call(tm, state, "torch_classify", img, FakeDevice())
    b, _ = call(tm, state, "torch_classify", img, FakeDevice())
    check(a == b, "two runs differ:\n%s\n%s" % (a, b))
    doc = json.loads(a)
    check(list(doc) == ["classes", "probabilities", "top", "size", "device", "label"],
          "keys: %r" % list(doc))
    check(len(doc["probabilities"]) == 4 and abs(sum(doc["probabilities"]) - 1) < 1e-4,
          "probabilities: %r" % doc["probabilities"])
    check(doc["top"] in doc["classes"] and doc["size"] == [256, 256], "%r" % doc)
    check(doc["device"] == "cpu" and doc["label"] == "cpu:0", "%r" % doc)
    check(job.reports and job.reports[-1][0] == 1.0, "progress ends at 1")
    again, _ = call(tm, tm.init(FakeDevice()), "torch_classify", img, FakeDevice())
    check(again == a, "a second init (same seed) gives another model")
    check(child("torch") == a.decode(), "another process gives another output")
    other = random_pgm(random.Random(5), 40, 30)
    c, _ = call(tm, state, "torch_classify", other, FakeDevice())
    check(json.loads(c)["probabilities"] != doc["probabilities"], "the input does not matter")


def t_torch_classify_on_a_gpu_worker_without_cuda_stays_on_the_cpu(tm, state, fleet):
    import torch
    gpu = FakeDevice("gpu", 1)
    out, _ = call(tm, tm.init(gpu), "torch_classify", open(SAMPLE, "rb").read(), gpu)
    doc = json.loads(out)
    want = "cuda:0" if torch.cuda.is_available() else "cpu"
    check(doc["device"] == want and doc["label"] == "gpu:1", "%r" % doc)


# ------------------------------------------------------------------ running

def child(what):
    """Runs this script in another process for one output (see main)."""
    r = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", what],
                       stdout=subprocess.PIPE, check=True, timeout=120)
    return r.stdout.decode()


def run_child(what):
    img = open(SAMPLE, "rb").read()
    if what == "fingerprint":
        hm = load("handlers")
        out, _ = call(hm, hm.init(FakeDevice()), "fingerprint", b"payload 0", FakeDevice())
    else:
        tm = load("torch_handlers")
        out, _ = call(tm, tm.init(FakeDevice()), "torch_classify", img, FakeDevice())
    sys.stdout.write(out.decode())


def run(tests, module, fleet, results):
    state = module.init(FakeDevice())
    for t in tests:
        try:
            t(module, state, fleet)
            print("ok   %s" % t.__name__[2:])
            results[0] += 1
        except Exception:
            print("FAIL %s" % t.__name__[2:])
            traceback.print_exc(file=sys.stdout)
            results[1] += 1
    if hasattr(module, "fini"):
        module.fini(state)


def main():
    if sys.argv[1:2] == ["--child"]:
        return run_child(sys.argv[2])
    build = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build"))
    try:
        import numpy  # noqa: F401
    except ImportError:
        print("pyexamples: SKIP: NumPy is missing (scripts/setup installs python3-numpy)")
        return SKIP
    tmp = tempfile.mkdtemp(prefix="zf-pyex-")
    fleet = CFleet(build, tmp)
    results = [0, 0]
    skipped = None
    try:
        run([t_sobel_np_matches_the_reference_files, t_sobel_np_is_bit_identical_to_the_c_sobel,
             t_sobel_np_fails_bad_input_with_the_c_message, t_sobel_np_stops_when_cancelled,
             t_fingerprint_loads_its_weights_once_per_process], load("handlers"), fleet,
            results)
        try:
            import torch  # noqa: F401
        except ImportError:
            skipped = "PyTorch is missing (scripts/setup installs python3-torch)"
        if not skipped:
            run([t_torch_classify_is_deterministic,
                 t_torch_classify_on_a_gpu_worker_without_cuda_stays_on_the_cpu],
                load("torch_handlers"), fleet, results)
    finally:
        fleet.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print("pyexamples: %d passed, %d failed" % tuple(results))
    if results[1]:
        return 1
    if skipped:
        print("pyexamples: SKIP the PyTorch checks: %s" % skipped)
        return SKIP
    return 0


if __name__ == "__main__":
    sys.exit(main())
