#!/usr/bin/python3
"""CURVE in the Python client (client/python/zfleet/, issue 13) against a real broker run
with --curve-secret and a real worker with its own key, over TCP on loopback, all started
from the build directory.

    /usr/bin/python3 tests/py/test_curve_client.py BUILD_DIR [NAME...]

(NAME: run only the tests whose name contains one of these strings.)

Keys are made both ways the issue promises to accept: by pyzmq's zmq.auth.create_certificates
and by `zfleet keygen`. Plain script (no pytest): one line per test and a last line
`pycurve: N passed, M failed`; exits non-zero on any failure. Every process it starts is
killed before it exits.
"""
import asyncio
import atexit
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "client", "python"))
import zfleet  # noqa: E402
import zmq.auth  # noqa: E402

BUILD = os.path.abspath(sys.argv[1] if len(sys.argv) > 1
                        else os.path.join(HERE, "..", "..", "build"))
BROKER = os.path.join(BUILD, "broker", "zfleet-broker")
WORKER = os.path.join(BUILD, "worker", "zfleet-worker")
CLI = os.path.join(BUILD, "client", "zfleet")
EXAMPLE = os.path.join(BUILD, "worker", "zf_example.so")

TMP = tempfile.mkdtemp(prefix="zf-pycurve-")
KEYS = os.path.join(TMP, "keys")
PROCS = []
FAST = 3.0   # a refused key must fail this fast (seconds), far below any timeout given


def cleanup():
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
    shutil.rmtree(TMP, ignore_errors=True)
    sys.exit(128 + signum)


atexit.register(cleanup)
signal.signal(signal.SIGTERM, on_signal)
signal.signal(signal.SIGINT, on_signal)


def spawn(args, log_name):
    log = open(os.path.join(TMP, log_name), "ab")
    p = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    log.close()
    PROCS.append(p)
    return p


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def key(name):
    """Path of a key file: NAME.key_secret for a name, or the public NAME.key with '.pub'."""
    if name.endswith(".pub"):
        return os.path.join(KEYS, name[:-4] + ".key")
    return os.path.join(KEYS, name + ".key_secret")


def make_keys():
    """broker, bob, worker: `zfleet keygen`; app, admin, stranger, wrongbroker: pyzmq.
    clients/ lists app and bob, admins/ admin, workers/ worker; stranger is listed nowhere."""
    os.makedirs(KEYS)
    for name in ("broker", "bob", "worker"):
        r = subprocess.run([CLI, "keygen", os.path.join(KEYS, name)], capture_output=True,
                           timeout=10)
        check(r.returncode == 0, "zfleet keygen %s: %r" % (name, r))
    for name in ("app", "admin", "stranger", "wrongbroker"):
        zmq.auth.create_certificates(KEYS, name)
    for d, names in (("clients", ("app", "bob")), ("admins", ("admin",)), ("workers", ("worker",))):
        os.makedirs(os.path.join(KEYS, d))
        for n in names:
            shutil.copy(key(n + ".pub"), os.path.join(KEYS, d))


def free_ports(n):
    """n TCP ports on loopback that were free a moment ago (a broker that cannot bind one is
    started again on others)."""
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


