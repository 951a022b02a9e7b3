#!/usr/bin/python3
"""Checks the Python handler examples (examples/python/) against their contract: with a
fake device and fake jobs in this process, and for real, loaded by zfleet-worker.

    /usr/bin/python3 tests/py/run_examples.py BUILD_DIR

- handlers.py: sobel_np is bit-identical to the built-in C `sobel`, which it gets by
  running the real thing (zfleet-broker, zfleet-worker and the zfleet CLI from BUILD_DIR,
  on ipc:// endpoints): on examples/sample.pgm, tests/data/odd.pgm and random images of
  awkward sizes; and to the reference files in tests/data; bad inputs fail with the C
  function's own messages. fingerprint's weights are built once: init_calls is 1 across
  200 jobs, in this process and in another one.
- torch_handlers.py: torch_classify gives the same output twice, after a second init, and
  in another process.
- Through the real fleet (when zfleet-worker --version says it embeds Python): a broker
  (--no-journal, ipc://) and `zfleet-worker --fleet --cpus A,B --gpus none --module
  examples/python/handlers.py --module examples/python/torch_handlers.py` (2 workers; two
  plain worker processes when only one core is allowed). sobel_np submitted with the CLI
  is byte-identical to the C `sobel` from the same fleet, and to the in-process output;
  200 fingerprint jobs (Python client) run on both workers, each reporting init_calls 1
  and a job counter that counts exactly its own jobs; torch_classify gives the same
  output twice and the same as in this process (torch_handlers.py reads __file__ at import
  time, so its loading at all proves the loader sets it; the check says so when it fails).

The fake job follows the contract: data is a read-only memoryview of the payload;
progress(fraction, text=None); cancelled is a property. Prints one line per check and
`pyexamples: N passed, M failed`. Exits 0, 1 on a failure, or 77 (skipped) when NumPy or
PyTorch is missing or the worker was built without Python, after running what it can.
"""
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
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

