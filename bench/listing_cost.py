#!/usr/bin/python3
"""Listing cost (issue 18): throughput of `zfleet bench throughput` alone and while a client
pages through 100,000 queued jobs with JOBS (limit 1000) in a loop, against one broker; the
two runs of a round alternate in order (alone first in odd rounds, listing first in even).

usage: [JOBS=N] [PAGES_PER_S=R] bench/listing_cost.py [BUILD_DIR] [ROUNDS]
(Debian's /usr/bin/python3: python3-zmq, python3-msgpack). PAGES_PER_S=0 (default) pages
back to back, as fast as the broker answers.
Prints one line per run and the mean loss. Starts its own broker (--no-journal) and two
workers on ipc:// endpoints in a scratch directory; stops them at the end."""
import json, os, subprocess, sys, tempfile, threading, time
import msgpack, zmq

build = sys.argv[1] if len(sys.argv) > 1 else "build"
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
jobs = int(os.environ.get("JOBS", "20000"))
pace = float(os.environ.get("PAGES_PER_S", "0"))  # 0: page as fast as the broker answers
d = tempfile.mkdtemp(prefix="zf-listing-")
cep, wep = f"ipc://{d}/c", f"ipc://{d}/w"
procs = [subprocess.Popen([f"{build}/broker/zfleet-broker", "--clients", cep, "--workers", wep,
                           "--no-journal"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
time.sleep(0.5)
for _ in range(2):
    procs.append(subprocess.Popen([f"{build}/worker/zfleet-worker", "--broker", wep, "--credits", "32"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
time.sleep(1.0)
ctx = zmq.Context()


def hdr(cmd, fields):
    return b"ZF\x01" + bytes([cmd]) + msgpack.packb(fields)


def preload(n):
    s = ctx.socket(zmq.DEALER)
    s.connect(cep)
    sent = got = 0
    while got < n:
        while sent < n and sent - got < 2000:
            s.send_multipart([hdr(0x01, {3: sent + 1, 4: "parked", 35: f"n={sent % 10}"}), b"x"])
            sent += 1
        s.recv_multipart()
        got += 1
    s.close()


stop = threading.Event()
pages = [0]


def lister():
    s = ctx.socket(zmq.DEALER)
    s.connect(cep)
    after = 0
    while not stop.is_set():
        f = {3: 1, 36: 1000}
        if after:
            f[1] = after
        s.send(hdr(0x09, f))
        parts = s.recv_multipart()
        after = msgpack.unpackb(parts[1], raw=False)["next"]
        pages[0] += 1
        if pace:
            time.sleep(1.0 / pace)
    s.close()


def throughput():
    out = subprocess.run([f"{build}/client/zfleet", "--broker", cep, "--json", "bench",
                          "throughput", "--jobs", str(jobs), "--payload", "64", "--inflight",
                          "256"], capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


preload(100000)
alone, listed, lister_cpu = [], [], []
try:
    for r in range(rounds):
        # the order alternates: a drift across the run (the result store filling, the
        # machine's other load) does not count as the listing's cost
        for listing in ((False, True) if r % 2 == 0 else (True, False)):
            if not listing:
                t = throughput()
                alone.append(t["jobs_per_s"] if "jobs_per_s" in t else t)
                continue
            stop.clear()
            pages[0] = 0
            th = threading.Thread(target=lister)
            cpu0, wall0 = time.process_time(), time.monotonic()
            th.start()
            t = throughput()
            stop.set()
            th.join()
            # this process does nothing else meanwhile: its CPU time is the lister's
            lister_cpu.append((time.process_time() - cpu0) / (time.monotonic() - wall0))
            listed.append(t["jobs_per_s"] if "jobs_per_s" in t else t)
        print(f"round {r + 1}: alone {alone[-1]:.0f} jobs/s, while listing {listed[-1]:.0f} "
              f"jobs/s ({pages[0]} pages of 1000 listed meanwhile, the lister using "
              f"{100 * lister_cpu[-1]:.1f} % of a core)", flush=True)
    a, l = sum(alone) / len(alone), sum(listed) / len(listed)
    print(f"mean: alone {a:.0f} jobs/s, listing {l:.0f} jobs/s, loss {100 * (a - l) / a:.1f} %")
    ratios = sorted(x / y for x, y in zip(listed, alone))
    mid = ratios[len(ratios) // 2] if len(ratios) % 2 else \
        (ratios[len(ratios) // 2 - 1] + ratios[len(ratios) // 2]) / 2
    print(f"listing/alone per round: median {mid:.3f}, range {ratios[0]:.3f}-{ratios[-1]:.3f}")
finally:
    for p in procs:
        p.terminate()
    for p in procs:
        p.wait()
