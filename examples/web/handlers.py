"""The web example's slow Python handler, so a page has progress to show.

    zfleet-worker --fleet --module examples/web/handlers.py

slow_sobel  8-bit binary PGM (P5) in, its Sobel edge magnitude PGM out, bit-identical to the
            built-in C `sobel` (it runs examples/python/handlers.py's NumPy sobel_np), after
            pretending to be a model for ZFWEB_SLOW_SECONDS (default 2) seconds in 20 steps,
            each reported with job.progress(). A bad file fails the job at once with the
            same one-sentence message as the C function ("not a PGM image: ...").
"""
import importlib.util
import os
import time

_spec = importlib.util.spec_from_file_location(
    "zf_numpy_handlers", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                      "python", "handlers.py"))
_np_handlers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_np_handlers)

STEPS = 20


class _Quiet:
    """The job as sobel_np sees it: its progress is ours, reported already."""

    def __init__(self, job):
        self.data = job.data
        self._job = job

    @property
    def cancelled(self):
        return self._job.cancelled

    def progress(self, fraction, text=None):
        pass


def slow_sobel(state, job):
    data = job.data
    if isinstance(data, memoryview) and data.format != "B":
        data = data.cast("B")
    _np_handlers.parse_pgm(data)              # a bad file fails now, not after the wait
    seconds = float(os.environ.get("ZFWEB_SLOW_SECONDS", "2"))
    for i in range(STEPS):
        if job.cancelled:
            raise RuntimeError("slow_sobel: cancelled")
        job.progress(i / STEPS, "thinking: step %d of %d" % (i + 1, STEPS))
        time.sleep(seconds / STEPS)
    job.progress(0.99, "filtering")
    return _np_handlers.sobel_np(None, _Quiet(job))


FUNCTIONS = {"slow_sobel": slow_sobel}