class Broker:
    def __init__(self, name, curve=True, data=None):
        self.name = name
        self.curve = curve
        self.data = data
        for _ in range(5):
            pc, pw = free_ports(2)
            self.clients = "tcp://127.0.0.1:%d" % pc
            self.workers = "tcp://127.0.0.1:%d" % pw
            if self.start():
                return
        raise RuntimeError("broker %s did not come up" % name)

    def start(self):
        args = [BROKER, "--clients", self.clients, "--workers", self.workers,
                "--heartbeat", "250"]
        args += ["--data", self.data] if self.data else ["--no-journal"]
        if self.curve:
            args += ["--curve-secret", key("broker"),
                     "--client-keys", os.path.join(KEYS, "clients"),
                     "--worker-keys", os.path.join(KEYS, "workers"),
                     "--admin-keys", os.path.join(KEYS, "admins")]
        self.proc = spawn(args, self.name + ".log")
        if self._up():
            return True
        self.kill()
        return False

    def kill(self):
        self.proc.kill()
        self.proc.wait()

    def keys(self, who="admin"):
        return dict(key=key(who), broker_key=key("broker.pub")) if self.curve else {}

    def _up(self):
        with zfleet.Client(self.clients, request_timeout=1.0, **self.keys()) as c:
            deadline = time.monotonic() + 10
            while self.proc.poll() is None and time.monotonic() < deadline:
                try:
                    c.stats()
                    return True
                except zfleet.Unreachable:
                    pass
        return False

    def worker(self, name):
        extra = ["--key", key("worker"), "--broker-key", key("broker.pub")] if self.curve else []
        return spawn([WORKER, "--broker", self.workers, "--heartbeat", "250", "--module", EXAMPLE,
                      "--name", name] + extra, self.name + "-workers.log")

    def stats(self):
        with zfleet.Client(self.clients, **self.keys()) as c:
            return c.stats()

    def wait_workers(self, n, timeout=10.0):
        deadline = time.monotonic() + timeout
        while len(self.stats()["workers"]) < n:
            if time.monotonic() > deadline:
                raise RuntimeError("%d worker(s) did not register" % n)
            time.sleep(0.05)


def client(b, who, cls=None, **kw):
    return (cls or zfleet.Client)(b.clients, **b.keys(who), **kw)


def expect_denied(call, what, words=(), limit=FAST):
    """call() raises Denied (code 12) within `limit` seconds, its message naming `words`."""
    t0 = time.monotonic()
    try:
        call()
    except zfleet.Denied as e:
        took = time.monotonic() - t0
        check(took < limit, "%s: Denied only after %.2fs" % (what, took))
        if os.environ.get("ZT_TIMES"):
            print("  %-40s %.3fs" % (what, took))
        check(e.code == 12 and isinstance(e, zfleet.BrokerError), "%s: %r" % (what, e))
        for w in words:
            check(w in str(e), "%s: %r does not say %r" % (what, str(e), w))
        return e
    except Exception as e:  # noqa: BLE001
        raise AssertionError("%s: %s instead of Denied after %.2fs: %s"
                             % (what, type(e).__name__, time.monotonic() - t0, e)) from None
    raise AssertionError("%s: no Denied" % what)


def expect_unknown(call, what):
    try:
        call()
    except zfleet.UnknownJob as e:
        check(e.code == 4, "%s: code %r" % (what, e.code))
        return
    except Exception as e:  # noqa: BLE001
        raise AssertionError("%s: %r instead of UnknownJob" % (what, e)) from None
    raise AssertionError("%s: no UnknownJob (another key's job was visible)" % what)


# ------------------------------------------------------------------ tests

def t_pyzmq_keys(b, plain):
    """Keys from zmq.auth.create_certificates (client) with a broker key from zfleet keygen."""
    with client(b, "app") as c:
        jid = c.submit("echo", b"pyzmq key")
        r = c.wait(jid, timeout=10)
        check(r.ok and r.output == b"pyzmq key", "result: %r" % (r,))
        check(c.get(jid).output == b"pyzmq key", "get of its own job")

    async def go():
        async with client(b, "app", zfleet.AsyncClient) as a:
            outs = await asyncio.gather(*(a.run("echo", b"async %d" % i, timeout=10)
                                          for i in range(10)))
            return [r.output for r in outs]
    check(asyncio.run(asyncio.wait_for(go(), 30)) == [b"async %d" % i for i in range(10)],
          "AsyncClient with CURVE")


def t_keygen_keys(b, plain):
    """A client key from `zfleet keygen`, loaded by zmq.auth as the client does."""
    pub, sec = zmq.auth.load_certificate(key("bob"))
    check(len(pub) == 40 and len(sec) == 40, "zmq.auth reads zfleet keygen's file")
    with client(b, "bob") as c:
        r = c.run("echo", b"keygen key", timeout=10)
        check(r.ok and r.output == b"keygen key", "result: %r" % (r,))
        ids = c.submit_many("echo", [b"m%d" % i for i in range(50)], window=16)
        got = {r.id: r.output for r in c.results(ids, timeout=30)}
        check(got == {i: b"m%d" % k for k, i in enumerate(ids)}, "submit_many/results")


