"""The web example, FastAPI + zfleet.AsyncClient: upload an image, run it on the fleet, watch
its progress and see the result, on one page.

    examples/web/run                                  # broker + fleet + this app
    ZFLEET_BROKER=tcp://127.0.0.1:5555 /usr/bin/python3 examples/web/app.py --port 8000

Endpoints (flask_app.py has the same ones):
  GET  /                     the page (index.html: plain HTML + JS, no build step)
  POST /jobs                 multipart form: file, fn (sobel | slow_sobel), page (the page's
                             stream) -> {"id": "123"} (a string: JavaScript numbers stop at
                             2^53); errors as {"error", "kind", "retry"} with 400/413/503
                             (retry: the broker is unreachable, submit again)
  GET  /events?page=P        the page's one Server-Sent Events stream: progress and results of
                             every job the page submitted, and the broker's state (browsers
                             allow 6 connections per site, so never one stream per job)
  GET  /jobs/{id}/result     the output as PNG (?format=pgm: as the fleet made it); 404 while
                             the job is not finished, 422 with the error if it failed

One AsyncClient serves every request. A job is followed by a task running the client's
watch() (its Progress reports, then its Result) into its page's queue; the page's stream
drains that queue, so a stream that reconnects (EventSource does by itself) loses nothing.
A second AsyncClient asks the broker for stats every second, so pages hear "broker
unreachable, retrying" when it goes and see it come back; a broker restarted on its journal
still has the job, the watch goes on, and the job ends on the page with its result.
"""
import asyncio
import logging
import os
import sys
import time

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse, Response, StreamingResponse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import zfweb  # noqa: E402
from zfweb import zfleet  # noqa: E402

log = logging.getLogger("zfweb")
app = FastAPI(title="zfleet web example")

PAGE_QUEUE = 2000            # events kept for a page whose stream is away (oldest dropped)
PAGE_IDLE_S = 300            # a page with no stream for this long is forgotten


class Page:
    def __init__(self):
        self.queue = asyncio.Queue()
        self.seen = time.monotonic()
        self.streams = 0

    def put(self, event):
        while self.queue.qsize() >= PAGE_QUEUE:
            self.queue.get_nowait()
        self.queue.put_nowait(event)


class Hub:
    """Pages, the jobs each follows, and the broker's state as last seen."""

    def __init__(self):
        self.pages = {}
        self.followers = {}      # job id -> set of page tokens
        self.broker_up = True
        self.stopping = False
        self.tasks = set()

    def page(self, token):
        p = self.pages.get(token)
        if p is None:
            now = time.monotonic()
            for t, old in list(self.pages.items()):
                if old.streams == 0 and now - old.seen > PAGE_IDLE_S:
                    del self.pages[t]
            p = self.pages[token] = Page()
        p.seen = time.monotonic()
        return p

    def to_job(self, job_id, event):
        for token in self.followers.get(job_id, ()):
            p = self.pages.get(token)
            if p is not None:
                p.put(event)

    def to_all(self, event):
        for p in self.pages.values():
            p.put(event)

    def spawn(self, coro):
        t = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(t)
        t.add_done_callback(self.tasks.discard)


hub = Hub()


async def follow(job_id):
    """Feeds one job's events to the pages following it, until its result."""
    zf = app.state.zf
    try:
        while not hub.stopping:
            try:
                # Progress reports, then the Result; for any job id, on any connection
                async for ev in zf.watch(job_id):
                    if isinstance(ev, zfleet.Result):
                        hub.to_job(job_id, zfweb.result_event(ev))
                        return
                    hub.to_job(job_id, zfweb.progress_event(job_id, ev.fraction, ev.text))
                return
            except zfleet.Unreachable as e:
                # no broker for a while (the client's unreachable_after): the monitor has
                # told the pages; watch again (a restarted broker still has the job)
                log.warning("zfweb: job %d: %s; watching again", job_id, e)
                await asyncio.sleep(1.0)
            except zfleet.UnknownJob:
                hub.to_job(job_id, ("result", {"id": str(job_id), "status": "unknown",
                                               "ok": False, "url": "",
                                               "error": "the broker does not know this job "
                                                        "(expired, or lost with its journal)"}))
                return
    finally:
        hub.followers.pop(job_id, None)