def worker_embeds_python(build):
    r = subprocess.run([os.path.join(build, "worker", "zfleet-worker"), "--version"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
    return any(line.startswith(b"python ") and line[7:8].isdigit()
               for line in r.stdout.splitlines())


class Fleet:
    """A real broker (--no-journal) and workers from the build directory, on ipc://
    endpoints. Without modules: one CPU worker (the built-in C functions). With modules
    (Python files): 2 workers loading them all, through --fleet on two allowed cores, or as
    two worker processes when only one core is allowed."""

    WORKERS_WITH_MODULES = 2

    def __init__(self, build, tmp, modules=()):
        self.build, self.tmp = build, tmp
        self.clients, self.workers = "ipc://%s/c" % tmp, "ipc://%s/w" % tmp
        self.procs = []
        self.spawn("broker/zfleet-broker", "--no-journal", "--clients", self.clients,
                   "--workers", self.workers)
        margs = [a for m in modules for a in ("--module", m)]
        cores = sorted(os.sched_getaffinity(0))
        if not modules:
            self.nworkers = 1
            self.spawn("worker/zfleet-worker", "--broker", self.workers, "--device", "cpu")
        elif len(cores) >= 2:
            self.nworkers = self.WORKERS_WITH_MODULES
            self.spawn("worker/zfleet-worker", "--fleet", "--gpus", "none", "--cpus",
                       "%d,%d" % (cores[0], cores[1]), "--broker", self.workers, *margs)
        else:
            self.nworkers = self.WORKERS_WITH_MODULES
            for _ in range(self.nworkers):
                self.spawn("worker/zfleet-worker", "--broker", self.workers, "--device", "cpu",
                           *margs)
        try:
            self.wait_for_workers()
        except BaseException:
            self.stop()
            raise

    def spawn(self, binary, *args):
        log = open(self.log_path(binary), "ab")
        self.procs.append(subprocess.Popen([os.path.join(self.build, binary)] + list(args),
                                           stdout=log, stderr=subprocess.STDOUT,
                                           stdin=subprocess.DEVNULL))
        log.close()

    def log_path(self, binary):
        return os.path.join(self.tmp, os.path.basename(binary) + ".log")

    def logs(self):
        text = ""
        for name in ("zfleet-broker.log", "zfleet-worker.log"):
            try:
                with open(os.path.join(self.tmp, name), "rb") as f:
                    text += "--- %s\n%s" % (name, f.read()[-4000:].decode("utf-8", "replace"))
            except OSError:
                pass
        return text

    def cli(self, *args, timeout=60):
        return subprocess.run([os.path.join(self.build, "client", "zfleet"), "--broker",
                               self.clients, "--json"] + list(args),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)

    def wait_for_workers(self, seconds=90):
        """Until nworkers workers are registered (Python modules, PyTorch above all, take
        seconds to import)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for p in self.procs:
                if p.poll() is not None:
                    raise AssertionError("%s exited with %d\n%s"
                                         % (p.args[0], p.returncode, self.logs()))
            r = self.cli("workers", timeout=30)
            if r.returncode == 0 and len(json.loads(r.stdout or b"[]")) >= self.nworkers:
                return
            time.sleep(0.1)
        raise AssertionError("%d worker(s) did not register in %d s\n%s"
                             % (self.nworkers, seconds, self.logs()))

    def submit(self, function, payload):
        """(True, output) or (False, error text) of `zfleet submit FUNCTION --file`."""
        src, out = os.path.join(self.tmp, "in.bin"), os.path.join(self.tmp, "out.bin")
        with open(src, "wb") as f:
            f.write(payload)
        if os.path.exists(out):
            os.unlink(out)
        r = self.cli("submit", function, "--file", src, "--out", out, "--wait", "--timeout",
                     "30000")
        doc = json.loads(r.stdout or b"{}")
        if doc.get("status") == "succeeded":
            with open(out, "rb") as f:
                return True, f.read()
        check(doc.get("status") == "failed", "zfleet submit %s: rc %d, %r, %r\n%s"
              % (function, r.returncode, r.stdout, r.stderr, self.logs()))
        return False, doc["error"]

    def sobel(self, payload):
        """(True, output) or (False, error text) from the C `sobel`."""
        return self.submit("sobel", payload)

    def client(self):
        sys.path.insert(0, os.path.join(ROOT, "client", "python"))
        try:
            import zfleet
        finally:
            sys.path.pop(0)
        return zfleet.Client(self.clients, request_timeout=30)

    def stop(self):
        # SIGTERM: the fleet drains and stops its workers (a SIGKILLed fleet would leave
        # them to PR_SET_PDEATHSIG); then whatever is left is killed
        for p in reversed(self.procs):
            p.terminate()
        for p in reversed(self.procs):
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
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


# ------------------------------------------------------------------ on the real fleet
# (module, state, fleet) as above: the module and state are this process's, for comparing.

def t_fleet_sobel_np_is_bit_identical_to_the_c_sobel(hm, state, fleet):
    rng = random.Random(17)
    cases = [("sample.pgm", open(SAMPLE, "rb").read()),       # output > 64 KiB: zero copy
             ("odd.pgm", open(os.path.join(DATA, "odd.pgm"), "rb").read()),
             ("9x1", random_pgm(rng, 9, 1)), ("65x130", random_pgm(rng, 65, 130)),
             ("640x480", random_pgm(rng, 640, 480))]
    for name, img in cases:
        ok, c_out = fleet.submit("sobel", img)
        check(ok, "%s: the C sobel failed: %s" % (name, c_out))
        ok, py_out = fleet.submit("sobel_np", img)
        check(ok, "%s: sobel_np failed on the fleet: %s" % (name, py_out))
        check(py_out == c_out, "%s: sobel_np on the fleet differs from the C sobel (%d and %d "
              "bytes)" % (name, len(py_out), len(c_out)))
        here, _ = call(hm, state, "sobel_np", img, FakeDevice())
        check(py_out == here, "%s: sobel_np on the fleet differs from this process's" % name)
    want = open(os.path.join(DATA, "sample_sobel.pgm"), "rb").read()
    check(fleet.submit("sobel_np", cases[0][1]) == (True, want), "differs from sample_sobel.pgm")


def t_fleet_sobel_np_fails_bad_input_with_the_c_message(hm, state, fleet):
    for name, img in (("P6", b"P6\n1 1\n255\nx"), ("truncated", b"P5\n4 4\n255\n" + b"x" * 10)):
        ok, c_text = fleet.submit("sobel", img)
        check(not ok and c_text.startswith("sobel: "), "%s: C said %r" % (name, c_text))
        ok, text = fleet.submit("sobel_np", img)
        want = "ValueError: " + c_text[len("sobel: "):]
        check(not ok and text.startswith(want), "%s: %r, want it to start with %r"
              % (name, text, want))
        check("sobel_np" in text and "parse_pgm" in text, "%s: no traceback tail in %r"
              % (name, text))
    ok, out = fleet.submit("sobel_np", open(SAMPLE, "rb").read())
    check(ok, "the worker does not serve on after a failed job: %s" % out)


def t_fleet_fingerprint_inits_once_per_worker_process(hm, state, fleet):
    n = 200
    with fleet.client() as client:
        ids = client.submit_many("fingerprint", [b"payload %d" % (i % 2) for i in range(n)])
        results = list(client.results(ids, timeout=120))
    check(sorted(r.id for r in results) == sorted(ids), "results: not one per job")
    bad = [(r.status, r.error) for r in results if not r.ok]
    check(not bad, "%d of %d failed: %r" % (len(bad), n, bad[:3]))
    here, _ = call(hm, hm.init(FakeDevice()), "fingerprint", b"payload 0", FakeDevice())
    want, payload0 = json.loads(here)["vector"], set(ids[0::2])
    by_pid, workers = {}, {}
    for r in results:
        doc = json.loads(r.output)
        check(doc["init_calls"] == 1, "job %d on %s (pid %d): init_calls %r"
              % (r.id, r.worker, doc["pid"], doc["init_calls"]))
        check(doc["device"] == r.device, "job %d: state made for %r, ran on %r"
              % (r.id, doc["device"], r.device))
        if r.id in payload0:                # the same weights in every process
            check(doc["vector"] == want, "job %d on %s: other weights" % (r.id, r.worker))
        by_pid.setdefault(doc["pid"], []).append(doc["jobs"])
        workers.setdefault(r.worker, set()).add(doc["pid"])
    check(len(by_pid) == fleet.nworkers, "%d jobs ran in %d process(es), not the %d workers: %r"
          % (n, len(by_pid), fleet.nworkers, {p: len(j) for p, j in by_pid.items()}))
    check(all(len(p) == 1 for p in workers.values()) and len(workers) == fleet.nworkers,
          "workers and processes: %r" % workers)
    for pid, jobs in by_pid.items():
        # one state per process that counts every job the process served, and only those
        check(sorted(jobs) == list(range(1, len(jobs) + 1)), "pid %d: job counts %r"
              % (pid, sorted(jobs)))


def t_fleet_torch_classify_is_stable(tm, state, fleet):
    # torch_handlers.py runs os.path.abspath(__file__) at import: that the workers
    # registered with torch_classify at all shows the loader sets __file__
    img = open(SAMPLE, "rb").read()
    here, _ = call(tm, state, "torch_classify", img, FakeDevice())
    want = json.loads(here)
    outs = []
    for i in range(4):                      # 4 one at a time: both workers, most likely
        ok, out = fleet.submit("torch_classify", img)
        check(ok, "run %d failed: %s" % (i, out))
        outs.append(out)
    first = json.loads(outs[0])
    for i, out in enumerate(outs):
        doc = json.loads(out)
        check(doc["label"] in ("cpu:%d" % c for c in os.sched_getaffinity(0))
              or doc["label"] == "cpu", "run %d: label %r" % (i, doc["label"]))
        doc.pop("label")
        check(doc == {k: v for k, v in first.items() if k != "label"},
              "run %d differs from run 0:\n%s\n%s" % (i, outs[0], out))
    check({k: v for k, v in first.items() if k != "label"}
          == {k: v for k, v in want.items() if k != "label"},
          "the fleet's output differs from this process's:\n%s\n%s" % (outs[0], here))
    check(first["device"] == "cpu" and first["size"] == [256, 256], "%r" % first)


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
    try:
        import torch  # noqa: F401
        no_torch = None
    except ImportError:
        no_torch = "PyTorch is missing (scripts/setup installs python3-torch)"
    no_python = None
    if not worker_embeds_python(build):
        no_python = ("zfleet-worker was built without Python (python3-dev missing: "
                     "zfleet-worker --version)")
    modules = [] if no_python else [os.path.join(EXAMPLES, "handlers.py")] + (
        [] if no_torch else [os.path.join(EXAMPLES, "torch_handlers.py")])
    tmp = tempfile.mkdtemp(prefix="zf-pyex-")
    results = [0, 0]
    fleet = None
    try:
        fleet = Fleet(build, tmp, modules)
        run([t_sobel_np_matches_the_reference_files, t_sobel_np_is_bit_identical_to_the_c_sobel,
             t_sobel_np_fails_bad_input_with_the_c_message, t_sobel_np_stops_when_cancelled,
             t_fingerprint_loads_its_weights_once_per_process], load("handlers"), fleet,
            results)
        if not no_python:
            run([t_fleet_sobel_np_is_bit_identical_to_the_c_sobel,
                 t_fleet_sobel_np_fails_bad_input_with_the_c_message,
                 t_fleet_fingerprint_inits_once_per_worker_process], load("handlers"), fleet,
                results)
        if not no_torch:
            tests = [t_torch_classify_is_deterministic,
                     t_torch_classify_on_a_gpu_worker_without_cuda_stays_on_the_cpu]
            if not no_python:
                tests.append(t_fleet_torch_classify_is_stable)
            run(tests, load("torch_handlers"), fleet, results)
    except Exception:
        print("FAIL the fleet")
        traceback.print_exc(file=sys.stdout)
        results[1] += 1
    finally:
        if fleet:
            fleet.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print("pyexamples: %d passed, %d failed" % tuple(results))
    if results[1]:
        return 1
    for why in (no_torch, no_python):
        if why:
            print("pyexamples: SKIP: %s" % why)
    return SKIP if no_torch or no_python else 0


if __name__ == "__main__":
    sys.exit(main())
