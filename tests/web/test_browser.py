#!/usr/bin/python3
"""The web example (examples/web/) in a real browser: headless Chromium driven by Selenium,
against a real broker, a real fleet and the FastAPI app under uvicorn.

    /usr/bin/python3 tests/web/test_browser.py BUILD_DIR

- the page uploads examples/sample.pgm to the slow Python handler: its progress bar takes
  several values, and the result image's pixels (read back from a canvas) are
  tests/data/sample_sobel.pgm's;
- a file that is no image ends with the handler's own error on the page;
- kill -9 of the broker mid-job: the page says "broker unreachable, retrying"; the broker
  restarted on the same journal, the page drops the message and ends with the right image;
- 20 uploads at once (one page, one event stream) all end with the right image;
- a screenshot goes to BUILD_DIR/meson-logs/ (its path is printed);
- the Flask app (flask_app.py, the threaded Client) runs a job through its endpoints with
  plain HTTP (the event stream, the PNG and the PGM), and says "queue full" for a broker
  whose queue is full;
- the Python snippets of README.md (the client, the FastAPI app, the Flask app) run against
  the broker: the FastAPI one under uvicorn, the Flask one with Flask's test client.

Prints one line per check and `browser: N passed, M failed`. Exit 0, 1 on a failure, 77
(skipped) when Chromium, chromedriver or Selenium (or FastAPI, uvicorn, Flask) are missing,
or the worker embeds no Python (the slow handler is a Python one).
"""
import atexit
import base64
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.request
import uuid
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
BUILD = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build"))
BROKER = os.path.join(BUILD, "broker", "zfleet-broker")
WORKER = os.path.join(BUILD, "worker", "zfleet-worker")
WEB = os.path.join(ROOT, "examples", "web")
SAMPLE = os.path.join(ROOT, "examples", "sample.pgm")
REFERENCE = os.path.join(ROOT, "tests", "data", "sample_sobel.pgm")
PY = "/usr/bin/python3"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"

sys.path.insert(0, os.path.join(ROOT, "client", "python"))
sys.path.insert(0, WEB)


def skip(why):
    print("browser: skipped: %s" % why)
    sys.exit(77)


try:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
except ImportError:
    skip("python3-selenium is not installed")
if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
    skip("chromium or chromium-driver is not installed")
for mod in ("fastapi", "uvicorn", "flask", "multipart"):
    try:
        __import__(mod)
    except ImportError:
        skip("python3-%s is not installed" % mod)
_v = subprocess.run([WORKER, "--version"], capture_output=True, text=True)
if "python" not in _v.stdout.lower() or "embedded" not in _v.stdout.lower():
    skip("this zfleet-worker embeds no Python (the slow handler is a Python one)")

import zfleet  # noqa: E402
import zfweb  # noqa: E402

TMP = tempfile.mkdtemp(prefix="zf-web-")
PROCS = []
DRIVER = []


def cleanup():
    for d in DRIVER:
        try:
            d.quit()
        except Exception:  # noqa: BLE001
            pass
    DRIVER.clear()
    for p in PROCS:
        if p.poll() is None:
            p.kill()
    for p in PROCS:
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
    PROCS.clear()


def on_signal(signum, frame):
    cleanup()
    sys.exit(128 + signum)


atexit.register(cleanup)
signal.signal(signal.SIGTERM, on_signal)
signal.signal(signal.SIGINT, on_signal)


def spawn(args, log_name, env=None, cwd=None):
    log = open(os.path.join(TMP, log_name), "ab")
    e = dict(os.environ)
    e.update(env or {})
    p = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                         env=e, cwd=cwd)
    log.close()
    PROCS.append(p)
    return p


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def until(f, timeout, what, step=0.05):
    deadline = time.monotonic() + timeout
    while True:
        v = f()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.0fs: %s" % (timeout, what))
        time.sleep(step)


