"""What the FastAPI app (app.py) and the Flask app (flask_app.py) share: the page, the
functions a page may run, how client errors become HTTP answers, Server-Sent Events framing,
and a PGM -> PNG encoder in pure Python (the browser shows PNG, the fleet speaks PGM).

Nothing here talks to the broker: each app does that with its own client (AsyncClient for
FastAPI, the threaded Client for Flask).
"""
import json
import os
import struct
import sys
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
# The client lives in client/python (one module, or a package once it is packaged).
sys.path.insert(0, os.path.join(HERE, "..", "..", "client", "python"))
import zfleet  # noqa: E402

# Functions a page may run: the built-in C `sobel`, and the slow Python one from
# handlers.py (progress over a couple of seconds), both 8-bit PGM in, PGM out.
FUNCTIONS = {"sobel": "sobel (built-in, C)", "slow_sobel": "slow_sobel (Python, with progress)"}
MAX_UPLOAD = 16 << 20
UNREACHABLE = "broker unreachable, retrying"


def page_html():
    with open(os.path.join(HERE, "index.html"), "rb") as f:
        return f.read()


def settings():
    """The apps' knobs, from the environment (examples/web/run and the test set them)."""
    return {
        "broker": os.environ.get("ZFLEET_BROKER") or None,
        "heartbeat": float(os.environ.get("ZFWEB_HEARTBEAT", "1.0")),
        "request_timeout": float(os.environ.get("ZFWEB_REQUEST_TIMEOUT", "2.0")),
    }


def submit_error(exc):
    """(HTTP status, JSON body) for an exception a submit raised. `retry` tells the page to
    submit again by itself (the broker is down or restarting); otherwise it shows `error`."""
    if isinstance(exc, zfleet.QueueFull):
        return 503, {"error": "queue full: the fleet has too much work waiting, try again "
                              "in a moment (%s)" % exc.message, "kind": "queue_full",
                     "retry": False}
    if isinstance(exc, zfleet.PayloadTooLarge):
        return 413, {"error": "file too large for the broker: %s" % exc.message,
                     "kind": "too_large", "retry": False}
    if isinstance(exc, zfleet.Unreachable):
        return 503, {"error": UNREACHABLE, "kind": "unreachable", "retry": True}
    if isinstance(exc, zfleet.Denied):
        return 500, {"error": "the broker refuses this app's key: %s" % exc,
                     "kind": "denied", "retry": False}
    if isinstance(exc, zfleet.BrokerError):
        return 400, {"error": "refused by the broker: %s" % exc, "kind": "rejected",
                     "retry": False}
    return 500, {"error": "%s: %s" % (type(exc).__name__, exc), "kind": "internal",
                 "retry": False}


def check_upload(fn, data):
    """None if (fn, data) may be submitted, else (HTTP status, JSON body)."""
    if fn not in FUNCTIONS:
        return 400, {"error": "unknown function %r: one of %s" % (fn, ", ".join(FUNCTIONS)),
                     "kind": "bad_request", "retry": False}
    if not data:
        return 400, {"error": "no file, or an empty one", "kind": "bad_request",
                     "retry": False}
    if len(data) > MAX_UPLOAD:
        return 413, {"error": "file too large: %d bytes, at most %d" % (len(data), MAX_UPLOAD),
                     "kind": "too_large", "retry": False}
    return None


def parse_job_id(text):
    """A job id from a URL or query (a decimal string), or None."""
    if not text or not text.isdigit() or len(text) > 20:
        return None
    v = int(text)
    return v if 0 < v < 1 << 64 else None


# ------------------------------------------------------------------ events

def sse(event, payload):
    """One Server-Sent Event (bytes). Job ids go to the page as strings."""
    return ("event: %s\ndata: %s\n\n" % (event, json.dumps(payload))).encode()


SSE_PING = b": ping\n\n"
SSE_PING_S = 15.0
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def progress_event(job_id, fraction, text):
    return "progress", {"id": str(job_id), "fraction": max(0.0, min(1.0, float(fraction))),
                        "text": text or ""}


def result_event(r):
    return "result", {"id": str(r.id), "status": r.status, "ok": bool(r.ok),
                      "error": r.error or "", "worker": r.worker or "",
                      "attempts": r.attempts, "function": r.function or "",
                      "url": "/jobs/%d/result" % r.id if r.ok else ""}


def broker_event(up):
    return "broker", {"up": bool(up), "message": "" if up else UNREACHABLE}


# ------------------------------------------------------------------ PGM -> PNG

def parse_pgm(data):
    """(width, height, pixels bytes) of an 8-bit binary PGM (P5), or ValueError."""
    data = bytes(data)
    if data[:2] != b"P5":
        raise ValueError("not a binary PGM")
    pos, fields = 2, []
    while len(fields) < 3:
        while pos < len(data) and (data[pos] in b" \t\r\n\v\f" or data[pos] == 0x23):
            if data[pos] == 0x23:
                while pos < len(data) and data[pos] not in b"\r\n":
                    pos += 1
            else:
                pos += 1
        start = pos
        while pos < len(data) and 0x30 <= data[pos] <= 0x39:
            pos += 1
        if start == pos:
            raise ValueError("bad PGM header")
        fields.append(int(data[start:pos]))
    width, height, maxval = fields
    if maxval != 255:
        raise ValueError("not an 8-bit PGM")
    pos += 1
    pixels = data[pos:pos + width * height]
    if len(pixels) != width * height:
        raise ValueError("truncated PGM")
    return width, height, pixels


def _chunk(kind, body):
    return (struct.pack(">I", len(body)) + kind + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))


def png_gray(width, height, pixels):
    """An 8-bit grayscale PNG of the given raster (filter 0 on every row)."""
    raw = b"".join(b"\0" + pixels[y * width:(y + 1) * width] for y in range(height))
    return (b"\x89PNG\r\n\x1a\n"
            + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + _chunk(b"IDAT", zlib.compress(raw, 6)) + _chunk(b"IEND", b""))


def pgm_to_png(data):
    return png_gray(*parse_pgm(data))
