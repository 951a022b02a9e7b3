"""The web example on Flask and the threaded zfleet.Client: the endpoints and the page of
app.py (see its docstring), served by threads instead of an event loop.

    ZFLEET_BROKER=tcp://127.0.0.1:5555 /usr/bin/python3 examples/web/flask_app.py --port 8000
    cd examples/web && gunicorn -k gthread --threads 32 -b 127.0.0.1:8000 flask_app:app

One Client is shared by every thread (it is made for that), and survives gunicorn's fork:
the threads this module starts (one per followed job, iterating zf.watch(id), and one
broker monitor) are started on first use in each process. Each open event stream holds one
server thread, so give the server more threads than pages you expect (gthread --threads).

A page's event stream lives in the process that follows its jobs: with several gunicorn
processes (-w N) a page's POST /jobs and its GET /events may land on different processes, so
run one process with many threads (as above), or route a page to one process (sticky
sessions). GET /jobs/ID/result works from any process (it asks the broker); the tests run
it under `gunicorn --preload -w 2`.
"""
import os
import queue
import sys
import threading
import time

from flask import Flask, Response, jsonify, request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import zfweb  # noqa: E402
from zfweb import zfleet  # noqa: E402

PAGE_QUEUE = 2000
PAGE_IDLE_S = 300


class Page:
    def __init__(self):
        self.queue = queue.Queue()
        self.seen = time.monotonic()
        self.streams = 0

    def put(self, event):
        while self.queue.qsize() >= PAGE_QUEUE:
            try:
                self.queue.get_nowait()
            except queue.Empty:
                break
        self.queue.put(event)


class Hub:
    def __init__(self):
        self.lock = threading.Lock()
        self.pages = {}
        self.followers = {}
        self.broker_up = True
        self.pid = None

    def page(self, token):
        with self.lock:
            p = self.pages.get(token)
            if p is None:
                now = time.monotonic()
                for t, old in list(self.pages.items()):
                    if old.streams == 0 and now - old.seen > PAGE_IDLE_S:
                        del self.pages[t]
                p = self.pages[token] = Page()
            p.seen = time.monotonic()
            return p

    def follow(self, job_id, token):
        with self.lock:
            self.followers.setdefault(job_id, set()).add(token)

    def to_job(self, job_id, event, done=False):
        with self.lock:
            pages = [self.pages.get(t) for t in self.followers.get(job_id, ())]
            if done:
                self.followers.pop(job_id, None)
        for p in pages:
            if p is not None:
                p.put(event)

    def to_all(self, event):
        with self.lock:
            pages = list(self.pages.values())
        for p in pages:
            p.put(event)


hub = Hub()
S = zfweb.settings()
zf = zfleet.Client(S["broker"], request_timeout=S["request_timeout"], heartbeat=S["heartbeat"])
app = Flask(__name__)


def follow(job_id):
    while True:
        try:
            for ev in zf.watch(job_id):             # Progress reports, then the Result
                if isinstance(ev, zfleet.Result):
                    hub.to_job(job_id, zfweb.result_event(ev), done=True)
                    return
                hub.to_job(job_id, zfweb.progress_event(job_id, ev.fraction, ev.text))
            return
        except zfleet.Unreachable as e:
            app.logger.warning("zfweb: job %d: %s; watching again", job_id, e)
            time.sleep(1.0)
        except zfleet.UnknownJob:
            hub.to_job(job_id, ("result", {"id": str(job_id), "status": "unknown", "ok": False,
                                           "url": "", "error": "the broker does not know "
                                                               "this job"}), done=True)
            return


def monitor():
    probe = zfleet.Client(S["broker"], request_timeout=1.0, heartbeat=S["heartbeat"])
    while True:
        try:
            probe.stats()
            up = True
        except zfleet.Unreachable:
            up = False
        except zfleet.Error:
            up = True
        if up != hub.broker_up:
            hub.broker_up = up
            app.logger.warning("zfweb: broker %s", "is back" if up else "unreachable")
            hub.to_all(zfweb.broker_event(up))
        time.sleep(1.0 if up else 0.25)


def start_threads():
    """The monitor, once per process (after a gunicorn fork too)."""
    with hub.lock:
        if hub.pid == os.getpid():
            return
        hub.pid = os.getpid()
    threading.Thread(target=monitor, name="zfweb-monitor", daemon=True).start()


@app.get("/")
def index():
    start_threads()
    return Response(zfweb.page_html(), mimetype="text/html")


@app.post("/jobs")
def submit():
    start_threads()
    f = request.files.get("file")
    data = f.read() if f is not None else b""
    fn = request.form.get("fn", "sobel")
    page = request.form.get("page", "")
    bad = zfweb.check_upload(fn, data)
    if bad is None and not page:
        bad = 400, {"error": "no page", "kind": "bad_request", "retry": False}
    if bad is not None:
        return jsonify(bad[1]), bad[0]
    hub.page(page)
    try:
        job_id = zf.submit(fn, data)
    except zfleet.Error as e:
        status, body = zfweb.submit_error(e)
        return jsonify(body), status
    hub.follow(job_id, page)
    threading.Thread(target=follow, args=(job_id,), name="zfweb-job", daemon=True).start()
    return jsonify(id=str(job_id), fn=fn, name=f.filename)


@app.get("/events")
def events():
    start_threads()
    token = request.args.get("page", "")
    if not token:
        return jsonify(error="no page"), 400
    p = hub.page(token)

    def stream():
        p.streams += 1
        try:
            yield zfweb.sse(*zfweb.broker_event(hub.broker_up))
            while True:
                try:
                    event = p.queue.get(timeout=zfweb.SSE_PING_S)
                except queue.Empty:
                    p.seen = time.monotonic()
                    yield zfweb.SSE_PING          # a gone browser shows up here
                    continue
                yield zfweb.sse(*event)
        finally:
            p.streams -= 1
            p.seen = time.monotonic()

    return Response(stream(), mimetype="text/event-stream", headers=zfweb.SSE_HEADERS)


@app.get("/jobs/<job_id>/result")
def result(job_id):
    jid = zfweb.parse_job_id(job_id)
    if jid is None:
        return jsonify(error="bad job id"), 400
    try:
        r = zf.get(jid)
    except zfleet.UnknownJob:
        return jsonify(error="no such job"), 404
    except zfleet.Unreachable:
        return jsonify(error=zfweb.UNREACHABLE, retry=True), 503
    if not isinstance(r, zfleet.Result):
        return jsonify(error="not finished: %s" % r.status), 404
    if not r.ok:
        return jsonify(error=r.error, status=r.status), 422
    if request.args.get("format") == "pgm":
        return Response(r.output, mimetype="image/x-portable-graymap")
    return Response(zfweb.pgm_to_png(r.output), mimetype="image/png",
                    headers={"Cache-Control": "private, max-age=3600"})


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    a = ap.parse_args()
    app.run(host=a.host, port=a.port, threaded=True)
