"""The container and Kubernetes files of deploy/ against the real programs (test `manifests`).

No cluster and no container engine: what can be checked without them, for real.

- deploy/k8s/*.yaml parse (python3-yaml), each document a known kind with a name.
- Every container's args, through deploy/entrypoint.sh (as the image runs them), are parsed
  by the real binary: the args followed by --help must exit 0 (an unknown option, or a bad
  value for a numeric one, exits 2), and every --flag must appear in that binary's --help.
- The broker StatefulSet, the CPU worker Deployment and the GPU fleet DaemonSet run for real,
  from their own args: mount paths mapped to temporary directories laid out as the kubelet
  lays out a Secret volume (..data symlinks), CURVE keys made by `zfleet keygen`, 0.0.0.0
  ports mapped to free local ones, the workers' tcp://SERVICE:PORT resolved through the
  manifests' Service to the broker's containerPort (so a wrong name or port fails). Both
  workers must register, a cpu and a gpu job must come back, and SIGTERM must stop each
  worker and the broker with exit 0 inside its terminationGracePeriodSeconds. The GPU fleet
  runs with --fake-gpu --gpus 0 in place of --gpus all, as this machine may have no GPU.
- Probes: startup and liveness on /healthz, readiness on /readyz, on the port of the
  broker's --metrics; with a broker that has --metrics, the endpoints answer 200 too.
- Grace periods: >= --drain-timeout (+ the fleet's 2 s) for workers, a drain-timeout that is
  not 0 (unbounded), and >= the broker unit's TimeoutStopSec for the broker.
- The Dockerfile: every runtime package exists in Debian 12 (apt-cache show), every library
  the built programs load (objdump -p NEEDED, resolved with ldd, owned per dpkg -S) is a
  runtime package, every -dev package of scripts/setup is in the build stage, the meson -D
  options exist, USER is the manifests' runAsUser, VOLUME is the broker's --data, EXPOSE
  covers the broker's ports.
- docs/DEPLOY.md creates every Secret the manifests mount.

Usage: check_manifests.py BUILD_DIR SOURCE_ROOT. Exit 0 ok, 1 a check failed, 77 skipped
(no python3-yaml).
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

try:
    import yaml
except ImportError:
    print("SKIP: python3-yaml not installed (Debian's python3-yaml)")
    sys.exit(77)

BUILD, SRC = sys.argv[1], sys.argv[2]
K8S = os.path.join(SRC, "deploy", "k8s")
ENTRY = os.path.join(SRC, "deploy", "entrypoint.sh")
DOCKERFILE = os.path.join(SRC, "deploy", "Dockerfile")
BINS = {"zfleet-broker": "broker/zfleet-broker", "zfleet-worker": "worker/zfleet-worker",
        "zfleet": "client/zfleet"}
VERB_BIN = {"broker": "zfleet-broker", "worker": "zfleet-worker", "fleet": "zfleet-worker"}
FLEET_KILL_MARGIN_MS = 2000  # worker/fleet.c: what is left is killed 2 s after the drain
failures = []


def fail(msg):
    failures.append(msg)
    print("FAIL: " + msg, file=sys.stderr)


def note(msg):
    print("note: " + msg)


def run(cmd, **kw):
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=kw.pop("timeout", 60), **kw)


# ------------------------------------------------------------------ the manifests


def load_manifests():
    docs = []
    names = sorted(f for f in os.listdir(K8S) if f.endswith(".yaml"))
    if not names:
        fail("no .yaml in " + K8S)
    for name in names:
        with open(os.path.join(K8S, name)) as f:
            try:
                parsed = [d for d in yaml.safe_load_all(f) if d is not None]
            except yaml.YAMLError as e:
                fail("%s does not parse: %s" % (name, e))
                continue
        for d in parsed:
            if not isinstance(d, dict) or not d.get("kind") or not d.get("apiVersion") \
                    or not d.get("metadata", {}).get("name"):
                fail("%s: a document without apiVersion, kind or metadata.name" % name)
                continue
            d["_file"] = name
            docs.append(d)
    return docs


def one(docs, kind, pred=lambda d: True):
    found = [d for d in docs if d["kind"] == kind and pred(d)]
    if len(found) != 1:
        fail("expected exactly one %s, found %d" % (kind, len(found)))
        return None
    return found[0]


def arg_value(args, flag):
    """The value after flag (the last one wins, as getopt does); None when absent."""
    val = None
    for i, a in enumerate(args):
        if a == flag and i + 1 < len(args):
            val = args[i + 1]
    return val


def port_of(url):
    m = re.match(r"^(?:tcp://)?([^:/]+):(\d+)$", url or "")
    return (m.group(1), int(m.group(2))) if m else (None, None)


# ------------------------------------------------------------------ the binaries


def bin_dir(tmp):
    """A directory of the build's programs under their installed names (ZFLEET_BIN)."""
    d = os.path.join(tmp, "bin")
    os.makedirs(d)
    for name, rel in BINS.items():
        os.symlink(os.path.abspath(os.path.join(BUILD, rel)), os.path.join(d, name))
    return d