def t_refused_fast(b, plain):
    """No service, fast (< 3 s, with request timeouts of 20 s) and saying why, for: a key
    the broker does not list, a worker's key, no key, the wrong broker key; for requests,
    waits, submit_many and the AsyncClient; and nothing is accepted."""
    before = b.stats()
    cases = [("unknown key", dict(key=key("stranger"), broker_key=key("broker.pub")),
              ("refused this key", "ZAP status 400")),
             ("worker key", dict(key=key("worker"), broker_key=key("broker.pub")),
              ("refused this key",)),
             ("no key", dict(key="", broker_key=""), ("--curve-secret", "key=")),
             ("wrong broker key", dict(key=key("app"), broker_key=key("wrongbroker.pub")),
              ("broker_key",))]
    for what, kw, words in cases:
        with zfleet.Client(b.clients, request_timeout=20, **kw) as c:
            expect_denied(lambda: c.submit("echo", b"must not run"), what + ": submit", words)
            expect_denied(lambda: c.submit("echo", b"must not run"), what + ": again", words)
            expect_denied(lambda: c.wait(12345, timeout=20), what + ": wait", words)
            expect_denied(lambda: c.stats(), what + ": stats", words)
            e = expect_denied(lambda: c.submit_many("echo", [b"a", b"b", b"c"]),
                              what + ": submit_many", words)
            check(getattr(e, "ids", None) == [None] * 3, "%s: ids %r" % (what, e.ids))

        async def go():
            a = zfleet.AsyncClient(b.clients, request_timeout=20, **kw)
            try:
                t0 = time.monotonic()
                for call in (lambda: a.submit("echo", b"must not run"),
                             lambda: a.wait(12345, timeout=20), a.stats):
                    try:
                        await call()
                        return "no Denied"
                    except zfleet.Denied as e:
                        if not all(w in str(e) for w in words):
                            return "message: %s" % e
                return time.monotonic() - t0
            finally:
                await a.close()
        out = asyncio.run(asyncio.wait_for(go(), 60))
        check(isinstance(out, float) and out < 3 * FAST, "%s: async: %r" % (what, out))
        if os.environ.get("ZT_TIMES"):
            print("  %-40s %.3fs" % (what + ": async", out))
    after = b.stats()
    check(after["broker"]["accepted"] == before["broker"]["accepted"],
          "jobs accepted from refused clients: %d -> %d"
          % (before["broker"]["accepted"], after["broker"]["accepted"]))
    check(after["security"]["denied_clients"] > before["security"]["denied_clients"],
          "the broker counted the denials: %r" % (after["security"],))


def t_curve_at_one_end(b, plain):
    """Keys given to a broker without CURVE: Denied (a mismatch), not a timeout."""
    with zfleet.Client(plain.clients, request_timeout=20, key=key("app"),
                       broker_key=key("broker.pub")) as c:
        expect_denied(lambda: c.submit("echo", b"x"), "keys vs a plain broker",
                      ("without --curve-secret",))
    with zfleet.Client(plain.clients) as c:
        check(c.run("echo", b"plain", timeout=10).output == b"plain", "plain broker, no keys")


