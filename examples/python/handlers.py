"""zfleet Python handlers: a NumPy Sobel filter and a model-like function.

    zfleet-worker --module examples/python/handlers.py
    zfleet submit sobel_np --file examples/sample.pgm --out edges.pgm --wait
    zfleet submit fingerprint "some bytes" --wait

The contract (docs/PYTHON.md): the module defines FUNCTIONS, a dict from function name to
fn(state, job); init(device) -> state runs once per worker process, after the device is
bound (a model loads there); fini(state) runs on a clean stop. job.data is a read-only
memoryview of the payload (no copy, valid during the call); job.progress(fraction, text)
reports progress; job.cancelled turns true when the job is cancelled. A function returns
bytes, a buffer (a contiguous NumPy array is sent without a copy), str or None; an
exception fails the job with its type, message and traceback tail.

Functions:

sobel_np    8-bit binary PGM (P5, maxval 255) in; the Sobel edge magnitude as a PGM of the
            same size out, bit-identical to the built-in C `sobel` (the rule is in
            worker/handlers/zf_image.h and docs/DEVICES.md): borders replicated,
            out = min(255, floor(sqrt(Gx^2 + Gy^2) + 1/2)) in integers only, as the largest
            m in 0..255 with m*(m-1) < Gx^2 + Gy^2. Bad input raises ValueError with one
            sentence, as the C function fails with one.
fingerprint any payload in; a JSON object out:
              {"vector": [8 floats], "init_calls": N, "pid": P, "jobs": J, "device": "cpu:0"}
            vector = the payload's byte histogram (as fractions) times an 8 x 256 "weight"
            matrix made once in init. init_calls counts init() calls in this process: it
            is 1 however many jobs the worker serves (one load per worker process); jobs
            counts the jobs this state has served.
"""
import json
import os

import numpy as np

ROWS_PER_STEP = 64          # progress and cancel checks every this many rows
MAX_DIM = 16384             # the C sobel's limit (ZF_PGM_MAX_DIM)
_WHITESPACE = b" \t\r\n\v\f"

INIT_CALLS = 0              # init() calls in this process


# ------------------------------------------------------------------ PGM

def _skip_separator(data, pos):
    """Skips whitespace and comments from pos: (new pos, whether any was there)."""
    seen = False
    while pos < len(data):
        c = data[pos]
        if c in _WHITESPACE:
            pos += 1
        elif c == 0x23:                                   # '#': a comment to the line end
            while pos < len(data) and data[pos] not in b"\r\n":
                pos += 1
        else:
            break
        seen = True
    return pos, seen


def _read_number(data, pos, what):
    pos, seen = _skip_separator(data, pos)
    if pos >= len(data):
        raise ValueError("bad PGM: the header ends before the %s" % what)
    if not seen or not 0x30 <= data[pos] <= 0x39:
        raise ValueError("bad PGM header: expected whitespace then the %s (a decimal number)"
                         % what)
    value = 0
    while pos < len(data) and 0x30 <= data[pos] <= 0x39:
        value = value * 10 + data[pos] - 0x30
        if value > 100000000:
            raise ValueError("bad PGM: %s is larger than 100000000" % what)
        pos += 1
    return value, pos


def parse_pgm(data):
    """(width, height, offset of the raster) of a P5 image in data (a bytes-like object),
    by the netpbm rules that the C zf_pgm_parse follows, with its messages: whitespace or
    '#' comments (to the end of the line) between the fields, exactly one whitespace
    character after the maxval. Raises ValueError with one sentence."""
    if len(data) < 2 or data[0] != 0x50:
        raise ValueError("not a PGM image: it does not start with the magic number P5")
    if data[1] != 0x35:
        c = chr(data[1]) if 0x21 <= data[1] < 0x7F else "?"
        raise ValueError("unsupported image format P%s: only binary 8-bit grayscale PGM (P5) "
                         "is accepted" % c)
    width, pos = _read_number(data, 2, "width")
    height, pos = _read_number(data, pos, "height")
    maxval, pos = _read_number(data, pos, "maxval")
    if width == 0 or height == 0:
        raise ValueError("bad PGM: the image is %dx%d (empty)" % (width, height))
    if width > MAX_DIM or height > MAX_DIM:
        raise ValueError("image too large: %dx%d exceeds the limit of %dx%d"
                         % (width, height, MAX_DIM, MAX_DIM))
    if maxval != 255:
        raise ValueError("unsupported PGM maxval %d: only 8-bit images (maxval 255) are "
                         "accepted" % maxval)
    if pos >= len(data) or data[pos] not in _WHITESPACE:
        raise ValueError("bad PGM header: the maxval must be followed by one whitespace "
                         "character")
    offset = pos + 1
    have = len(data) - offset
    if have < width * height:
        raise ValueError("truncated PGM: %dx%d needs %d bytes of pixels, got %d"
                         % (width, height, width * height, have))
    return width, height, offset


