#!/usr/bin/python3
"""The Python client as an installed package (issue 14): client/python is pip-installed into a
fresh venv (`python3 -m venv --system-site-packages`, `pip install --no-build-isolation
--no-index`: no network needed, Debian's pyzmq, msgpack and setuptools are used), and the
venv's interpreter, away from the checkout, imports zfleet from the venv, checks
`__version__` (the project's, from meson.build) and py.typed, and runs jobs through a real
broker and worker started from the build directory.

    /usr/bin/python3 tests/py/test_package.py BUILD_DIR

Exits 0 when every check passes, 77 (skipped) when the venv module or pip is missing,
1 otherwise. Every process it starts is killed before it exits.
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
BUILD = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build"))
BROKER = os.path.join(BUILD, "broker", "zfleet-broker")
WORKER = os.path.join(BUILD, "worker", "zfleet-worker")

# Runs in the venv's interpreter: argv[1] the broker's client endpoint, argv[2] the version
# expected, argv[3] the venv. Prints "OK" last when every check passed.
PROBE = r'''
import os, sys
import zfleet
endpoint, version, venv = sys.argv[1:4]
here = os.path.dirname(os.path.abspath(zfleet.__file__))
assert here.startswith(os.path.realpath(venv)) or here.startswith(venv), \
    "zfleet imported from %s, not from the venv" % here
assert zfleet.__version__ == version, "__version__ %r, expected %r" % (zfleet.__version__, version)
assert os.path.isfile(os.path.join(here, "py.typed")), "py.typed is not installed"
assert "Progress" in zfleet.__all__ and "__version__" in zfleet.__all__
with zfleet.Client(endpoint, heartbeat=0.25) as c:
    r = c.run("echo", b"from the installed package", timeout=20)
    assert r.ok and r.output == b"from the installed package", repr(r)
    jid = c.submit("spin", b"300")
    items = list(c.watch(jid, timeout=20))
    assert isinstance(items[-1], zfleet.Result) and items[-1].ok, repr(items[-1:])
    assert all(isinstance(p, zfleet.Progress) for p in items[:-1]), repr(items[:3])
print("ran job %d and watched job %d (%d progress reports) with zfleet %s from %s"
      % (r.id, jid, len(items) - 1, zfleet.__version__, here))
print("OK")
'''


def project_version():
    with open(os.path.join(ROOT, "meson.build")) as f:
        m = re.search(r"version\s*:\s*'([^']+)'", f.read())
    return m.group(1)


def main():
    for path in (BROKER, WORKER):
        if not os.path.exists(path):
            print("missing %s (build first)" % path)
            return 1
    try:
        import ensurepip  # noqa: F401  (python3-venv)
    except ImportError:
        print("skipped: no venv/ensurepip (Debian python3-venv)")
        return 77
    tmp = tempfile.mkdtemp(prefix="zf-pkg-")
    procs = []
    try:
        venv = os.path.join(tmp, "venv")
        r = subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", venv],
                           capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            print("python3 -m venv failed:\n%s%s" % (r.stdout, r.stderr))
            return 1
        pip = os.path.join(venv, "bin", "pip")
        if not os.path.exists(pip):
            print("skipped: the venv has no pip")
            return 77
        # Built from a copy: a build leaves build/ and *.egg-info next to the sources
        src = os.path.join(tmp, "src")
        shutil.copytree(os.path.join(ROOT, "client", "python"), src,
                        ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)
        env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
        r = subprocess.run([pip, "install", "--no-build-isolation", "--no-index", src],
                           capture_output=True, text=True, timeout=300, env=env, cwd=tmp)
        if r.returncode != 0:
            print("pip install failed:\n%s%s" % (r.stdout, r.stderr))
            return 1
        print("pip install: ok (%s)" % r.stdout.strip().splitlines()[-1])

        clients = "ipc://%s/b-c" % tmp
        workers = "ipc://%s/b-w" % tmp
        log = open(os.path.join(tmp, "fleet.log"), "ab")
        procs.append(subprocess.Popen([BROKER, "--clients", clients, "--workers", workers,
                                       "--heartbeat", "250", "--no-journal"],
                                      stdout=log, stderr=subprocess.STDOUT))
        procs.append(subprocess.Popen([WORKER, "--broker", workers, "--heartbeat", "250",
                                       "--name", "pkgw"], stdout=log, stderr=subprocess.STDOUT))
        log.close()
        r = subprocess.run([os.path.join(venv, "bin", "python"), "-c", PROBE, clients,
                            project_version(), venv],
                           capture_output=True, text=True, timeout=120, env=env, cwd=tmp)
        print(r.stdout + r.stderr)
        if r.returncode != 0 or not r.stdout.rstrip().endswith("OK"):
            with open(os.path.join(tmp, "fleet.log"), errors="replace") as f:
                print("---- fleet log\n" + f.read()[-3000:])
            print("pypackage: FAILED")
            return 1
        print("pypackage: passed")
        return 0
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