def t_new_socket_keeps_keys(b, plain):
    """A request that times out replaces the socket (a broker stopped with SIGSTOP): the new
    socket has the keys too, so the next request, once the broker runs again, is served
    rather than refused. Client and AsyncClient."""
    s = Broker("stopped")
    try:
        with client(s, "app", request_timeout=0.5) as c:
            c.submit("nobody", b"before")
            epoch = c._epoch
            s.proc.send_signal(signal.SIGSTOP)
            try:
                try:
                    c.submit("nobody", b"while stopped")
                    check(False, "a stopped broker answered")
                except zfleet.Unreachable:
                    pass
            finally:
                s.proc.send_signal(signal.SIGCONT)
            check(c._epoch > epoch, "the socket was not replaced")
            c.request_timeout = 10
            jid = c.submit("nobody", b"after")
            check(c.get(jid).status == "queued", "served on the new socket")

        async def go():
            async with client(s, "app", zfleet.AsyncClient, request_timeout=0.5) as a:
                await a.submit("nobody", b"async before")
                epoch = a._epoch
                s.proc.send_signal(signal.SIGSTOP)
                try:
                    try:
                        await a.submit("nobody", b"async while stopped")
                        return "a stopped broker answered"
                    except zfleet.Unreachable:
                        pass
                finally:
                    s.proc.send_signal(signal.SIGCONT)
                if a._epoch == epoch:
                    return "the socket was not replaced"
                a.request_timeout = 10
                return (await a.get(await a.submit("nobody", b"async after"))).status
        check(asyncio.run(asyncio.wait_for(go(), 30)) == "queued", "async: served after")
    finally:
        s.kill()


def t_broker_restart(b, plain):
    """A CURVE broker killed (-9) and restarted (journal) while a client waits: the client
    reconnects with its keys and gets the result; a restart is no refusal."""
    j = Broker("journal", data=os.path.join(TMP, "journal-data"))
    try:
        with client(j, "app", heartbeat=0.25) as c:
            jid = c.submit("echo", b"survives a restart")   # queued: no worker yet
            errors = []

            def restart():
                try:
                    time.sleep(0.5)
                    j.kill()
                    time.sleep(0.3)
                    check(j.start(), "the broker came back")
                    j.worker("jw")
                except Exception as e:  # noqa: BLE001
                    errors.append(e)
            th = threading.Thread(target=restart)
            th.start()
            try:
                r = c.wait(jid, timeout=20)
            finally:
                th.join()
            check(not errors, "restart: %r" % errors)
            check(r.ok and r.output == b"survives a restart", "after the restart: %r" % (r,))
            check(c.run("echo", b"and on", timeout=10).ok, "served after the restart")
    finally:
        j.kill()


def t_bad_key_files(b, plain):
    """A clear ValueError at construction, for Client and AsyncClient alike."""
    junk = os.path.join(TMP, "junk.txt")
    with open(junk, "w") as f:
        f.write("not a certificate\n")
    bad_z85 = os.path.join(TMP, "badz85.key")
    with open(bad_z85, "w") as f:
        f.write('curve\n    public-key = "short"\n')
    mismatched = os.path.join(TMP, "mismatch.key_secret")
    with open(key("app")) as f, open(key("bob")) as g:
        pub_line = [x for x in f if "public-key" in x][0]
        sec_line = [x for x in g if "secret-key" in x][0]
    with open(mismatched, "w") as f:
        f.write("curve\n" + pub_line + sec_line)
    unreadable = os.path.join(TMP, "unreadable.key_secret")
    shutil.copy(key("app"), unreadable)
    os.chmod(unreadable, 0)
    cases = [
        (dict(key=key("app")), "both"),
        (dict(broker_key=key("broker.pub")), "both"),
        (dict(key=key("app.pub"), broker_key=key("broker.pub")), "no secret-key"),
        (dict(key=os.path.join(TMP, "missing.key_secret"), broker_key=key("broker.pub")),
         "No such file"),
        (dict(key=key("app"), broker_key=os.path.join(TMP, "missing.key")), "No such file"),
        (dict(key=junk, broker_key=key("broker.pub")), "not a CURVE certificate"),
        (dict(key=key("app"), broker_key=junk), "not a CURVE certificate"),
        (dict(key=key("app"), broker_key=bad_z85), "not 40 Z85"),
        (dict(key=mismatched, broker_key=key("broker.pub")), "public half"),
        (dict(key=KEYS, broker_key=key("broker.pub")), "cannot read"),
    ]
    if os.geteuid() != 0:   # root reads a mode-0 file
        cases.append((dict(key=unreadable, broker_key=key("broker.pub")), "Permission denied"))
    for kw, words in cases:
        for cls in (zfleet.Client, zfleet.AsyncClient):
            try:
                cls(b.clients, **kw)
                check(False, "%s(%r) accepted" % (cls.__name__, kw))
            except ValueError as e:
                check(words in str(e), "%s(%r): %s" % (cls.__name__, kw, e))


