#!/usr/bin/python3
"""The broker's and the fleet's --metrics (issue 15), with a real Prometheus scraping them.

    /usr/bin/python3 tests/py/test_prometheus.py BUILD_DIR

Starts a real broker (journal, fsync always, --metrics), a real fleet of one CPU worker
(--fleet --metrics) and Debian's `prometheus` scraping both every second (its own temp
storage, free ports). Runs known jobs through them with the Python client, then asks
Prometheus' HTTP API (/api/v1/query) for the numbers:

- jobs accepted and finished by function and status (echo 30 succeeded; spin 10 succeeded
  and 5 failed), rejections by reason (2 payload_too_large), a queued gauge for a function
  whose name needs escaping (quote, backslash, newline, UTF-8), workers by kind and state;
- histogram_quantile over the run-time buckets of spin (30 ms jobs), the histogram counts,
  the journal's fsync histogram, records and bytes; STATS' run_p50_us / run_p99_us agree;
- the fleet: its worker running on its device, and a kill -9 of the worker counted as a
  restart with reason "killed".

Then, on the endpoints themselves: `promtool check metrics` passes on a scrape of the
broker and of the fleet; /healthz and /readyz answer 200; an unknown path 404; POST 405;
the broker keeps dispatching (and /healthz answers) while clients hold metrics connections
that send pipelined requests and never read; a bad --metrics value exits 2 with a clear
message; a broker restarting on a large journal answers /readyz 503 "replaying the
journal" during the replay and 200 after it. Prints one line per check and
`prometheus: N passed, M failed`; exits 0, 1 on a failure, 77 (skipped) without
prometheus or promtool.
"""
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SKIP = 77
WEIRD = 'we"ird\\fn\nü'  # a function name with every character the format escapes


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(port, path, method="GET", timeout=10):
    """(status, body text) of one request to 127.0.0.1:port."""
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path), method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode("utf-8")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8")


def wait_for(what, cond, seconds=60, step=0.2):
    """cond()'s first truthy value within `seconds`, else AssertionError naming `what`."""
    deadline = time.monotonic() + seconds
    last = None
    while time.monotonic() < deadline:
        try:
            last = cond()
        except (OSError, ValueError) as e:  # not up yet
            last = e
        if last and not isinstance(last, Exception):
            return last
        time.sleep(step)
    raise AssertionError("%s: not within %d s (last: %r)" % (what, seconds, last))


class Procs:
    def __init__(self, build, tmp):
        self.build, self.tmp, self.procs = build, tmp, []

    def spawn(self, name, argv):
        log = open(os.path.join(self.tmp, name + ".log"), "ab")
        p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL)
        log.close()
        self.procs.append(p)
        return p

    def logs(self):
        text = ""
        for name in sorted(os.listdir(self.tmp)):
            if name.endswith(".log"):
                with open(os.path.join(self.tmp, name), "rb") as f:
                    text += "--- %s\n%s\n" % (name, f.read()[-3000:].decode("utf-8", "replace"))
        return text

    def stop(self, p):
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def stop_all(self):
        for p in reversed(self.procs):
            self.stop(p)


class Prom:
    """Prometheus' HTTP API."""

    def __init__(self, port):
        self.port = port

    def query(self, q):
        """The instant vector of q as {frozenset(labels): float}."""
        st, body = http(self.port, "/api/v1/query?" + urllib.parse.urlencode({"query": q}))
        doc = json.loads(body)
        if st != 200 or doc.get("status") != "success":
            raise AssertionError("query %s: %d %s" % (q, st, body[:300]))
        return {frozenset(r["metric"].items()): float(r["value"][1])
                for r in doc["data"]["result"]}

    def value(self, q):
        """The one value of q, or None while it has no sample."""
        v = self.query(q)
        if len(v) > 1:
            raise AssertionError("query %s: %d series: %r" % (q, len(v), v))
        return next(iter(v.values())) if v else None

    def wait_value(self, q, want, seconds=60):
        got = wait_for("%s == %r" % (q, want), lambda: self.value(q) == want or None, seconds)
        return got


def label(v):
    """A PromQL string literal for v."""
    return '"%s"' % v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


# ------------------------------------------------------------------ a journal to replay

def write_journal(path, njobs, function):
    """A journal of njobs unfinished jobs (ACCEPT records, as broker/journal.c writes them:
    [u32 length][u32 CRC-32 of type and body][u8 type][body], little-endian)."""
    name = function.encode()
    out = [b"ZFJRNL01"]
    for i in range(njobs):
        body = struct.pack("<QIIBBIQQB", 1000 + i, 0, 0, 0, 3, 0, 0, 0, len(name)) + name + \
            struct.pack("<I", 0)
        typed = b"\x01" + body
        out.append(struct.pack("<II", len(body), zlib.crc32(typed)) + typed)
    with open(path, "wb") as f:
        f.write(b"".join(out))