class Broker:
    def __init__(self, name, *extra):
        self.name = name
        self.clients = "ipc://%s/%s-c" % (TMP, name)
        self.workers = "ipc://%s/%s-w" % (TMP, name)
        self.extra = list(extra)
        self.start()

    def start(self):
        self.proc = spawn([BROKER, "--clients", self.clients, "--workers", self.workers,
                           "--heartbeat", "250"] + self.extra, self.name + ".log")
        with zfleet.Client(self.clients, request_timeout=1.0) as c:
            deadline = time.monotonic() + 10
            while True:
                try:
                    c.stats()
                    return
                except zfleet.Unreachable:
                    if time.monotonic() > deadline or self.proc.poll() is not None:
                        raise RuntimeError("broker %s did not come up" % self.name)

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def wait_workers(self, n, timeout=15.0):
        with zfleet.Client(self.clients) as c:
            until(lambda: len(c.stats()["workers"]) >= n, timeout, "%d worker(s)" % n)


def web_app(script, broker, name):
    port = free_port()
    p = spawn([PY, os.path.join(WEB, script), "--port", str(port)], name + ".log",
              env={"ZFLEET_BROKER": broker.clients, "ZFWEB_HEARTBEAT": "0.25",
                   "ZFWEB_SLOW_SECONDS": "2"})
    base = "http://127.0.0.1:%d" % port

    def up():
        if p.poll() is not None:
            raise RuntimeError("%s exited (%s): see %s" % (script, p.returncode,
                                                          os.path.join(TMP, name + ".log")))
        try:
            return urllib.request.urlopen(base + "/", timeout=1).status == 200
        except (urllib.error.URLError, ConnectionError, OSError):
            return False
    until(up, 20, "%s serving on %s" % (script, base), step=0.1)
    return base, p


def pgm_pixels(path):
    with open(path, "rb") as f:
        return zfweb.parse_pgm(f.read())


def png_pixels(data):
    """(width, height, pixels) of an 8-bit grayscale PNG with filter 0 rows (zfweb's)."""
    check(data[:8] == b"\x89PNG\r\n\x1a\n", "a PNG")
    pos, idat, w, h = 8, b"", None, None
    while pos < len(data):
        n = int.from_bytes(data[pos:pos + 4], "big")
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            w, h = int.from_bytes(body[:4], "big"), int.from_bytes(body[4:8], "big")
            check(body[8:10] == b"\x08\x00", "8-bit grayscale")
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    raw = zlib.decompress(idat)
    rows = [raw[y * (w + 1):(y + 1) * (w + 1)] for y in range(h)]
    check(all(r[0] == 0 for r in rows), "filter 0 rows")
    return w, h, b"".join(r[1:] for r in rows)


# ------------------------------------------------------------------ the browser

def browser():
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
              "--window-size=1280,1000", "--no-first-run", "--disable-extensions",
              "--force-color-profile=srgb"):
        opts.add_argument(a)
    d = webdriver.Chrome(service=Service(CHROMEDRIVER, log_path=os.path.join(TMP, "driver.log")),
                         options=opts)
    DRIVER.append(d)
    return d


JS_PIXELS = """
const img = arguments[0];
const c = document.createElement('canvas');
c.width = img.naturalWidth; c.height = img.naturalHeight;
const ctx = c.getContext('2d');
ctx.drawImage(img, 0, 0);
const d = ctx.getImageData(0, 0, c.width, c.height).data;
let s = '', grey = true;
for (let i = 0; i < d.length; i += 4) {
  s += String.fromCharCode(d[i]);
  if (d[i] !== d[i + 1] || d[i] !== d[i + 2] || d[i + 3] !== 255) grey = false;
}
return [c.width, c.height, btoa(s), grey];
"""

JS_COMPARE_ALL = """
const ref = atob(arguments[0]), ids = arguments[1], out = {};
for (const id of ids) {
  const img = document.querySelector('li[data-id="' + id + '"] img');
  if (!img || !img.complete || !img.naturalWidth) { out[id] = -1; continue; }
  const c = document.createElement('canvas');
  c.width = img.naturalWidth; c.height = img.naturalHeight;
  const ctx = c.getContext('2d');
  ctx.drawImage(img, 0, 0);
  const d = ctx.getImageData(0, 0, c.width, c.height).data;
  let bad = d.length / 4 === ref.length ? 0 : ref.length;
  for (let i = 0; bad === 0 && i < ref.length; i++)
    if (d[4 * i] !== ref.charCodeAt(i)) bad++;
  out[id] = bad;
}
return out;
"""


