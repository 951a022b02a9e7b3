#!/usr/bin/python3
"""Tags, the job listing and pipelines in the Python client (issue 18), sync and asyncio, against a real
broker and worker from the build directory.

    /usr/bin/python3 tests/py/test_tags_listing.py BUILD_DIR

Exits 0 when every check passes, 1 otherwise; every process it starts is stopped."""
import asyncio
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
BUILD = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build"))
sys.path.insert(0, os.path.join(ROOT, "client", "python"))
import zfleet  # noqa: E402


def main() -> int:
    d = tempfile.mkdtemp(prefix="zf-pytags-")
    cep, wep = "ipc://%s/c" % d, "ipc://%s/w" % d
    procs = [subprocess.Popen([os.path.join(BUILD, "broker", "zfleet-broker"), "--clients", cep,
                               "--workers", wep, "--no-journal"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        time.sleep(0.3)
        procs.append(subprocess.Popen([os.path.join(BUILD, "worker", "zfleet-worker"),
                                       "--broker", wep],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        procs.append(subprocess.Popen([os.path.join(BUILD, "worker", "zfleet-worker"),
                                       "--broker", wep, "--module",
                                       os.path.join(HERE, "pipe_steps.py")],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        with zfleet.Client(cep, heartbeat=0.25) as c:
            jid = c.submit("echo", b"x", tags={"team": "web", "image": "42"})
            r = c.wait(jid, timeout=20)
            assert r.ok and r.tags == {"team": "web", "image": "42"}, r
            parked = [c.submit("parked", b"x", tags={"n": str(i)}) for i in range(25)]
            st = c.get(parked[0])
            assert isinstance(st, zfleet.Status) and st.tags == {"n": "0"}, st
            seen, after, pages = [], 0, 0
            while True:
                page = c.jobs(function="parked", limit=10, after=after)
                seen += [j["id"] for j in page["jobs"]]
                pages += 1
                after = page["next"]
                if not after:
                    break
            assert sorted(seen) == seen and sorted(seen) == sorted(parked), (seen, parked)
            assert pages == 3, pages
            one = c.jobs(tag="n=7")
            assert [j["id"] for j in one["jobs"]] == [parked[7]], one
            assert c.jobs(state="succeeded")["jobs"][0]["tags"] == "team=web,image=42"
            for bad in ({str(i): "v" for i in range(9)}, {"k": ""}, {"a=b": "c"},
                        {"k": "x" * 64}, {"k": "a,b"}):
                try:
                    c.submit("echo", b"x", tags=bad)
                except ValueError:
                    continue
                raise AssertionError("tags %r accepted" % (bad,))
            for kw in ({"limit": 0}, {"state": "nope"}, {"tag": "a=1,b=2"}):
                try:
                    c.jobs(**kw)  # type: ignore[arg-type]
                except ValueError:
                    continue
                raise AssertionError("jobs(%r) accepted" % (kw,))
            # a pipeline: each step appends its name; one id, step/steps in the result
            jid = c.submit("decode", b"x", then=["infer@cpu", "encode"])
            r = c.wait(jid, timeout=20)
            assert r.ok and r.output == b"x+decode@cpu+infer@cpu+encode@cpu", r
            assert (r.step, r.steps) == (3, 3), r
            # per-step options (zfleet.step), and progress that spans the steps
            assert zfleet.step("infer", "gpu", timeout_ms=5000, retries=2) == \
                "infer@gpu;timeout=5000;retries=2"
            assert zfleet.step("encode") == "encode"
            for bad_step in ({"function": ""}, {"function": "a,b"}, {"function": "a",
                             "device": "tpu"}, {"function": "a", "retries": 21}):
                try:
                    zfleet.step(**bad_step)  # type: ignore[arg-type]
                except ValueError:
                    continue
                raise AssertionError("step(%r) accepted" % (bad_step,))
            jid = c.submit("decode", b"x", then=[zfleet.step("prog", "cpu", timeout_ms=20000,
                                                             retries=1), "encode"])
            seen = [item for item in c.watch(jid, timeout=20)]
            r = seen[-1]
            assert isinstance(r, zfleet.Result) and r.ok, seen
            assert r.output == b"x+decode@cpu+prog@cpu+encode@cpu", r
            fractions = [(round(p.fraction, 3), p.text) for p in seen[:-1]]
            assert (0.5, "halfway") in fractions and (0.667, "step 3 of 3: encode") in \
                fractions, fractions
            assert [f for f, _ in fractions] == sorted(f for f, _ in fractions), fractions
            for then, exc in (("infer", TypeError), (["a,b"], ValueError),
                              (["s"] * 9, ValueError), (["infer@tpu"], zfleet.Rejected),
                              (["infer;retries=99"], zfleet.Rejected)):
                try:
                    c.submit("decode", b"x", then=then)
                except exc:
                    continue
                raise AssertionError("then=%r accepted" % (then,))

        async def run_async() -> None:
            async with zfleet.AsyncClient(cep, heartbeat=0.25) as a:
                j = await a.submit("echo", b"y", tags={"via": "asyncio"})
                r = await a.wait(j, timeout=20)
                assert r.tags == {"via": "asyncio"}, r
                page = await a.jobs(tag="via=asyncio")
                assert [x["id"] for x in page["jobs"]] == [j], page
                j = await a.submit("decode", b"z", then=["encode@cpu"])
                r = await a.wait(j, timeout=20)
                assert r.output == b"z+decode@cpu+encode@cpu" and r.steps == 2, r
                # while a job runs the broker paces listing and keeps at most 8 pages waiting
                # per connection: 20 tasks listing at once on one client all get their page
                # (they take 1.5-1.9 s in a release build, more under ASan: the job spins 6 s)
                spin = await a.submit("spin", b"6000")
                while (await a.get(spin)).status != "running":
                    await asyncio.sleep(0.02)
                pages = await asyncio.gather(*[a.jobs(limit=1000) for _ in range(20)])
                assert all(p["jobs"] for p in pages), pages
                assert (await a.get(spin)).status == "running", "the listing outlasted the job"
                assert (await a.wait(spin, timeout=20)).ok
        asyncio.run(run_async())
        print("OK")
        return 0
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()


if __name__ == "__main__":
    sys.exit(main())