def t_owner_isolation(b, plain):
    """B's wait/get/cancel of A's job answer unknown job, as for a job that never was; A
    and an admin see it."""
    with client(b, "app") as a, client(b, "bob") as other, client(b, "admin") as admin:
        done = a.run("echo", b"A's result", timeout=10).id
        queued = a.submit("no-such-function", b"A's queued job")
        for jid in (done, queued):
            expect_unknown(lambda: other.wait(jid, timeout=5), "B waits for A's job %d" % jid)
            expect_unknown(lambda: other.get(jid), "B gets A's job %d" % jid)
            expect_unknown(lambda: other.cancel(jid), "B cancels A's job %d" % jid)
            expect_unknown(lambda: other.retry(jid), "B retries A's job %d" % jid)
        check(a.get(queued).status == "queued", "B's cancel did nothing")
        check(admin.get(done).output == b"A's result", "an admin reads A's job")
        check(a.get(done).output == b"A's result", "A reads its own job")
        check(isinstance(other.dead(), list), "dead() is the caller's own list")
        a.cancel(queued)
        check(a.wait(queued, timeout=5).status == "cancelled", "A cancels its own job")


def t_same_key(b, plain):
    """Two clients with one key (a web app's processes) wait for each other's jobs, and so
    does a forked child with the parent's client."""
    with client(b, "app") as c1, client(b, "app") as c2:
        j1 = c1.submit("echo", b"from c1")
        j2 = c2.submit("echo", b"from c2")
        check(c2.wait(j1, timeout=10).output == b"from c1", "c2 waits for c1's job")
        check(c1.wait(j2, timeout=10).output == b"from c2", "c1 waits for c2's job")
        queued = c1.submit("no-such-function", b"cancelled by the child")
        parent_job = c1.submit("echo", b"parent's job")
        r_fd, w_fd = os.pipe()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.close(r_fd)
                r = c1.wait(parent_job, timeout=10)   # the parent's client, in the child
                check(r.output == b"parent's job", "child waits: %r" % (r,))
                c1.cancel(queued)
                mine = c1.submit("echo", b"child's job")
                os.write(w_fd, b"%d\n" % mine)
                code = 0
            except BaseException:  # noqa: BLE001
                os.write(w_fd, traceback.format_exc().encode())
            finally:
                os._exit(code)   # never the parent's atexit (it kills the broker)
        os.close(w_fd)
        out = b""
        deadline = time.monotonic() + 30
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([r_fd], [], [], left)[0]:
                os.kill(pid, signal.SIGKILL)   # hung: fail, not hang
                break
            chunk = os.read(r_fd, 65536)
            if not chunk:
                break
            out += chunk
        os.close(r_fd)
        _, status = os.waitpid(pid, 0)
        check(os.waitstatus_to_exitcode(status) == 0, "child failed (%r):\n%s"
              % (status, out.decode(errors="replace")))
        child_job = int(out.split()[0])
        check(c2.wait(child_job, timeout=10).output == b"child's job",
              "the parent's other client waits for the child's job")
        check(c1.wait(queued, timeout=10).status == "cancelled",
              "the parent sees the child's cancel")
        check(c1.run("echo", b"parent after fork", timeout=10).output == b"parent after fork",
              "the parent's client goes on")