class Page:
    def __init__(self, driver, base):
        self.d = driver
        # counts the EventSources the page opens (before any of its scripts run)
        self.d.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": (
            "window.__streams = 0; const ES = window.EventSource;"
            "window.EventSource = function (u, o) { window.__streams++; return new ES(u, o); };")})
        self.d.get(base + "/")
        until(lambda: self.js("return window.zfweb && window.zfweb.page"), 10, "the page runs")

    def js(self, code, *args):
        return self.d.execute_script(code, *args)

    def cards(self):
        return self.js("return document.querySelectorAll('#jobs li').length")

    def upload(self, path, fn, copies=1):
        """Uploads and returns the new cards' job ids (strings), once all have one."""
        before = self.cards()
        self.js("document.getElementById('file').value = '';"
                "document.getElementById('fn').value = arguments[0];"
                "document.getElementById('copies').value = arguments[1];", fn, str(copies))
        self.d.find_element(By.ID, "file").send_keys(path)
        self.d.find_element(By.ID, "go").click()
        until(lambda: self.cards() == before + copies, 10, "%d new card(s)" % copies)
        return until(lambda: self.js(
            "const l = [...document.querySelectorAll('#jobs li')].slice(0, arguments[0]);"
            "return l.every(li => li.dataset.id || li.dataset.status) ? "
            "l.map(li => li.dataset.id || null) : null;", copies), 30, "job ids")

    def card(self, job_id, what):
        return self.js("const li = document.querySelector('li[data-id=\"' + arguments[0] + '\"]');"
                       "if (!li) return null;"
                       "const p = li.querySelector('progress');"
                       "return {status: li.dataset.status || '', loaded: li.dataset.loaded === '1',"
                       " text: li.querySelector('.status').textContent,"
                       " progress: p ? p.value : null}[arguments[1]];", job_id, what)

    def wait_done(self, job_id, timeout=20):
        until(lambda: self.card(job_id, "status") in ("succeeded", "failed", "refused", "unknown")
              and (self.card(job_id, "status") != "succeeded" or self.card(job_id, "loaded")),
              timeout, "job %s finished on the page" % job_id)
        return self.card(job_id, "status")

    def pixels(self, job_id):
        img = self.d.find_element(By.CSS_SELECTOR, 'li[data-id="%s"] img' % job_id)
        w, h, b64, grey = self.js(JS_PIXELS, img)
        return w, h, base64.b64decode(b64), grey

    def banner(self):
        return self.js("const b = document.getElementById('broker');"
                       "return b.hidden ? '' : b.textContent;")


def check_image(page, job_id, ref):
    w, h, px, grey = page.pixels(job_id)
    check((w, h) == ref[:2], "result is %dx%d, the reference %dx%d" % (w, h, ref[0], ref[1]))
    check(grey, "the result image is grey (R = G = B, opaque)")
    bad = sum(1 for a, b in zip(px, ref[2]) if a != b)
    check(bad == 0, "%d of %d pixels differ from tests/data/sample_sobel.pgm" % (bad, len(px)))


# ------------------------------------------------------------------ checks

def t_progress_and_pixels(page, main, ref):
    (jid,) = page.upload(SAMPLE, "slow_sobel")
    check(jid and jid.isdigit(), "the id is a decimal string: %r" % jid)
    seen = set()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        v = page.card(jid, "progress")
        if v is not None:
            seen.add(round(v, 3))
        if page.card(jid, "status") == "succeeded":
            break
        time.sleep(0.05)
    check(page.wait_done(jid) == "succeeded", "slow_sobel succeeded: %s" % page.card(jid, "text"))
    between = sorted(v for v in seen if 0 < v < 1)
    check(len(between) >= 3, "the progress bar took 3 or more values in (0, 1): %s" % sorted(seen))
    events = page.js("return window.zfweb.jobs[arguments[0]].progress", jid)
    check(len(events) >= 5 and events == sorted(events),
          "progress events arrived in order: %s" % events)
    check_image(page, jid, ref)
    return "bar took %d values %s..%s, %d progress events, pixels equal" % (
        len(between), between[0], between[-1], len(events))