HELP = {}


def help_of(binary, bindir):
    if binary not in HELP:
        r = run([os.path.join(bindir, binary), "--help"])
        HELP[binary] = r.stdout
    return HELP[binary]


def check_args_parse(where, c, bindir, broker_has_metrics):
    args = [str(a) for a in c.get("args", [])]
    if c.get("command"):
        fail("%s: sets command:, bypassing the image's entrypoint (tini, verbs)" % where)
    if not args or args[0] not in VERB_BIN:
        fail("%s: args must start with one of %s (deploy/entrypoint.sh)" % (where, list(VERB_BIN)))
        return
    binary = VERB_BIN[args[0]]
    text = help_of(binary, bindir)
    rest = args[1:]
    if binary == "zfleet-broker" and not broker_has_metrics and "--metrics" in rest:
        note("%s: this broker has no --metrics yet (issue 15's metrics work not merged): "
             "--metrics left out of the parse check" % where)
        i = rest.index("--metrics")
        rest = rest[:i] + rest[i + 2:]
    for a in rest:
        if a.startswith("--") and not re.search(r"(^|\s)%s(\s|$|,)" % re.escape(a), text,
                                                re.M):
            fail("%s: %s is not in `%s --help`" % (where, a, binary))
    env = dict(os.environ, ZFLEET_BIN=bindir)
    r = run(["sh", ENTRY, args[0]] + rest + ["--help"], env=env)
    if r.returncode != 0:
        fail("%s: `%s %s --help` exits %d: %s" % (where, binary, " ".join(rest), r.returncode,
                                                  r.stdout.strip().splitlines()[-1:]))


# ------------------------------------------------------------------ static checks


def pod_spec(d):
    return d["spec"]["template"]["spec"]


def check_probes(broker_c, metrics):
    host, mport = port_of(metrics)
    if mport is None:
        fail("broker: --metrics %r is not HOST:PORT" % metrics)
        return
    if host != "0.0.0.0":
        fail("broker: --metrics %s binds %s; the kubelet probes the pod's address" % (metrics, host))
    ports = {p.get("name"): p["containerPort"] for p in broker_c.get("ports", [])}
    want = {"startupProbe": "/healthz", "livenessProbe": "/healthz", "readinessProbe": "/readyz"}
    for probe, path in want.items():
        p = broker_c.get(probe, {}).get("httpGet")
        if not p:
            fail("broker: no %s.httpGet" % probe)
            continue
        if p.get("path") != path:
            fail("broker: %s on %r, the broker serves %s" % (probe, p.get("path"), path))
        port = ports.get(p.get("port"), p.get("port"))
        if port != mport:
            fail("broker: %s on port %r, --metrics listens on %d" % (probe, p.get("port"), mport))
    # the startup probe must cover a long replay before liveness may kill the broker
    sp = broker_c.get("startupProbe", {})
    budget = sp.get("periodSeconds", 10) * sp.get("failureThreshold", 3)
    if budget < 600:
        fail("broker: the startup probe allows %d s; a big journal's replay needs more (>= 600)"
             % budget)