def t_threads(b, plain):
    """8 threads share one CURVE client, each submitting and waiting."""
    errors, wrong = [], []
    with client(b, "app") as c:
        def work(t):
            try:
                for i in range(20):
                    data = b"thread %d job %d" % (t, i)
                    if i % 2:
                        r = c.run("echo", data, timeout=30)
                    else:
                        r = c.wait(c.submit("echo", data), timeout=30)
                    if r.output != data:
                        wrong.append((data, r.output))
            except Exception as e:  # noqa: BLE001
                errors.append("thread %d: %r" % (t, e))
        threads = [threading.Thread(target=work, args=(t,), daemon=True) for t in range(8)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(120)
        check(not any(th.is_alive() for th in threads), "threads still running after 120 s")
    check(not errors, "%d thread(s) failed: %s" % (len(errors), errors[:3]))
    check(not wrong, "%d wrong output(s): %s" % (len(wrong), wrong[:3]))


def t_environment(b, plain):
    """ZFLEET_KEY / ZFLEET_BROKER_KEY when the arguments are not given; arguments win;
    one of the two alone is an error."""
    saved = {k: os.environ.get(k) for k in ("ZFLEET_KEY", "ZFLEET_BROKER_KEY", "ZFLEET_BROKER")}
    try:
        os.environ["ZFLEET_BROKER"] = b.clients
        os.environ["ZFLEET_KEY"] = key("app")
        os.environ["ZFLEET_BROKER_KEY"] = key("broker.pub")
        with zfleet.Client() as c:
            check(c.run("echo", b"from env", timeout=10).output == b"from env", "env keys")

        async def go():
            async with zfleet.AsyncClient() as a:
                return (await a.run("echo", b"async env", timeout=10)).output
        check(asyncio.run(asyncio.wait_for(go(), 30)) == b"async env", "async env keys")
        with zfleet.Client(key=key("admin")) as c:   # the argument wins over ZFLEET_KEY
            check("workers" in c.stats(), "key= over $ZFLEET_KEY (admin may read stats)")
        with zfleet.Client(key="", broker_key="", request_timeout=20) as c:   # CURVE off
            expect_denied(lambda: c.submit("echo", b"x"), "empty arguments turn the env off")
        del os.environ["ZFLEET_BROKER_KEY"]
        try:
            zfleet.Client()
            check(False, "ZFLEET_KEY alone accepted")
        except ValueError as e:
            check("ZFLEET_BROKER_KEY" in str(e), str(e))
        with zfleet.Client(broker_key=key("broker.pub")) as c:   # env key + argument
            check(c.run("echo", b"mixed", timeout=10).ok, "ZFLEET_KEY with broker_key=")
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def t_stats_admin(b, plain):
    """stats() by a client key: Denied (code 12, saying it is for admins); by an admin key
    it works, and counts the denials."""
    with client(b, "app", request_timeout=20) as c:
        expect_denied(c.stats, "stats as a client key", ("admin",))
        check(c.run("echo", b"still served", timeout=10).ok, "the client is served after it")
    with client(b, "admin") as c:
        s = c.stats()
        check(s["security"]["curve"] == 1 and len(s["workers"]) == 1, "admin stats: %r"
              % (s["security"],))

    async def go():
        async with client(b, "app", zfleet.AsyncClient) as a:
            try:
                await a.stats()
                return "no Denied"
            except zfleet.Denied as e:
                return e.code
    check(asyncio.run(asyncio.wait_for(go(), 30)) == 12, "async stats as a client key")


def reload_keys(b):
    """SIGHUP, and wait until the broker says it read its key directories again."""
    reloads = b.stats()["security"]["reloads"]
    b.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while b.stats()["security"]["reloads"] == reloads:
        check(time.monotonic() < deadline, "the broker did not reload")
        time.sleep(0.05)


def t_allowed_later(b, plain):
    """A client refused, whose key is then added (and the broker reloaded), is served by
    its next call on the same Client / AsyncClient object: a refused socket is not kept."""
    listed = os.path.join(KEYS, "clients", "stranger.key")
    with zfleet.Client(b.clients, request_timeout=20, key=key("stranger"),
                       broker_key=key("broker.pub")) as c:
        a = zfleet.AsyncClient(b.clients, request_timeout=20, key=key("stranger"),
                               broker_key=key("broker.pub"))
        loop = asyncio.new_event_loop()
        try:
            expect_denied(lambda: c.submit("echo", b"x"), "stranger before", ("refused",))
            expect_denied(lambda: loop.run_until_complete(a.submit("echo", b"x")),
                          "async stranger before", ("refused",))
            time.sleep(0.3)   # the replaced sockets are refused too, before the key is added
            shutil.copy(key("stranger.pub"), listed)
            reload_keys(b)
            r = c.run("echo", b"served now", timeout=10)
            check(r.ok and r.output == b"served now", "after the reload: %r" % (r,))
            r = loop.run_until_complete(a.run("echo", b"async served now", timeout=10))
            check(r.ok and r.output == b"async served now", "async after the reload: %r" % (r,))
        finally:
            loop.run_until_complete(a.close())
            loop.close()
            os.unlink(listed)
            reload_keys(b)


def t_revoked(b, plain):
    """bob's key removed from clients/ and SIGHUP: his open connection's next request is
    refused by the broker (code 12 -> Denied), a new connection at the handshake; app is
    undisturbed. (Last: it changes the key directory.)"""
    with client(b, "bob", request_timeout=20) as bob, client(b, "app") as app:
        check(bob.run("echo", b"before", timeout=10).ok, "bob before the reload")
        os.unlink(os.path.join(KEYS, "clients", "bob.key"))
        reload_keys(b)
        expect_denied(lambda: bob.submit("echo", b"after"), "revoked key, open connection",
                      ("no longer allowed",))
        expect_denied(lambda: bob.wait(12345, timeout=20), "revoked key: wait")
        with client(b, "bob", request_timeout=20) as fresh:
            expect_denied(lambda: fresh.submit("echo", b"after"), "revoked key, new connection",
                          ("refused this key",))
        check(app.run("echo", b"undisturbed", timeout=10).ok, "app still served")


TESTS = [
    ("keys from zmq.auth.create_certificates", t_pyzmq_keys),
    ("keys from zfleet keygen", t_keygen_keys),
    ("unknown/worker/no key, wrong broker key: Denied fast", t_refused_fast),
    ("keys against a broker without CURVE", t_curve_at_one_end),
    ("a replaced socket keeps the keys", t_new_socket_keeps_keys),
    ("broker restart: reconnects with the keys", t_broker_restart),
    ("bad key files: ValueError", t_bad_key_files),
    ("owner isolation", t_owner_isolation),
    ("same key: two clients and a fork", t_same_key),
    ("8 threads with CURVE", t_threads),
    ("ZFLEET_KEY / ZFLEET_BROKER_KEY", t_environment),
    ("stats: admin only", t_stats_admin),
    ("key allowed after a refusal (SIGHUP)", t_allowed_later),
    ("revoked key (SIGHUP)", t_revoked),
]


def tail(name, n=30):
    try:
        with open(os.path.join(TMP, name), errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


def main():
    for path in (BROKER, WORKER, CLI, EXAMPLE):
        if not os.path.exists(path):
            print("missing %s (build first)" % path)
            return 1
    if not zmq.has("curve"):
        print("libzmq without CURVE: skipped")
        return 77
    passed = failed = 0
    try:
        make_keys()
        b = Broker("curve")
        plain = Broker("plain", curve=False)
        b.worker("w1")
        plain.worker("pw1")
        b.wait_workers(1)
    except Exception as e:  # noqa: BLE001
        print("setup failed: %s" % e)
        print(tail("curve.log") + tail("curve-workers.log"))
        cleanup()
        print("pycurve: 0 passed, %d failed" % len(TESTS))
        return 1
    only = sys.argv[2:]
    for name, fn in TESTS:
        if only and not any(o in name for o in only):
            continue
        t0 = time.monotonic()
        try:
            fn(b, plain)
            passed += 1
            print("ok   %-52s %.2fs" % (name, time.monotonic() - t0), flush=True)
        except Exception:  # noqa: BLE001
            failed += 1
            print("FAIL %-52s %.2fs" % (name, time.monotonic() - t0), flush=True)
            traceback.print_exc()
    if failed:
        for log in sorted(os.listdir(TMP)):
            if log.endswith(".log"):
                print("---- %s (tail)\n%s" % (log, tail(log)))
    cleanup()
    shutil.rmtree(TMP, ignore_errors=True)
    print("pycurve: %d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