async def monitor():
    """Tells every page when the broker goes away and when it is back."""
    probe = zfleet.AsyncClient(app.state.settings["broker"], request_timeout=1.0,
                               heartbeat=app.state.settings["heartbeat"])
    try:
        while not hub.stopping:
            try:
                await probe.stats()
                up = True
            except zfleet.Unreachable:
                up = False
            except zfleet.Error:
                up = True         # it answered (e.g. Denied: stats needs an admin key)
            if up != hub.broker_up:
                hub.broker_up = up
                log.warning("zfweb: broker %s", "is back" if up else "unreachable")
                hub.to_all(zfweb.broker_event(up))
            await asyncio.sleep(1.0 if up else 0.25)
    finally:
        await probe.close()


@app.on_event("startup")
async def startup():
    s = app.state.settings = zfweb.settings()
    app.state.zf = zfleet.AsyncClient(s["broker"], request_timeout=s["request_timeout"],
                                      heartbeat=s["heartbeat"])
    hub.spawn(monitor())


@app.on_event("shutdown")
async def shutdown():
    hub.stopping = True
    for t in list(hub.tasks):
        t.cancel()
    await app.state.zf.close()


@app.get("/")
async def index():
    return Response(zfweb.page_html(), media_type="text/html; charset=utf-8")


@app.post("/jobs")
async def submit(file: UploadFile = File(...), fn: str = Form("sobel"), page: str = Form(...)):
    data = await file.read()
    bad = zfweb.check_upload(fn, data)
    if bad is not None:
        return JSONResponse(bad[1], status_code=bad[0])
    hub.page(page)
    try:
        job_id = await app.state.zf.submit(fn, data)
    except zfleet.Error as e:
        status, body = zfweb.submit_error(e)
        return JSONResponse(body, status_code=status)
    hub.followers.setdefault(job_id, set()).add(page)
    hub.spawn(follow(job_id))
    return {"id": str(job_id), "fn": fn, "name": file.filename}


@app.get("/events")
async def events(request: Request, page: str):
    p = hub.page(page)

    async def stream():
        p.streams += 1
        try:
            yield zfweb.sse(*zfweb.broker_event(hub.broker_up))
            sent = time.monotonic()
            while not hub.stopping:
                try:
                    event = await asyncio.wait_for(p.queue.get(), 1.0)
                except asyncio.TimeoutError:
                    if await request.is_disconnected():
                        return
                    p.seen = time.monotonic()
                    if p.seen - sent >= zfweb.SSE_PING_S:     # keeps proxies from closing it
                        sent = p.seen
                        yield zfweb.SSE_PING
                    continue
                sent = time.monotonic()
                yield zfweb.sse(*event)
        finally:
            p.streams -= 1
            p.seen = time.monotonic()

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers=zfweb.SSE_HEADERS)


@app.get("/jobs/{job_id}/result")
async def result(job_id: str, format: str = "png"):
    jid = zfweb.parse_job_id(job_id)
    if jid is None:
        return JSONResponse({"error": "bad job id"}, status_code=400)
    try:
        r = await app.state.zf.get(jid)
    except zfleet.UnknownJob:
        return JSONResponse({"error": "no such job"}, status_code=404)
    except zfleet.Unreachable:
        return JSONResponse({"error": zfweb.UNREACHABLE, "retry": True}, status_code=503)
    if not isinstance(r, zfleet.Result):
        return JSONResponse({"error": "not finished: %s" % r.status}, status_code=404)
    if not r.ok:
        return JSONResponse({"error": r.error, "status": r.status}, status_code=422)
    if format == "pgm":
        return Response(r.output, media_type="image/x-portable-graymap")
    return Response(zfweb.pgm_to_png(r.output), media_type="image/png",
                    headers={"Cache-Control": "private, max-age=3600"})


def main():
    import argparse

    import uvicorn

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    a = ap.parse_args()

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame):
            hub.stopping = True          # open event streams end, so shutdown does not hang
            super().handle_exit(sig, frame)

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    Server(uvicorn.Config(app, host=a.host, port=a.port, log_level="warning")).run()


if __name__ == "__main__":
    main()