def check_grace(where, spec, c, fleet):
    args = [str(a) for a in c.get("args", [])]
    grace = spec.get("terminationGracePeriodSeconds", 30)
    drain = arg_value(args, "--drain-timeout")
    if drain is None or int(drain) == 0:
        fail("%s: no --drain-timeout, or 0 (a drain without bound: SIGKILL would cut it)" % where)
        return
    need = int(drain) + (FLEET_KILL_MARGIN_MS if fleet else 0)
    if grace * 1000 < need:
        fail("%s: terminationGracePeriodSeconds %d < the drain (%d ms)" % (where, grace, need))


def unit_stop_s():
    with open(os.path.join(SRC, "deploy", "systemd", "zfleet-broker.service")) as f:
        m = re.search(r"^TimeoutStopSec=(\d+)s$", f.read(), re.M)
    return int(m.group(1)) if m else 60


def check_security(where, spec, c, uid):
    sc = spec.get("securityContext", {})
    if not sc.get("runAsNonRoot") or sc.get("runAsUser") != uid:
        fail("%s: runAsNonRoot/runAsUser %r, the image's USER is %d" % (where, sc.get("runAsUser"), uid))
    csc = c.get("securityContext", {})
    if csc.get("allowPrivilegeEscalation") is not False:
        fail("%s: allowPrivilegeEscalation is not false" % where)
    if "ALL" not in csc.get("capabilities", {}).get("drop", []):
        fail("%s: capabilities not dropped" % where)


def check_services(docs, broker_sts, broker_c):
    labels = broker_sts["spec"]["template"]["metadata"]["labels"]
    cports = {p.get("name"): p["containerPort"] for p in broker_c.get("ports", [])}
    services = {}
    for s in (d for d in docs if d["kind"] == "Service"):
        sel = s["spec"].get("selector", {})
        if any(labels.get(k) != v for k, v in sel.items()):
            continue
        for p in s["spec"]["ports"]:
            tp = p.get("targetPort", p["port"])
            target = cports.get(tp, tp)
            if target not in cports.values():
                fail("Service %s port %s targets %r, not a broker containerPort"
                     % (s["metadata"]["name"], p["port"], tp))
            services[(s["metadata"]["name"], p["port"])] = target
    gov = broker_sts["spec"].get("serviceName")
    if not any(n == gov for n, _ in services):
        fail("StatefulSet serviceName %r is not a Service selecting the broker" % gov)
    return services


def check_secrets_documented(docs):
    with open(os.path.join(SRC, "docs", "DEPLOY.md")) as f:
        text = f.read()
    made = set(re.findall(r"kubectl create secret generic ([a-z0-9-]+)", text))
    for d in docs:
        if "template" not in d.get("spec", {}):
            continue
        for v in pod_spec(d).get("volumes", []):
            if "secret" in v and v["secret"]["secretName"] not in made:
                fail("%s mounts Secret %s, which docs/DEPLOY.md never creates"
                     % (d["metadata"]["name"], v["secret"]["secretName"]))


# ------------------------------------------------------------------ the Dockerfile


def dockerfile_stages():
    with open(DOCKERFILE) as f:
        text = re.sub(r"\\\n", " ", f.read())
    lines = [l.strip() for l in text.splitlines() if l.strip() and not l.strip().startswith("#")]
    stages, cur = [], None
    for l in lines:
        if l.upper().startswith("FROM "):
            cur = []
            stages.append(cur)
        elif cur is not None:
            cur.append(l)
    return stages


def apt_packages(stage):
    pkgs = []
    for l in stage:
        for m in re.finditer(r"apt-get install ([^&;]*)", l):
            pkgs += [w for w in m.group(1).split() if not w.startswith("-")]
    return pkgs


def debian_12():
    try:
        with open("/etc/os-release") as f:
            return 'VERSION_ID="12"' in f.read()
    except OSError:
        return False