def t_bad_file(page, main, ref):
    bad = os.path.join(TMP, "notes.txt")
    with open(bad, "w") as f:
        f.write("this is not an image\n")
    (jid,) = page.upload(bad, "sobel")
    check(page.wait_done(jid) == "failed", "the job failed")
    text = page.card(jid, "text")
    check("not a PGM image" in text, "the page shows the handler's error: %r" % text)
    check(not page.js("return !!document.querySelector('li[data-id=\"%s\"] img')" % jid),
          "no image for a failed job")
    return repr(text)


def t_broker_kill9_mid_job(page, main, ref):
    (jid,) = page.upload(SAMPLE, "slow_sobel")
    until(lambda: (page.card(jid, "progress") or 0) >= 0.2, 15, "the job is running")
    main.kill9()
    t0 = time.monotonic()
    until(lambda: "broker unreachable" in page.banner(), 10, "the page says the broker is down")
    shown = time.monotonic() - t0
    check(page.card(jid, "status") not in ("succeeded", "failed"), "the job is not over yet")
    # an upload while the broker is down: the page retries it, saying why
    n = page.cards()
    page.js("document.getElementById('file').value = '';"
            "document.getElementById('fn').value = 'sobel';"
            "document.getElementById('copies').value = '1';")
    page.d.find_element(By.ID, "file").send_keys(SAMPLE)
    page.d.find_element(By.ID, "go").click()
    until(lambda: page.cards() == n + 1, 5, "a card for the upload")
    first = "const li = document.querySelector('#jobs li');"
    until(lambda: "broker unreachable, retrying" in page.js(
        first + "return li.querySelector('.status').textContent"), 10,
        "the upload's card says the broker is unreachable")
    screenshot(page, "browser-broker-down.png")
    # down past the client's unreachable_after (5 s): the app's watch raises Unreachable
    # and is begun again
    time.sleep(max(0.0, t0 + 6.0 - time.monotonic()))
    check(page.card(jid, "status") not in ("succeeded", "failed"), "the job is not over yet")
    main.start()                       # same --data: the job is in the journal
    check(page.wait_done(jid, timeout=30) == "succeeded",
          "the job ended well after the restart: %s" % page.card(jid, "text"))
    check_image(page, jid, ref)
    late = until(lambda: page.js(first + "return li.dataset.id"), 15,
                 "the upload retried during the outage got an id")
    check(page.wait_done(late) == "succeeded", "the upload retried during the outage succeeded")
    check_image(page, late, ref)
    until(lambda: page.banner() == "", 10, "the message went away")
    with open(os.path.join(TMP, "fastapi.log")) as f:
        log = f.read()
    check("job %s: " % jid in log and "watching again" in log,
          "the app's watch gave up on the gone broker and began again: %s" % log[-1000:])
    return ("message after %.1fs; right image after the restart (%s); the upload made "
            "during the outage ran too" % (shown, page.card(jid, "text")))


def t_twenty_at_once(page, main, ref):
    t0 = time.monotonic()
    ids = page.upload(SAMPLE, "sobel", copies=20)
    check(len(ids) == 20 and all(ids) and len(set(ids)) == 20, "20 distinct ids: %s" % ids)
    for jid in ids:
        check(page.wait_done(jid, timeout=30) == "succeeded",
              "job %s: %s" % (jid, page.card(jid, "text")))
    elapsed = time.monotonic() - t0
    bad = page.js(JS_COMPARE_ALL, base64.b64encode(ref[2]).decode(), ids)
    check(all(v == 0 for v in bad.values()), "every image equals the reference: %s" % bad)
    streams = page.js("return window.__streams")
    check(streams == 1, "one event stream for the page: %d" % streams)
    return "20 images right in %.1fs over %d event stream" % (elapsed, streams)


def screenshot(page, name):
    logs = os.path.join(BUILD, "meson-logs")
    os.makedirs(logs, exist_ok=True)
    path = os.path.join(logs, name)
    check(page.d.save_screenshot(path), "screenshot saved")
    check(os.path.getsize(path) > 10000, "a screenshot with something on it")
    print("browser: screenshot: %s" % path)
    return path


def t_screenshot(page, main, ref):
    return screenshot(page, "browser-screenshot.png")