# ------------------------------------------------------------------ the checks

class Suite:
    def __init__(self, build, tmp):
        self.build, self.tmp = build, tmp
        self.p = Procs(build, tmp)
        self.passed = self.failed = 0

    def bin(self, rel):
        return os.path.join(self.build, rel)

    def check(self, name, fn):
        try:
            fn()
            print("ok   %s" % name)
            self.passed += 1
        except Exception:
            print("FAIL %s\n%s" % (name, traceback.format_exc()))
            self.failed += 1

    def start(self):
        t = self.tmp
        self.clients, self.workers = "ipc://%s/c" % t, "ipc://%s/w" % t
        self.mport, self.fport, self.pport = free_port(), free_port(), free_port()
        self.broker = self.p.spawn("broker", [
            self.bin("broker/zfleet-broker"), "--clients", self.clients, "--workers",
            self.workers, "--data", os.path.join(t, "data"), "--max-payload", "1000",
            "--metrics", "127.0.0.1:%d" % self.mport])
        wait_for("broker /readyz", lambda: http(self.mport, "/readyz")[0] == 200, 30)
        core = sorted(os.sched_getaffinity(0))[0]
        self.fleet = self.p.spawn("fleet", [
            self.bin("worker/zfleet-worker"), "--fleet", "--gpus", "none", "--cpus", str(core),
            "--broker", self.workers, "--metrics", "127.0.0.1:%d" % self.fport])
        self.device = "cpu:%d" % core
        cfg = os.path.join(t, "prometheus.yml")
        with open(cfg, "w") as f:
            f.write("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                    "scrape_configs:\n"
                    "  - job_name: broker\n    static_configs:\n"
                    "      - targets: ['127.0.0.1:%d']\n"
                    "  - job_name: fleet\n    static_configs:\n"
                    "      - targets: ['127.0.0.1:%d']\n" % (self.mport, self.fport))
        self.p.spawn("prometheus", [
            "prometheus", "--config.file=" + cfg, "--storage.tsdb.path=" + os.path.join(t, "tsdb"),
            "--web.listen-address=127.0.0.1:%d" % self.pport, "--log.level=warn"])
        self.prom = Prom(self.pport)
        wait_for("prometheus ready", lambda: http(self.pport, "/-/ready")[0] == 200, 60)
        sys.path.insert(0, os.path.join(ROOT, "client", "python"))
        import zfleet
        sys.path.pop(0)
        self.zfleet = zfleet
        self.client = zfleet.Client(self.clients, request_timeout=30)
        wait_for("a worker registered", lambda: len(self.client.stats()["workers"]) == 1, 60)

    def run_known_jobs(self):
        c = self.client
        for i in range(30):
            r = c.run("echo", b"x%d" % i, timeout=60)
            assert r.ok, r
        for i in range(10):
            r = c.run("spin", b"30", timeout=60)
            assert r.ok, r
        for i in range(5):
            r = c.run("spin", b"not a number", timeout=60)
            assert r.status == "failed", r
        for i in range(2):
            try:
                c.submit("echo", b"y" * 2000)
                raise AssertionError("a 2000-byte payload was accepted (--max-payload 1000)")
            except self.zfleet.PayloadTooLarge:
                pass
        c.submit(WEIRD, b"stays queued: no worker serves it")

    # -- through Prometheus

    def t_counters_by_function_and_status(self):
        q = self.prom
        q.wait_value('zfleet_jobs_finished_total{function="echo",status="succeeded"}', 30)
        assert q.value('zfleet_jobs_finished_total{function="spin",status="succeeded"}') == 10
        assert q.value('zfleet_jobs_finished_total{function="spin",status="failed"}') == 5
        assert q.value('zfleet_jobs_finished_total{function="echo",status="failed"}') == 0
        assert q.value('zfleet_jobs_accepted_total{function="echo"}') == 30
        assert q.value('zfleet_jobs_accepted_total{function="spin"}') == 15
        assert q.value('zfleet_jobs_rejected_total{reason="payload_too_large"}') == 2
        assert q.value('zfleet_jobs_rejected_total{reason="queue_full"}') == 0
        assert q.value('sum(zfleet_jobs_running)') == 0

    def t_label_values_are_escaped(self):
        # the name comes back whole through Prometheus' parser: every escape was right
        got = self.prom.wait_value("zfleet_jobs_queued{function=%s}" % label(WEIRD), 1)
        assert got == 1
        names = {dict(k)["function"] for k in self.prom.query("zfleet_jobs_queued")}
        assert {"echo", "spin", WEIRD} <= names, names

    def t_workers_by_kind_and_state(self):
        q = self.prom
        q.wait_value('zfleet_workers{device_kind="cpu",state="idle"}', 1)
        assert q.value('sum(zfleet_workers)') == 1
        assert q.value('zfleet_workers{device_kind="gpu",state="idle"}') == 0
        q.wait_value('up{job="broker"}', 1)
        q.wait_value('up{job="fleet"}', 1)

    def t_histogram_quantile_of_run_time(self):
        q = self.prom
        q.wait_value('zfleet_job_run_seconds_count{function="spin"}', 15)
        # 5 failures at ~0 s and 10 runs of 30 ms: the median is a 30 ms run
        p50 = q.value('histogram_quantile(0.5, zfleet_job_run_seconds_bucket{function="spin"})')
        assert 0.025 <= p50 <= 0.2, p50
        echo = q.value('histogram_quantile(0.5, zfleet_job_run_seconds_bucket{function="echo"})')
        assert echo < 0.02, echo
        assert q.value('zfleet_job_run_seconds_count{function="echo"}') == 30
        assert q.value('zfleet_job_queue_wait_seconds_count{function="echo"}') == 30
        total = q.value('zfleet_job_run_seconds_sum{function="spin"}')
        assert 10 * 0.029 <= total <= 10 * 0.2, total
        # STATS reads the same histogram (issue 15: zfleet top)
        fns = {f["name"]: f for f in self.client.stats()["functions"]}
        assert 25000 <= fns["spin"]["run_p50_us"] <= 200000, fns["spin"]
        assert fns["spin"]["run_p99_us"] >= fns["spin"]["run_p50_us"], fns["spin"]
        assert fns["echo"]["run_p50_us"] < 20000, fns["echo"]
        assert fns[WEIRD]["run_p50_us"] == 0 and fns[WEIRD]["run_p99_us"] == 0

    def t_journal_metrics(self):
        q = self.prom
        recs = wait_for("journal records", lambda: q.value("zfleet_journal_records"))
        # each of the 46 accepted jobs: ACCEPT, and for the 45 that ran START and FINISH
        assert recs >= 46 + 2 * 45, recs
        assert q.value("zfleet_journal_bytes") > 8 + recs * 9
        assert q.value("zfleet_journal_writable") == 1
        # fsync always: at least one sync per acceptance turn
        assert q.value("zfleet_journal_fsync_duration_seconds_count") >= 46
        assert q.value("histogram_quantile(0.99, zfleet_journal_fsync_duration_seconds_bucket)") > 0

    def t_clients_connected(self):
        got = wait_for("clients connected", lambda: self.prom.value("zfleet_clients_connected"))
        assert got >= 1, got

    def t_fleet_counts_a_killed_worker_as_a_restart(self):
        q = self.prom
        dev = label(self.device)
        q.wait_value("zfleet_fleet_workers_running{device=%s}" % dev, 1)
        assert q.value('zfleet_fleet_restarts_total{device=%s,reason="killed"}' % dev) == 0
        kids = subprocess.run(["pgrep", "-P", str(self.fleet.pid)], stdout=subprocess.PIPE,
                              text=True).stdout.split()
        assert len(kids) == 1, kids
        os.kill(int(kids[0]), signal.SIGKILL)
        q.wait_value('zfleet_fleet_restarts_total{device=%s,reason="killed"}' % dev, 1)
        assert q.value('zfleet_fleet_restarts_total{device=%s,reason="crashed"}' % dev) == 0
        assert q.value("zfleet_fleet_devices_given_up") == 0
        assert q.value("zfleet_fleet_devices") == 1
        q.wait_value("zfleet_fleet_workers_running{device=%s}" % dev, 1)
        # and the broker counted the lost worker, through the obituary
        q.wait_value("zfleet_workers_lost_total", 1)
        wait_for("the restarted worker registered",
                 lambda: len(self.client.stats()["workers"]) == 1, 60)

    # -- the endpoints themselves

    def t_promtool_passes_on_both_scrapes(self):
        for port in (self.mport, self.fport):
            st, body = http(port, "/metrics")
            assert st == 200, st
            r = subprocess.run(["promtool", "check", "metrics"], input=body,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            assert r.returncode == 0 and not r.stdout.strip(), r.stdout

    def t_health_ready_404_and_only_get(self):
        for port in (self.mport, self.fport):
            assert http(port, "/healthz") == (200, "ok\n"), http(port, "/healthz")
            assert http(port, "/readyz") == (200, "ready\n"), http(port, "/readyz")
            st, body = http(port, "/nope")
            assert st == 404 and "/nope" in body, (st, body)
            assert http(port, "/metrics", method="POST")[0] == 405
            assert http(port, "/metrics", method="DELETE")[0] == 405

    def t_dispatch_goes_on_while_scrapers_never_read(self):
        # 6 connections that pipeline 2000 requests each with a small receive buffer and
        # never read: the broker's replies fill their socket buffers and wait
        stuck = []
        for _ in range(6):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.connect(("127.0.0.1", self.mport))
            s.setblocking(False)
            req = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * 2000
            try:
                s.send(req)
            except BlockingIOError:
                pass
            stuck.append(s)
        try:
            time.sleep(0.5)  # (not an assertion: lets the broker fill their buffers)
            t0 = time.monotonic()
            ids = self.client.submit_many("echo", [b"%d" % i for i in range(200)])
            res = self.client.results(ids, timeout=60)
            n = sum(1 for r in res if r.ok)
            assert n == 200, n
            assert http(self.mport, "/healthz", timeout=5) == (200, "ok\n")
            print("     (200 jobs in %.2f s with 6 stuck scrapers)" % (time.monotonic() - t0))
        finally:
            for s in stuck:
                s.close()

    def t_bad_metrics_value_exits_2(self):
        for bad in ("9464", "127.0.0.1:", "127.0.0.1:99999", "nohost:80", "[::1:80"):
            r = subprocess.run([self.bin("broker/zfleet-broker"), "--no-journal", "--metrics",
                                bad], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, timeout=30)
            assert r.returncode == 2, (bad, r.returncode, r.stdout)
            assert "--metrics" in r.stdout and "HOST:PORT" in r.stdout, r.stdout
        # a port in use: a start failure (1), said in one line
        r = subprocess.run([self.bin("broker/zfleet-broker"), "--no-journal", "--clients",
                            "ipc://%s/c2" % self.tmp, "--workers", "ipc://%s/w2" % self.tmp,
                            "--metrics", "127.0.0.1:%d" % self.mport], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=30)
        assert r.returncode == 1 and "cannot listen" in r.stdout, (r.returncode, r.stdout)

    def t_readyz_is_503_while_the_journal_replays(self):
        data = os.path.join(self.tmp, "replay")
        os.makedirs(data)
        n = 400000
        write_journal(os.path.join(data, "journal"), n, "replayed")
        port = free_port()
        b = self.p.spawn("replay-broker", [
            self.bin("broker/zfleet-broker"), "--clients", "ipc://%s/rc" % self.tmp,
            "--workers", "ipc://%s/rw" % self.tmp, "--data", data,
            "--metrics", "127.0.0.1:%d" % port])
        seen = []
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and b.poll() is None:
                try:
                    st, body = http(port, "/readyz", timeout=60)
                except OSError:  # not listening yet
                    time.sleep(0.002)
                    continue
                seen.append((st, body))
                if st == 200:
                    break
            assert seen and seen[-1] == (200, "ready\n"), (seen[-3:], self.p.logs())
            replaying = [s for s in seen if s == (503, "not ready: replaying the journal\n")]
            assert replaying, "no 503 during the replay of %d jobs: %r" % (n, seen[:3])
            assert http(port, "/healthz")[0] == 200
            st, body = http(port, "/metrics")
            assert 'zfleet_jobs_queued{function="replayed"} %d\n' % n in body
        finally:
            self.p.stop(b)
        print("     (%d answers 503 replaying, then 200)" % len(replaying))


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: test_prometheus.py BUILD_DIR")
    for tool in ("prometheus", "promtool"):
        if not shutil.which(tool):
            print("prometheus: skipped: %s not installed (Debian package prometheus)" % tool)
            return SKIP
    build = os.path.abspath(sys.argv[1])
    tmp = tempfile.mkdtemp(prefix="zt-prom-")
    s = Suite(build, tmp)
    try:
        s.start()
        s.run_known_jobs()
        for name in ("counters_by_function_and_status", "label_values_are_escaped",
                     "workers_by_kind_and_state", "histogram_quantile_of_run_time",
                     "journal_metrics", "clients_connected", "promtool_passes_on_both_scrapes",
                     "health_ready_404_and_only_get", "dispatch_goes_on_while_scrapers_never_read",
                     "fleet_counts_a_killed_worker_as_a_restart", "bad_metrics_value_exits_2",
                     "readyz_is_503_while_the_journal_replays"):
            s.check(name, getattr(s, "t_" + name))
    except Exception:
        print("FAIL setup\n%s" % traceback.format_exc())
        s.failed += 1
    finally:
        if s.failed:
            print(s.p.logs())
        s.p.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    print("prometheus: %d passed, %d failed" % (s.passed, s.failed))
    return 1 if s.failed else 0


if __name__ == "__main__":
    sys.exit(main())