def needed_packages():
    """Debian packages of the libraries the built programs load; None entries are notes."""
    out = {}
    files = [os.path.join(BUILD, r) for r in BINS.values()] + [os.path.join(BUILD, "client", "libzfleet.so")]
    for f in files:
        needed = set(re.findall(r"^\s*NEEDED\s+(\S+)", run(["objdump", "-p", f]).stdout, re.M))
        if not needed:
            fail("objdump -p %s: no NEEDED entries" % f)
        ldd = run(["ldd", f]).stdout
        for l in ldd.splitlines():
            m = re.match(r"\s*(\S+) => (\S+)", l)
            # direct dependencies only: theirs come with their packages
            if not m or m.group(1) not in needed or m.group(1).startswith("libzfleet"):
                continue
            lib, path = m.group(1), os.path.realpath(m.group(2))
            if lib.startswith(("libasan", "libubsan", "liblsan", "libtsan")):
                continue  # a sanitizer build (scripts/test): not what the image builds
            r = run(["dpkg", "-S", path])
            if r.returncode != 0:
                r = run(["dpkg", "-S", m.group(2)])
            out[lib] = r.stdout.split(":")[0] if r.returncode == 0 else None
    return out


def check_dockerfile(broker_args, broker_c, runtime_uid_expected):
    stages = dockerfile_stages()
    if len(stages) < 2:
        fail("Dockerfile: not multi-stage (%d FROM)" % len(stages))
        return None
    build, runtime = stages[0], stages[-1]
    rpkgs, bpkgs = apt_packages(runtime), apt_packages(build)
    if not rpkgs or not bpkgs:
        fail("Dockerfile: no apt-get install in the build or the runtime stage")
    if any(p.endswith("-dev") for p in rpkgs):
        fail("Dockerfile: -dev packages in the runtime stage: %s" % [p for p in rpkgs if p.endswith("-dev")])
    if debian_12():
        want = sorted(set(rpkgs + bpkgs))
        # one call (each takes a second): it lists the packages it knows
        shown = run(["apt-cache", "show", "--no-all-versions"] + want).stdout
        known = set(re.findall(r"^Package: (\S+)", shown, re.M))
        for p in want:
            if p not in known:
                fail("Dockerfile: package %s is not in Debian 12 (apt-cache show)" % p)
    else:
        note("not Debian 12: apt-cache checks of the Dockerfile's packages skipped")
    for lib, pkg in needed_packages().items():
        if pkg is None:
            if "cudart" in lib:
                note("%s is not a Debian package: the Dockerfile copies it from the build stage" % lib)
            else:
                fail("Dockerfile: %s is loaded but belongs to no Debian package" % lib)
        elif pkg not in rpkgs and pkg not in ("libc6",):
            fail("Dockerfile: the programs load %s (package %s), not in the runtime stage" % (lib, pkg))
    # every -dev package scripts/setup installs to build is in the build stage
    with open(os.path.join(SRC, "scripts", "setup")) as f:
        m = re.search(r"pkgs=\((.*?)\)", f.read(), re.S)
    setup = re.findall(r"\b([a-z0-9.+-]+-dev)\b", m.group(1)) if m else []
    for p in setup:
        if p.startswith("libclang-rt"):
            continue  # the sanitizer runtime: tests only
        if p not in bpkgs:
            fail("Dockerfile: the build stage lacks %s (scripts/setup builds with it)" % p)
    # meson -D options exist in this build's options
    opts = json.loads(run(["meson", "introspect", BUILD, "--buildoptions"]).stdout)
    names = {o["name"] for o in opts}
    text = " ".join(build)
    for o in re.findall(r"-D([a-z_]+)=", text):
        if o not in names:
            fail("Dockerfile: meson option -D%s does not exist" % o)
    for must in ("meson setup", "ninja -C", "meson install", "--destdir"):
        if must not in text:
            fail("Dockerfile: the build stage does not run '%s'" % must)
    rt = " ".join(runtime)
    user = re.search(r"\bUSER (\d+)", rt)
    uid = int(user.group(1)) if user else None
    if uid is None or uid == 0:
        fail("Dockerfile: the runtime stage has no numeric non-root USER")
    vol = re.search(r"\bVOLUME (\S+)", rt)
    data = arg_value(broker_args, "--data")
    if not vol or vol.group(1) != data:
        fail("Dockerfile: VOLUME %r is not the broker's --data %r" % (vol and vol.group(1), data))
    expose = set(int(p) for p in re.findall(r"\bEXPOSE ([\d ]+)", rt)[0].split()) \
        if "EXPOSE" in rt else set()
    for p in broker_c.get("ports", []):
        if p["containerPort"] not in expose:
            fail("Dockerfile: EXPOSE lacks the broker's port %d" % p["containerPort"])
    if "tini" not in rpkgs or "zfleet-entrypoint" not in rt or "entrypoint.sh" not in text:
        fail("Dockerfile: the ENTRYPOINT is not tini + deploy/entrypoint.sh")
    return uid