def pgm_header(width, height):
    return b"P5\n%d %d\n255\n" % (width, height)


# ------------------------------------------------------------------ Sobel

# _THRESHOLDS[m - 1] = m * (m - 1) for m in 1..255: the output for a squared magnitude s is
# how many of them are below s (the largest m with m*(m-1) < s, 0 when s is 0, at most 255)
_THRESHOLDS = np.array([m * (m - 1) for m in range(1, 256)], dtype=np.int64)


def sobel_rows(padded, y0, y1):
    """The Sobel output of rows y0..y1-1, from the edge-padded image (int32)."""
    p = padded[y0:y1 + 2]
    w = p.shape[1] - 2
    tl, tc, tr = p[:-2, :w], p[:-2, 1:w + 1], p[:-2, 2:]
    ml, mr = p[1:-1, :w], p[1:-1, 2:]
    bl, bc, br = p[2:, :w], p[2:, 1:w + 1], p[2:, 2:]
    gx = tr + 2 * mr + br - tl - 2 * ml - bl
    gy = bl + 2 * bc + br - tl - 2 * tc - tr
    s = gx * gx + gy * gy                       # at most 2 * 1020^2: fits in int32
    return np.searchsorted(_THRESHOLDS, s, side="left").astype(np.uint8)


def sobel_np(state, job):
    data = job.data
    if isinstance(data, memoryview) and data.format != "B":
        data = data.cast("B")                           # bytes, whatever the view's format
    width, height, offset = parse_pgm(data)
    pixels = np.frombuffer(data, dtype=np.uint8, count=width * height, offset=offset)
    padded = np.pad(pixels.reshape(height, width).astype(np.int32), 1, mode="edge")
    header = pgm_header(width, height)
    out = np.empty(len(header) + width * height, dtype=np.uint8)   # the output, as sent
    out[:len(header)] = np.frombuffer(header, dtype=np.uint8)
    raster = out[len(header):].reshape(height, width)
    for y0 in range(0, height, ROWS_PER_STEP):
        if job.cancelled:
            raise RuntimeError("sobel_np: cancelled")
        y1 = min(y0 + ROWS_PER_STEP, height)
        raster[y0:y1] = sobel_rows(padded, y0, y1)
        job.progress(y1 / height, "%d of %d rows" % (y1, height))
    return out


# ------------------------------------------------------------------ a model-like function

class Model:
    """Stands in for a loaded model: weights made once, reused by every job."""

    def __init__(self, device):
        rng = np.random.default_rng(20261202)   # a real model loads its checkpoint here
        self.weights = rng.standard_normal((8, 256))
        self.device = device.label
        self.jobs = 0


def fingerprint(state, job):
    counts = np.bincount(np.frombuffer(job.data, dtype=np.uint8), minlength=256)
    hist = counts / max(len(job.data), 1)
    state.jobs += 1
    return json.dumps({
        "vector": [round(float(v), 6) for v in state.weights @ hist],
        "init_calls": INIT_CALLS,
        "pid": os.getpid(),
        "jobs": state.jobs,
        "device": state.device,
    })


# ------------------------------------------------------------------ the module

def init(device):
    global INIT_CALLS
    INIT_CALLS += 1
    return Model(device)


def fini(state):
    state.weights = None


FUNCTIONS = {
    "sobel_np": sobel_np,
    "fingerprint": fingerprint,
}