def multipart(fields, files):
    b = "zfweb%s" % uuid.uuid4().hex
    parts = []
    for k, v in fields.items():
        parts.append(('--%s\r\nContent-Disposition: form-data; name="%s"\r\n\r\n%s\r\n'
                      % (b, k, v)).encode())
    for k, (name, data) in files.items():
        parts.append(('--%s\r\nContent-Disposition: form-data; name="%s"; filename="%s"\r\n'
                      'Content-Type: application/octet-stream\r\n\r\n' % (b, k, name)).encode()
                     + data + b"\r\n")
    return b"".join(parts) + ("--%s--\r\n" % b).encode(), "multipart/form-data; boundary=" + b


def post_job(base, fn, data, page):
    body, ctype = multipart({"fn": fn, "page": page}, {"file": ("sample.pgm", data)})
    req = urllib.request.Request(base + "/jobs", body, {"Content-Type": ctype})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def read_events(base, page, until_result, timeout=20):
    """Reads the page's event stream until a result for until_result: [(event, data)]."""
    host, port = base[len("http://"):].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    conn.request("GET", "/events?page=" + page)
    r = conn.getresponse()
    check(r.status == 200 and r.getheader("Content-Type", "").startswith("text/event-stream"),
          "an event stream: %s %s" % (r.status, r.getheader("Content-Type")))
    out, event = [], None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = r.fp.readline().decode().rstrip("\n")
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            d = json.loads(line[6:])
            out.append((event, d))
            if event == "result" and d["id"] == until_result:
                conn.close()
                return out
    conn.close()
    raise AssertionError("no result event for %s: %s" % (until_result, out))


def t_flask(page, main, ref):
    small = Broker("small", "--no-journal", "--max-queued", "2")
    spawn([WORKER, "--broker", small.workers, "--heartbeat", "250", "--device", "cpu",
           "--module", os.path.join(WEB, "handlers.py")], "small-worker.log")
    small.wait_workers(1)
    base, _ = web_app("flask_app.py", small, "flask")
    html = urllib.request.urlopen(base + "/", timeout=5).read()
    check(b"EventSource" in html, "the page is served")
    token = uuid.uuid4().hex
    with open(SAMPLE, "rb") as f:
        sample = f.read()
    status, body = post_job(base, "sobel", sample, token)
    check(status == 200 and isinstance(body.get("id"), str) and body["id"].isdigit(),
          "POST /jobs: 200 and an id string: %s %s" % (status, body))
    events = read_events(base, token, body["id"])
    res = [d for e, d in events if e == "result"][-1]
    check(res["ok"] and res["status"] == "succeeded", "succeeded: %s" % res)
    with urllib.request.urlopen(base + res["url"], timeout=5) as r:
        check(r.getheader("Content-Type") == "image/png", "a PNG")
        w, h, px = png_pixels(r.read())
    check((w, h, px) == ref, "the PNG's pixels are the reference's")
    with urllib.request.urlopen(base + res["url"] + "?format=pgm", timeout=5) as r:
        with open(REFERENCE, "rb") as f:
            check(r.read() == f.read(), "the PGM is the reference file, byte for byte")
    # the event stream carries the slow handler's progress too
    status, body = post_job(base, "slow_sobel", sample, token)
    check(status == 200, "slow job accepted: %s" % body)
    events = read_events(base, token, body["id"])
    prog = [d["fraction"] for e, d in events if e == "progress" and d["id"] == body["id"]]
    check(len(prog) >= 5, "progress events on the stream: %s" % prog)
    # a full queue: 1 worker busy with a 2 s job, 2 queued at most
    answers = [post_job(base, "slow_sobel", sample, token) for _ in range(5)]
    full = [b for s, b in answers if s == 503]
    check(full and all(b["kind"] == "queue_full" and "queue full" in b["error"]
                       and b["retry"] is False for b in full),
          "queue full said so: %s" % answers)
    status, body = post_job(base, "nosuch", sample, token)
    check(status == 400 and "unknown function" in body["error"], "unknown fn: %s" % body)
    # the same page served by Flask, in the browser: the full queue is said on the page
    fpage = Page(page.d, base)
    fpage.upload(SAMPLE, "slow_sobel", copies=4)
    texts = fpage.js("return [...document.querySelectorAll('#jobs li.refused .status')]"
                     ".map(e => e.textContent)")
    check(texts and all(t.startswith("queue full") for t in texts),
          "the page says queue full: %s" % texts)
    return ("job through the endpoints, PNG + PGM right, %d progress events, %d of 5 queue "
            "full; on the page: %d of 4 queue full" % (len(prog), len(full), len(texts)))