# ------------------------------------------------------------------ the real run


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def secret_volume(root, files):
    """A directory laid out as the kubelet mounts a Secret: the files in a timestamped
    directory, ..data a symlink to it, and each name a symlink through ..data."""
    os.makedirs(root)
    stamp = "..2026_12_02_00_00_00.000000001"
    os.makedirs(os.path.join(root, stamp))
    for name, src in files.items():
        shutil.copy(src, os.path.join(root, stamp, name))
        os.chmod(os.path.join(root, stamp, name), 0o440)
    os.symlink(stamp, os.path.join(root, "..data"))
    for name in files:
        os.symlink(os.path.join("..data", name), os.path.join(root, name))


def map_container(where, spec, c, tmp, keys, vc_names):
    """A container's args with its mounts mapped to directories under tmp."""
    vols = {v["name"]: v for v in spec.get("volumes", [])}
    mounts = {}
    for m in c.get("volumeMounts", []):
        name, path = m["name"], m["mountPath"]
        local = os.path.join(tmp, where, name)
        v = vols.get(name)
        if v and "secret" in v:
            sname = v["secret"]["secretName"]
            if sname not in keys:
                fail("%s: Secret %s has no contents this test knows" % (where, sname))
                continue
            if not m.get("readOnly"):
                fail("%s: Secret %s mounted writable" % (where, sname))
            secret_volume(local, keys[sname])
        elif (v and "emptyDir" in v) or name in vc_names:
            os.makedirs(local)
        else:
            fail("%s: volume %s is neither a Secret, an emptyDir nor a claim" % (where, name))
            continue
        mounts[path] = local
    out = []
    for a in (str(x) for x in c.get("args", [])):
        if a.startswith("/"):
            best = max((p for p in mounts if a == p or a.startswith(p + "/")), key=len,
                       default=None)
            if best is None:
                fail("%s: %s is on no volume of the pod" % (where, a))
            else:
                a = mounts[best] + a[len(best):]
        out.append(a)
    return out, mounts


def wait_for(pred, seconds, what):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.2)
    fail("timed out after %d s waiting for %s" % (seconds, what))
    return None


def keygen(tmp, bindir):
    d = os.path.join(tmp, "keygen")
    os.makedirs(d)
    for n in ("broker", "worker", "webapp", "ops"):
        r = run([os.path.join(bindir, "zfleet"), "keygen", n], cwd=d)
        if r.returncode != 0:
            fail("zfleet keygen %s: %s" % (n, r.stdout))
    k = lambda n: os.path.join(d, n)
    # what docs/DEPLOY.md puts into each Secret
    return {
        "zfleet-broker-key": {"broker.key_secret": k("broker.key_secret")},
        "zfleet-client-keys": {"webapp.key": k("webapp.key")},
        "zfleet-worker-keys": {"worker.key": k("worker.key")},
        "zfleet-admin-keys": {"ops.key": k("ops.key")},
        "zfleet-worker-curve": {"worker.key_secret": k("worker.key_secret"),
                                "broker.key": k("broker.key")},
    }, d


def http_status(port, path):
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=2)
        s.sendall(("GET %s HTTP/1.0\r\nHost: x\r\n\r\n" % path).encode())
        head = s.recv(64).decode(errors="replace")
        s.close()
        m = re.match(r"HTTP/1\.[01] (\d+)", head)
        return int(m.group(1)) if m else None
    except OSError:
        return None