def t_gunicorn_preload(page, main, ref):
    """The Flask app under gunicorn --preload with 2 processes: the Client made at import, in
    the master, before the fork, works in both children (it reconnects there); jobs posted to
    either process are fetched from either (GET /jobs/ID/result asks the broker)."""
    gunicorn = shutil.which("gunicorn")
    if not gunicorn:
        return "skipped: gunicorn is not installed"
    port = free_port()
    p = spawn([gunicorn, "--preload", "-w", "2", "-k", "gthread", "--threads", "8",
               "-b", "127.0.0.1:%d" % port, "flask_app:app"], "gunicorn.log", cwd=WEB,
              env={"ZFLEET_BROKER": main.clients, "ZFWEB_HEARTBEAT": "0.25"})
    base = "http://127.0.0.1:%d" % port

    def up():
        check(p.poll() is None, "gunicorn exited (%s): see gunicorn.log" % p.returncode)
        try:
            return urllib.request.urlopen(base + "/", timeout=1).status == 200
        except (urllib.error.URLError, ConnectionError, OSError):
            return False
    until(up, 20, "gunicorn serving on %s" % base, step=0.1)
    with open(SAMPLE, "rb") as f:
        sample = f.read()
    ids, errors = [], []

    def one():
        try:
            status, body = post_job(base, "sobel", sample, uuid.uuid4().hex)
            check(status == 200, "POST /jobs: %s %s" % (status, body))
            ids.append(body["id"])
        except Exception as e:  # noqa: BLE001
            errors.append(e)
    threads = [threading.Thread(target=one) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    check(not errors and len(ids) == 12, "12 jobs posted: %s" % errors)

    def fetched(job_id):
        try:
            with urllib.request.urlopen(base + "/jobs/%s/result" % job_id, timeout=5) as r:
                return png_pixels(r.read())
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return None
            raise
    for job_id in ids:
        px = until(lambda: fetched(job_id), 20, "job %s's result through gunicorn" % job_id)
        check(px == ref, "job %s: the reference pixels" % job_id)
    with open(os.path.join(TMP, "gunicorn.log"), "rb") as f:
        log = f.read().decode(errors="replace")
    booted = log.count("Booting worker")
    check(booted == 2 and "Traceback" not in log, "2 workers booted, no traceback: %s" % log[-800:])
    p.terminate()
    p.wait(10)
    return "12 jobs through 2 preloaded gunicorn workers, pixels right"


def readme_snippets():
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    return re.findall(r"```python\n(.*?)```", text, re.S)


def t_readme_snippets(page, main, ref):
    blocks = readme_snippets()
    client = [b for b in blocks if "zfleet.Client" in b and "Flask" not in b]
    fast = [b for b in blocks if "FastAPI" in b]
    flask = [b for b in blocks if "Flask(" in b]
    check(len(client) == 1 and len(fast) == 1 and len(flask) == 1,
          "README.md has a client, a FastAPI and a Flask snippet: %d %d %d"
          % (len(client), len(fast), len(flask)))
    env = {"ZFLEET_BROKER": main.clients,
           "PYTHONPATH": os.path.join(ROOT, "client", "python")}
    e = dict(os.environ, **env)
    r = subprocess.run([PY, "-c", client[0]], cwd=ROOT, env=e, capture_output=True, text=True,
                       timeout=30)
    check(r.returncode == 0 and "succeeded" in r.stdout,
          "the client snippet runs: %s %s" % (r.stdout, r.stderr))
    with open(os.path.join(TMP, "readme_fastapi.py"), "w") as f:
        f.write(fast[0])
    with open(os.path.join(TMP, "readme_flask.py"), "w") as f:
        f.write(flask[0])
    with open(SAMPLE, "rb") as f:
        sample = f.read()
    with open(REFERENCE, "rb") as f:
        expected = f.read()
    # FastAPI under uvicorn (its startup event must run: Debian's FastAPI 0.92)
    port = free_port()
    p = spawn([PY, "-m", "uvicorn", "readme_fastapi:app", "--port", str(port)],
              "readme-fastapi.log", env=env, cwd=TMP)
    url = "http://127.0.0.1:%d" % port

    def answer():
        if p.poll() is not None:
            raise AssertionError("uvicorn readme_fastapi:app exited")
        try:
            with urllib.request.urlopen(urllib.request.Request(url + "/edges", sample),
                                        timeout=10) as resp:
                return resp.read()
        except (urllib.error.URLError, ConnectionError):
            return None
    out = until(answer, 20, "the README's FastAPI app answers", step=0.2)
    check(out == expected, "the FastAPI snippet returns the edges")
    req = urllib.request.Request(url + "/edges", b"not an image")
    try:
        urllib.request.urlopen(req, timeout=10)
        check(False, "a bad file is refused")
    except urllib.error.HTTPError as err:
        msg = err.read().decode()
        check(err.code == 422 and "not a PGM image" in msg, "422 + the error: %s" % msg)
    p.terminate()
    # Flask with its test client (a real broker behind it)
    code = ("import readme_flask, sys\n"
            "c = readme_flask.app.test_client()\n"
            "r = c.post('/edges', data=open(sys.argv[1], 'rb').read())\n"
            "assert r.status_code == 200, r.status_code\n"
            "assert r.data == open(sys.argv[2], 'rb').read()\n"
            "r = c.post('/edges', data=b'nope')\n"
            "assert r.status_code == 422 and b'not a PGM image' in r.data, r.data\n"
            "print('flask ok')\n")
    r = subprocess.run([PY, "-c", code, SAMPLE, REFERENCE], cwd=TMP, env=e,
                       capture_output=True, text=True, timeout=30)
    check(r.returncode == 0 and "flask ok" in r.stdout,
          "the Flask snippet works: %s %s" % (r.stdout, r.stderr[-2000:]))
    return "client, FastAPI (uvicorn) and Flask snippets ran"


def main():
    t_start = time.monotonic()
    ref = pgm_pixels(REFERENCE)
    cores = sorted(os.sched_getaffinity(0))[:2]
    main_broker = Broker("main", "--data", os.path.join(TMP, "data"))
    spawn([WORKER, "--fleet", "--gpus", "none", "--cpus", ",".join(map(str, cores)),
           "--broker", main_broker.workers, "--heartbeat", "250",
           "--module", os.path.join(WEB, "handlers.py")], "fleet.log")
    main_broker.wait_workers(len(cores))
    base, _ = web_app("app.py", main_broker, "fastapi")
    page = Page(browser(), base)
    passed = failed = 0
    tests = [t_progress_and_pixels, t_bad_file, t_broker_kill9_mid_job, t_twenty_at_once,
             t_screenshot, t_flask, t_gunicorn_preload, t_readme_snippets]
    only = sys.argv[2:]
    for t in tests:
        if only and not any(o in t.__name__ for o in only):
            continue
        t0 = time.monotonic()
        try:
            note = t(page, main_broker, ref)
            passed += 1
            print("ok   %-28s %5.1fs  %s" % (t.__name__[2:], time.monotonic() - t0, note))
        except Exception as e:  # noqa: BLE001
            failed += 1
            print("FAIL %-28s %5.1fs  %s" % (t.__name__[2:], time.monotonic() - t0, e))
            traceback.print_exc()
            if t is not t_screenshot:
                try:
                    t_screenshot(page, main_broker, ref)
                except Exception:  # noqa: BLE001
                    pass
        sys.stdout.flush()
    cleanup()
    if failed:
        print("browser: logs kept in %s" % TMP)
        for name in sorted(os.listdir(TMP)):
            if name.endswith(".log"):
                with open(os.path.join(TMP, name), "rb") as f:
                    tail = f.read()[-1500:].decode(errors="replace")
                print("---- %s\n%s" % (name, tail))
    else:
        shutil.rmtree(TMP, ignore_errors=True)
    print("browser: %d passed, %d failed (%.1fs)" % (passed, failed, time.monotonic() - t_start))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