def run_for_real(docs, sts, cpu, gpu, services, bindir, broker_has_metrics):
    tmp = tempfile.mkdtemp(prefix="zfleet-manifests.")
    procs = []
    logs = {}
    try:
        keys, kdir = keygen(tmp, bindir)
        env = dict(os.environ, ZFLEET_BIN=bindir)
        for k in ("ZFLEET_BROKER", "ZFLEET_KEY", "ZFLEET_BROKER_KEY", "ZFLEET_WORKER_BROKER",
                  "ZFLEET_DATA"):
            env.pop(k, None)

        bspec, bc = pod_spec(sts), pod_spec(sts)["containers"][0]
        vcs = [v["metadata"]["name"] for v in sts["spec"].get("volumeClaimTemplates", [])]
        bargs, _ = map_container("broker", bspec, bc, tmp, keys, vcs)
        # the broker's listening ports, by containerPort, mapped to free local ones
        local = {}
        for flag in ("--clients", "--workers", "--metrics"):
            v = arg_value(bargs, flag)
            _, p = port_of(v)
            if p is None:
                if flag != "--metrics":
                    fail("broker: %s %r is not tcp://HOST:PORT" % (flag, v))
                continue
            local[p] = free_port()
        out = []
        for i, a in enumerate(bargs):
            h, p = port_of(a)
            if p in local and i > 0 and bargs[i - 1] in ("--clients", "--workers", "--metrics"):
                a = a.replace("%s:%d" % (h, p), "127.0.0.1:%d" % local[p])
            out.append(a)
        bargs = out
        if not broker_has_metrics and "--metrics" in bargs:
            i = bargs.index("--metrics")
            bargs = bargs[:i] + bargs[i + 2:]
        logs["broker"] = open(os.path.join(tmp, "broker.log"), "w+")
        procs.append(("broker", bspec, subprocess.Popen(["sh", ENTRY] + bargs, env=env,
                                                        stdout=logs["broker"], stderr=subprocess.STDOUT)))
        _, cport = port_of(arg_value(bargs, "--clients"))
        admin = [os.path.join(bindir, "zfleet"), "--broker", "tcp://127.0.0.1:%d" % cport,
                 "--key", os.path.join(kdir, "ops.key_secret"),
                 "--broker-key", os.path.join(kdir, "broker.key")]
        if not wait_for(lambda: run(admin + ["stats"], timeout=10).returncode == 0, 30,
                        "the broker to answer an admin's stats"):
            return
        if broker_has_metrics:
            mp = local.get(port_of(arg_value([str(a) for a in bc["args"]], "--metrics"))[1])
            for path in ("/healthz", "/readyz"):
                if not wait_for(lambda: http_status(mp, path) == 200, 20, "GET %s = 200" % path):
                    pass

        for where, d, fake in (("worker-cpu", cpu, False), ("worker-gpu", gpu, True)):
            spec, c = pod_spec(d), pod_spec(d)["containers"][0]
            wargs, _ = map_container(where, spec, c, tmp, keys, [])
            out = []
            for a in wargs:
                h, p = port_of(a)
                if p is not None and a.startswith("tcp://"):
                    target = services.get((h, p))
                    if target is None:
                        fail("%s: %s is no Service port of the broker" % (where, a))
                        return
                    if target not in local:
                        fail("%s: %s reaches broker port %d, where it does not listen"
                             % (where, a, target))
                        return
                    a = "tcp://127.0.0.1:%d" % local[target]
                out.append(a)
            if fake:  # no GPU here: one fake GPU stands for what the device plugin hands over
                i = out.index("--gpus")
                out[i + 1] = "0"
                out.append("--fake-gpu")
            logs[where] = open(os.path.join(tmp, where + ".log"), "w+")
            procs.append((where, spec, subprocess.Popen(["sh", ENTRY] + out, env=env,
                                                        stdout=logs[where], stderr=subprocess.STDOUT)))

        def devices():
            r = run(admin + ["--json", "workers"], timeout=10)
            if r.returncode != 0:
                return None
            kinds = sorted(re.findall(r'"device"\s*:\s*"(cpu|gpu)', r.stdout))
            return kinds if "cpu" in kinds and "gpu" in kinds else None

        if not wait_for(devices, 30, "a cpu and a gpu worker registered"):
            return
        client = [os.path.join(bindir, "zfleet"), "--broker", "tcp://127.0.0.1:%d" % cport,
                  "--key", os.path.join(kdir, "webapp.key_secret"),
                  "--broker-key", os.path.join(kdir, "broker.key")]
        for dev in ("cpu", "gpu"):
            r = run(client + ["--json", "submit", "echo", "from-" + dev, "--device", dev, "--wait",
                              "--timeout", "20000"], timeout=30)
            if r.returncode != 0 or "from-" + dev not in r.stdout:
                fail("an echo job on a %s worker: exit %d, %s" % (dev, r.returncode, r.stdout.strip()))

        # SIGTERM as the kubelet sends it; each must exit 0 within its grace period
        for where, spec, p in reversed(procs):
            grace = spec.get("terminationGracePeriodSeconds", 30)
            p.send_signal(signal.SIGTERM)
            try:
                rc = p.wait(timeout=grace)
                if rc != 0:
                    fail("%s exits %d on SIGTERM" % (where, rc))
            except subprocess.TimeoutExpired:
                fail("%s still runs %d s (its grace period) after SIGTERM" % (where, grace))
        if failures:
            for name, f in logs.items():
                f.seek(0)
                print("--- %s log (tail)\n%s" % (name, "".join(f.readlines()[-15:])), file=sys.stderr)
    finally:
        for _, _, p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for f in logs.values():
            f.close()
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    docs = load_manifests()
    sts = one(docs, "StatefulSet")
    cpu = one(docs, "Deployment")
    gpu = one(docs, "DaemonSet")
    if not (sts and cpu and gpu):
        return 1
    tmp = tempfile.mkdtemp(prefix="zfleet-bin.")
    try:
        bindir = bin_dir(tmp)
        broker_has_metrics = "--metrics" in help_of("zfleet-broker", bindir)
        if not broker_has_metrics:
            note("this broker has no --metrics: the probes are checked against the manifest's "
                 "flag only, not fetched")
        workloads = (("broker", sts, False), ("worker-cpu", cpu, False), ("worker-gpu", gpu, True))
        for where, d, _ in workloads:
            for c in pod_spec(d)["containers"]:
                check_args_parse(where, c, bindir, broker_has_metrics)

        bc = pod_spec(sts)["containers"][0]
        bargs = [str(a) for a in bc["args"]]
        if sts["spec"].get("replicas") != 1:
            fail("the broker StatefulSet must have replicas: 1")
        data = arg_value(bargs, "--data")
        vcs = [v["metadata"]["name"] for v in sts["spec"].get("volumeClaimTemplates", [])]
        if not any(m["mountPath"] == data and m["name"] in vcs for m in bc.get("volumeMounts", [])):
            fail("the broker's --data %r is not a PersistentVolumeClaim mount" % data)
        check_probes(bc, arg_value(bargs, "--metrics"))
        if pod_spec(sts).get("terminationGracePeriodSeconds", 30) < unit_stop_s():
            fail("the broker's terminationGracePeriodSeconds is below the unit's TimeoutStopSec")
        check_grace("worker-cpu", pod_spec(cpu), pod_spec(cpu)["containers"][0], fleet=False)
        gc = pod_spec(gpu)["containers"][0]
        check_grace("worker-gpu", pod_spec(gpu), gc, fleet=True)
        if [str(a) for a in gc["args"]][:1] != ["fleet"]:
            fail("the GPU DaemonSet does not run a fleet")
        if int(gc.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0)) < 1:
            fail("the GPU DaemonSet does not request nvidia.com/gpu")
        if not any(t.get("key") == "nvidia.com/gpu" for t in pod_spec(gpu).get("tolerations", [])):
            fail("the GPU DaemonSet does not tolerate the nvidia.com/gpu taint")
        if not pod_spec(gpu).get("nodeSelector") and not pod_spec(gpu).get("affinity"):
            fail("the GPU DaemonSet has no nodeSelector or affinity for GPU nodes")
        services = check_services(docs, sts, bc)
        check_secrets_documented(docs)
        uid = check_dockerfile(bargs, bc, None)
        for where, d, _ in workloads:
            check_security(where, pod_spec(d), pod_spec(d)["containers"][0], uid)
        run_for_real(docs, sts, cpu, gpu, services, bindir, broker_has_metrics)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if failures:
        print("%d check(s) failed" % len(failures), file=sys.stderr)
        return 1
    print("ok: %d manifests documents, the Dockerfile and a real run of their args" % len(docs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
