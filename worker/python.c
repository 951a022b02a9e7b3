/*  zf_python — see zf_python.h. CPython embedded on the handler thread.

    Invariants:
    - only the handler thread runs the interpreter through this file, and it holds the GIL
      only between PyEval_RestoreThread(ts) and PyEval_SaveThread() in one zf_pymod_* call;
      `ts` is its thread state, saved while the GIL is released;
    - a job's `data` is a memoryview over a payload object that holds a reference to the
      input frame (zmq_msg_copy shares the buffer: no copy), so a view that outlives the call
      (np.frombuffer(job.data) kept in a global) reads memory that is still alive; the
      memoryview itself is released after the call, so using job.data later raises
      ValueError, and progress()/cancelled raise RuntimeError;
    - an output of ZERO_COPY_MIN bytes or more is sent from the returned object's own buffer:
      the Py_buffer is held until ZeroMQ is done with it; ZeroMQ's free callback (any thread,
      no GIL) only pushes it on `released`, which the handler thread empties under the GIL.
*/
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "zf_python.h"

#include <errno.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include "../common/zf_util.h"
#include "../proto/zf_proto.h"
#include "zf_runner.h"

#ifndef ZF_PYTHON_EXE
#error "ZF_PYTHON_EXE (the embedded Python's executable) comes from worker/meson.build"
#endif

/* Below this an output is copied: cheaper than holding and later releasing the buffer. */
#define ZERO_COPY_MIN (64 * 1024)

/* Helpers the C side calls, in Python because they are mostly string work. */
static const char BOOT[] =
    "import importlib, importlib.util, os, sys, traceback, types\n"
    "class LoadError(Exception):\n"
    "    pass\n"
    "def load(spec):\n"
    "    if spec.startswith('py:'):\n"
    "        return importlib.import_module(spec[3:])\n"
    "    path = os.path.abspath(spec)\n"
    "    name = os.path.splitext(os.path.basename(path))[0]\n"
    "    d = os.path.dirname(path)\n"
    "    if d not in sys.path:\n"
    "        sys.path.insert(0, d)\n"
    "    s = importlib.util.spec_from_file_location(name, path)\n"
    "    m = importlib.util.module_from_spec(s)\n"
    "    sys.modules[name] = m\n"
    "    try:\n"
    "        s.loader.exec_module(m)\n"
    "    except BaseException:\n"
    "        sys.modules.pop(name, None)\n"
    "        raise\n"
    "    return m\n"
    "def functions(m, label):\n"
    "    what = 'a dict from function name to fn(state, job)'\n"
    "    fs = getattr(m, 'FUNCTIONS', None)\n"
    "    if fs is None:\n"
    "        raise LoadError(f'{label} defines no FUNCTIONS ({what})')\n"
    "    if not isinstance(fs, dict):\n"
    "        raise LoadError(f'{label}: FUNCTIONS is a {type(fs).__name__}, not {what}')\n"
    "    if not fs:\n"
    "        raise LoadError(f'{label}: FUNCTIONS is empty')\n"
    "    out = []\n"
    "    for name, fn in fs.items():\n"
    "        if not isinstance(name, str):\n"
    "            raise LoadError(f'{label}: FUNCTIONS key {name!r} is not a str')\n"
    "        n = len(name.encode())\n"
    "        if n == 0 or n > 63:\n"
    "            raise LoadError(f'{label}: function name {name!r} is {n} bytes; names are '\n"
    "                            '1 to 63 bytes')\n"
    "        if not callable(fn):\n"
    "            raise LoadError(f'{label}: FUNCTIONS[{name!r}] is not callable (it is '\n"
    "                            f'{type(fn).__name__})')\n"
    "        b = getattr(fn, '__zfleet_batch__', None)\n"
    "        if b is None:\n"
    "            out.append((name, fn, 0, 0))\n"
    "            continue\n"
    "        bfn, mb, delay_ms = b\n"
    "        if not callable(bfn) or not isinstance(mb, int) or not 1 <= mb <= 256 or \\\n"
    "                not isinstance(delay_ms, (int, float)) or not 0 <= delay_ms <= 60000:\n"
    "            raise LoadError(f'{label}: FUNCTIONS[{name!r}]: batched needs a callable, '\n"
    "                            'max_batch 1 to 256 and max_delay_ms 0 to 60000')\n"
    "        out.append((name, bfn, mb, int(delay_ms * 1000)))\n"
    "    hooks = []\n"
    "    for h in ('init', 'fini'):\n"
    "        f = getattr(m, h, None)\n"
    "        if f is not None and not callable(f):\n"
    "            raise LoadError(f'{label}: {h} is not callable (it is {type(f).__name__})')\n"
    "        hooks.append(f)\n"
    "    return out, hooks[0], hooks[1]\n"
    "def headline(e):\n"
    "    s = str(e)\n"
    "    return f'{type(e).__name__}: {s}' if s else type(e).__name__\n"
    "def one_line(e, _=None):\n"
    "    tb = [f for f in traceback.extract_tb(e.__traceback__)\n"
    "          if not f.filename.startswith('<frozen')]\n"
    "    at = f' ({os.path.basename(tb[-1].filename)}:{tb[-1].lineno} in {tb[-1].name})' \\\n"
    "        if tb else ''\n"
    "    return ' '.join((headline(e) + at).split())\n"
    "def load_error(e, label):\n"
    "    if isinstance(e, LoadError):\n"
    "        return str(e)\n"
    "    return f'cannot import {label}: {one_line(e)}'\n"
    "def describe(e, limit):\n"
    "    head = headline(e)\n"
    "    lines = ''.join(traceback.format_tb(e.__traceback__)).rstrip('\\n').split('\\n')\n"
    "    room = limit - len(head.encode()) - 40\n"
    "    tail = []\n"
    "    for line in reversed(lines):\n"
    "        n = len(line.encode()) + 1\n"
    "        if n > room:\n"
    "            break\n"
    "        tail.insert(0, line)\n"
    "        room -= n\n"
    "    if not tail or not tail[0]:\n"
    "        return head\n"
    "    cut = '  ...\\n' if len(tail) < len(lines) else ''\n"
    "    return head + '\\nTraceback (most recent call last):\\n' + cut + '\\n'.join(tail)\n"
    "class Batched:\n"
    "    # zfleet.batched(fn, max_batch=8, max_delay_ms=5): fn(state, jobs) -> one output\n"
    "    # per job (an Exception instance in its place fails that job alone)\n"
    "    def __init__(self, fn, max_batch=8, max_delay_ms=5):\n"
    "        self.__zfleet_batch__ = (fn, max_batch, max_delay_ms)\n"
    "    def __call__(self, state, job):\n"
    "        return self.__zfleet_batch__[0](state, [job])[0]\n"
    "def batched(fn, max_batch=8, max_delay_ms=5):\n"
    "    return Batched(fn, max_batch, max_delay_ms)\n"
    "if importlib.util.find_spec('zfleet') is None:\n"
    "    _z = types.ModuleType('zfleet', 'what zfleet-worker gives its Python handlers')\n"
    "    _z.batched = batched\n"
    "    _z.Batched = Batched\n"
    "    class Permanent(Exception):\n"
    "        __module__ = 'zfleet'\n"
    "    _z.Permanent = Permanent\n"
    "    sys.modules['zfleet'] = _z\n"
    "def batch_outputs(res, n):\n"
    "    if not isinstance(res, (list, tuple)) or len(res) != n:\n"
    "        what = f'{len(res)} outputs' if isinstance(res, (list, tuple)) else \\\n"
    "            type(res).__name__\n"
    "        raise TypeError(f'a batched handler returns a list of one output per job: '\n"
    "                        f'{n} jobs, it returned {what}')\n"
    "    return list(res)\n"
    "def permanent(e):\n"
    "    return any(c.__name__ == 'Permanent' and c.__module__.split('.')[0] == 'zfleet'\n"
    "               for c in type(e).__mro__)\n"
    "def describe_run(e, limit):\n"
    "    return ('P' if permanent(e) else '-') + describe(e, limit)\n"
    "def device(kind, index, cuda_index, label, name, memory):\n"
    "    return types.SimpleNamespace(kind=kind, index=index, cuda_index=cuda_index,\n"
    "                                 label=label, name=name, memory=memory)\n";

/* ------------------------------------------------------------------ process state */

static PyThreadState *ts;   /* the handler thread's, while it does not hold the GIL */
static PyObject *boot;      /* BOOT's namespace: helpers by name */
static PyObject *device;    /* what init and job.device see, made once */
static char venv[PATH_MAX]; /* --venv DIR, resolved; empty for none */
static char version[32];

typedef struct held {
    Py_buffer view; /* the returned object's buffer, sent without a copy */
    struct held *next;
} held_t;
static _Atomic(held_t *) released; /* ZeroMQ is done with these: release under the GIL */

struct pyfn {
    zf_pymod_t *mod;
    PyObject *fn;
    char name[ZF_FN_MAX + 1];
    uint32_t max_batch, max_delay_us; /* zfleet.batched; max_batch 0: not batched */
};

struct zf_pymod {
    char spec[PATH_MAX]; /* as given: a path, or py:name */
    PyObject *module, *init, *fini, *state;
    bool imported, inited, finished;
    unsigned nfns;
    struct pyfn fns[ZF_MAX_FUNCTIONS];
};

const char *zf_python_version(void)
{
    if (!version[0]) /* Py_GetVersion needs no interpreter: "3.11.2 (main, ...) [GCC ...]" */
        snprintf(version, sizeof version, "%.*s", (int)strcspn(Py_GetVersion(), " "),
                 Py_GetVersion());
    return version;
}

/* ------------------------------------------------------------------ the venv */

/* The "X.Y" of pyvenv.cfg's version (or version_info) line into out; 0, or -1. */
static int venv_version(FILE *f, char *out, size_t len)
{
    char line[512];
    while (fgets(line, sizeof line, f)) {
        char key[64], val[64];
        if (sscanf(line, " %63[^= ] = %63s", key, val) != 2)
            continue;
        if (strcmp(key, "version") && strcmp(key, "version_info"))
            continue;
        unsigned major, minor;
        if (sscanf(val, "%u.%u", &major, &minor) != 2)
            return -1;
        snprintf(out, len, "%u.%u", major, minor);
        return 0;
    }
    return -1;
}

int zf_python_set_venv(const char *dir, char *err, size_t errlen)
{
    char cfg[PATH_MAX + 16], found[32], mine[32];
    snprintf(cfg, sizeof cfg, "%s/pyvenv.cfg", dir);
    FILE *f = fopen(cfg, "r");
    if (!f) {
        snprintf(err, errlen, "--venv %s: not a virtual environment (%s: %s)", dir, cfg,
                 strerror(errno));
        return -1;
    }
    int rc = venv_version(f, found, sizeof found);
    fclose(f);
    snprintf(mine, sizeof mine, "%d.%d", PY_MAJOR_VERSION, PY_MINOR_VERSION);
    if (rc < 0) {
        snprintf(err, errlen, "--venv %s: %s names no Python version", dir, cfg);
        return -1;
    }
    if (strcmp(found, mine)) {
        snprintf(err, errlen,
                 "--venv %s is a Python %s environment, and this zfleet-worker "
                 "embeds Python %s: make it with python%s -m venv",
                 dir, found, mine, mine);
        return -1;
    }
    if (!realpath(dir, venv)) {
        snprintf(err, errlen, "--venv %s: %s", dir, strerror(errno));
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ the job object */

/* Owns a reference to a job's input frame and exports it, read-only. */
typedef struct {
    PyObject_HEAD zmq_msg_t msg;
} payload_t;

static int payload_getbuffer(PyObject *o, Py_buffer *view, int flags)
{
    static char empty[1];
    payload_t *p = (payload_t *)o;
    size_t n = zmq_msg_size(&p->msg);
    return PyBuffer_FillInfo(view, o, n ? zmq_msg_data(&p->msg) : empty, (Py_ssize_t)n, 1, flags);
}

static void payload_dealloc(PyObject *o)
{
    zmq_msg_close(&((payload_t *)o)->msg); /* any thread: the frame's count is atomic */
    Py_TYPE(o)->tp_free(o);
}

static PyBufferProcs payload_buffer = {.bf_getbuffer = payload_getbuffer};

static PyTypeObject payload_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "zfleet.Payload",
    .tp_basicsize = sizeof(payload_t),
    .tp_dealloc = payload_dealloc,
    .tp_as_buffer = &payload_buffer,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "a job's input frame (job.data is a memoryview over it)",
};

typedef struct {
    PyObject_HEAD zf_job_t *job; /* NULL once the call has returned */
    PyObject *data;              /* memoryview over a payload_t */
    uint64_t id;
    uint32_t attempt;
    char function[ZF_FN_MAX + 1];
} pyjob_t;

static PyObject *finished(const pyjob_t *j, const char *what)
{
    PyErr_Format(PyExc_RuntimeError, "job %llu has finished: %s is only valid during its call",
                 (unsigned long long)j->id, what);
    return NULL;
}

static PyObject *job_get_data(PyObject *o, void *unused)
{
    pyjob_t *j = (pyjob_t *)o;
    Py_INCREF(j->data);
    return j->data;
}

static PyObject *job_get_id(PyObject *o, void *unused)
{
    return PyLong_FromUnsignedLongLong(((pyjob_t *)o)->id);
}

static PyObject *job_get_attempt(PyObject *o, void *unused)
{
    return PyLong_FromUnsignedLong(((pyjob_t *)o)->attempt);
}

static PyObject *job_get_function(PyObject *o, void *unused)
{
    return PyUnicode_FromString(((pyjob_t *)o)->function);
}

static PyObject *job_get_device(PyObject *o, void *unused)
{
    Py_INCREF(device);
    return device;
}

static PyObject *job_get_cancelled(PyObject *o, void *unused)
{
    pyjob_t *j = (pyjob_t *)o;
    if (!j->job)
        return finished(j, "cancelled");
    return PyBool_FromLong(zf_job_cancelled(j->job));
}

/* Called with the GIL, from the handler thread or a thread the handler started: the GIL
   orders its use of the runner's socket with the handler thread's (see zf_runner.h). */
static PyObject *job_progress(PyObject *o, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"fraction", "text", NULL};
    pyjob_t *j = (pyjob_t *)o;
    double fraction;
    const char *text = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "d|z:progress", kwlist, &fraction, &text))
        return NULL;
    if (!j->job)
        return finished(j, "progress()");
    if (!(fraction >= 0 && fraction <= 1)) {
        PyErr_Format(PyExc_ValueError, "progress fraction must be from 0 to 1, not %g", fraction);
        return NULL;
    }
    zf_job_progress(j->job, fraction, text);
    Py_RETURN_NONE;
}

static PyObject *job_repr(PyObject *o)
{
    pyjob_t *j = (pyjob_t *)o;
    return PyUnicode_FromFormat("<zfleet.Job %llu attempt %lu %s>", (unsigned long long)j->id,
                                (unsigned long)j->attempt, j->function);
}

static void job_dealloc(PyObject *o)
{
    Py_XDECREF(((pyjob_t *)o)->data);
    Py_TYPE(o)->tp_free(o);
}

static PyGetSetDef job_getset[] = {
    {"data", job_get_data, NULL, "the payload: a read-only memoryview, valid during the call",
     NULL},
    {"id", job_get_id, NULL, "the job id", NULL},
    {"attempt", job_get_attempt, NULL, "this delivery's attempt number, from 1", NULL},
    {"function", job_get_function, NULL, "the function name the job was submitted to", NULL},
    {"device", job_get_device, NULL, "the worker's device: kind, index, label, name, memory", NULL},
    {"cancelled", job_get_cancelled, NULL, "True once the job was cancelled: return soon", NULL},
    {NULL, NULL, NULL, NULL, NULL}};

static PyMethodDef job_methods[] = {
    {"progress", (PyCFunction)(void (*)(void))job_progress, METH_VARARGS | METH_KEYWORDS,
     "progress(fraction, text=None): report progress (0 to 1) to the submitting client"},
    {NULL, NULL, 0, NULL}};

static PyTypeObject job_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "zfleet.Job",
    .tp_basicsize = sizeof(pyjob_t),
    .tp_dealloc = job_dealloc,
    .tp_repr = job_repr,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "the job a handler runs (zfleet-worker, docs/PYTHON.md)",
    .tp_methods = job_methods,
    .tp_getset = job_getset,
};

static pyjob_t *job_new(zf_job_t *job)
{
    payload_t *p = PyObject_New(payload_t, &payload_type);
    if (!p)
        return NULL;
    if (zf_runner_job_input(job, &p->msg) < 0) {
        Py_DECREF(p);
        return (pyjob_t *)PyErr_NoMemory();
    }
    PyObject *mv = PyMemoryView_FromObject((PyObject *)p);
    Py_DECREF(p);
    if (!mv)
        return NULL;
    pyjob_t *j = PyObject_New(pyjob_t, &job_type);
    if (!j) {
        Py_DECREF(mv);
        return NULL;
    }
    j->job = job;
    j->data = mv;
    j->id = zf_job_id(job);
    j->attempt = zf_job_attempt(job);
    snprintf(j->function, sizeof j->function, "%s", zf_job_function(job));
    return j;
}

/* The call has returned: the job's methods refuse from now on, and job.data is released
   unless a view taken from it is still alive (that view keeps the payload alive). */
static void job_end(pyjob_t *j)
{
    j->job = NULL;
    PyObject *r = PyObject_CallMethod(j->data, "release", NULL);
    if (!r)
        PyErr_Clear();
    Py_XDECREF(r);
}

/* ------------------------------------------------------------------ errors and outputs */

/* The pending exception as text, from the BOOT helper `how` called with (exception, arg);
   clears it. */
static void exception_text(const char *how, PyObject *arg, char *out, size_t len)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (value && tb)
        PyException_SetTraceback(value, tb);
    PyObject *fn = PyDict_GetItemString(boot, how); /* borrowed */
    PyObject *s = fn && value ? PyObject_CallFunctionObjArgs(fn, value, arg, NULL) : NULL;
    const char *text = s ? PyUnicode_AsUTF8(s) : NULL;
    snprintf(out, len, "%s", text ? text : "an exception that cannot be described");
    PyErr_Clear();
    Py_XDECREF(s);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
}

static int fail_from_exception(zf_job_t *job)
{
    char text[ZF_TEXT_MAX + 2];
    PyObject *limit = PyLong_FromLong(ZF_TEXT_MAX);
    /* 'P' or '-' first: whether it is a zfleet.Permanent (not to be retried) */
    exception_text("describe_run", limit, text, sizeof text);
    Py_XDECREF(limit);
    if (text[0] == 'P')
        return zf_job_fail_permanent(job, "%s", text + 1);
    return zf_job_fail(job, "%s", text[0] == '-' ? text + 1 : text);
}

static void on_sent(void *data, void *hint)
{
    held_t *h = hint;
    h->next = atomic_load(&released);
    while (!atomic_compare_exchange_weak(&released, &h->next, h))
        ;
}

/* Releases the buffers ZeroMQ is done with. With the GIL. */
static void drain_released(void)
{
    held_t *h = atomic_exchange(&released, NULL);
    while (h) {
        held_t *next = h->next;
        PyBuffer_Release(&h->view);
        free(h);
        h = next;
    }
}

/* A buffer as the output: large contiguous ones without a copy. */
static int output_buffer(zf_job_t *job, PyObject *res)
{
    held_t *h = malloc(sizeof *h);
    if (!h)
        return zf_job_fail(job, "out of memory for the output");
    if (PyObject_GetBuffer(res, &h->view, PyBUF_FULL_RO) < 0) {
        free(h);
        return fail_from_exception(job);
    }
    size_t len = (size_t)h->view.len;
    zmq_msg_t m;
    if (len >= ZERO_COPY_MIN && PyBuffer_IsContiguous(&h->view, 'C') &&
        zmq_msg_init_data(&m, h->view.buf, len, on_sent, h) == 0) {
        zf_runner_job_output(job, &m);
        return 0;
    }
    void *dst = zf_job_output_alloc(job, len);
    int rc = 0;
    if (!dst && len)
        rc = zf_job_fail(job, "out of memory for a %zu-byte output", len);
    else if (len && PyBuffer_ToContiguous(dst, &h->view, (Py_ssize_t)len, 'C') < 0)
        rc = fail_from_exception(job);
    PyBuffer_Release(&h->view);
    free(h);
    return rc;
}

static int set_output(zf_job_t *job, PyObject *res)
{
    if (res == Py_None)
        return 0;
    if (PyUnicode_Check(res)) {
        Py_ssize_t n;
        const char *s = PyUnicode_AsUTF8AndSize(res, &n);
        if (!s)
            return fail_from_exception(job);
        return zf_job_output(job, s, (size_t)n) < 0 ? zf_job_fail(job, "out of memory") : 0;
    }
    if (PyObject_CheckBuffer(res))
        return output_buffer(job, res);
    return zf_job_fail(job,
                       "%s returned %.100s: return bytes, bytearray, memoryview, any "
                       "object with the buffer protocol (a NumPy array), str or None",
                       zf_job_function(job), Py_TYPE(res)->tp_name);
}

/* ------------------------------------------------------------------ the interpreter */

static int status_error(PyStatus st, char *err, size_t errlen)
{
    snprintf(err, errlen, "cannot start Python %s: %s", zf_python_version(),
             st.err_msg ? st.err_msg : "unknown error");
    return -1;
}

/* Starts the interpreter on the calling (handler) thread, once. Returns 0, or -1. */
static int start_interpreter(char *err, size_t errlen)
{
    if (boot)
        return 0;
    PyPreConfig pre;
    PyPreConfig_InitPythonConfig(&pre);
#ifdef __SANITIZE_ADDRESS__
    pre.allocator = PYMEM_ALLOCATOR_MALLOC; /* every object a heap block LeakSanitizer sees */
#endif
    PyStatus st = Py_PreInitialize(&pre);
    if (PyStatus_Exception(st))
        return status_error(st, err, errlen);
    PyConfig c;
    PyConfig_InitPythonConfig(&c);
    c.install_signal_handlers = 0; /* SIGTERM drains and SIGINT stay the worker's */
    c.parse_argv = 0;
    c.buffered_stdio = 0; /* print() reaches the worker's log at once */
    /* the executable decides sys.prefix: the Python we were built against (not a python3
       first on PATH), or the venv's, whose pyvenv.cfg then applies as for DIR/bin/python */
    char exe[PATH_MAX + 16];
    if (venv[0])
        snprintf(exe, sizeof exe, "%s/bin/python3", venv);
    else
        snprintf(exe, sizeof exe, "%s", ZF_PYTHON_EXE);
    char *argv[] = {"zfleet-worker", NULL};
    st = PyConfig_SetBytesString(&c, &c.executable, exe);
    if (!PyStatus_Exception(st))
        st = PyConfig_SetBytesString(&c, &c.program_name, exe);
    if (!PyStatus_Exception(st))
        st = PyConfig_SetBytesArgv(&c, 1, argv);
    if (!PyStatus_Exception(st))
        st = Py_InitializeFromConfig(&c);
    PyConfig_Clear(&c);
    if (PyStatus_Exception(st))
        return status_error(st, err, errlen);
    PyObject *ns = PyDict_New();
    if (ns && PyType_Ready(&payload_type) == 0 && PyType_Ready(&job_type) == 0 &&
        PyDict_SetItemString(ns, "__builtins__", PyEval_GetBuiltins()) == 0) {
        PyObject *r = PyRun_String(BOOT, Py_file_input, ns, ns);
        if (r)
            boot = ns;
        Py_XDECREF(r);
    }
    if (!boot) {
        PyErr_Print();
        Py_XDECREF(ns);
        snprintf(err, errlen, "cannot start Python %s: its start-up code failed (above)",
                 zf_python_version());
    }
    ts = PyEval_SaveThread();
    return boot ? 0 : -1;
}

/* ------------------------------------------------------------------ modules */

/* A py:name's name part: dotted identifiers (non-ASCII letters are Python's to judge). */
static bool dotted_name(const char *s)
{
    bool start = true;
    for (; *s; s++) {
        unsigned ch = (unsigned char)*s;
        if (ch == '.' && !start) {
            start = true;
            continue;
        }
        if (!(ch == '_' || ch >= 0x80 || (ch | 0x20u) - 'a' < 26u || (!start && ch - '0' < 10u)))
            return false;
        start = false;
    }
    return !start;
}

zf_pymod_t *zf_pymod_new(const char *spec, char *err, size_t errlen)
{
    struct stat st;
    if (strlen(spec) >= PATH_MAX) {
        snprintf(err, errlen, "cannot load module: path too long");
        return NULL;
    }
    if (!strncmp(spec, "py:", 3)) {
        if (!dotted_name(spec + 3)) {
            snprintf(err, errlen, "cannot load module %s: expected py:package.module", spec);
            return NULL;
        }
    } else if (stat(spec, &st) < 0 || access(spec, R_OK) < 0) {
        snprintf(err, errlen, "cannot load module %s: %s", spec, strerror(errno));
        return NULL;
    } else if (!S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "cannot load module %s: not a file", spec);
        return NULL;
    }
    zf_pymod_t *m = calloc(1, sizeof *m);
    if (!m) {
        snprintf(err, errlen, "cannot load module %s: out of memory", spec);
        return NULL;
    }
    snprintf(m->spec, sizeof m->spec, "%s", spec);
    return m;
}

/* Takes FUNCTIONS, init and fini from functions()'s answer (out, init, fini). */
static int take_functions(zf_pymod_t *m, PyObject *r, char *err, size_t errlen)
{
    PyObject *list = PyTuple_GetItem(r, 0), *init = PyTuple_GetItem(r, 1),
             *fini = PyTuple_GetItem(r, 2);
    Py_ssize_t n = PyList_Size(list);
    if (n > ZF_MAX_FUNCTIONS) {
        snprintf(err, errlen, "%s: %zd functions, more than the %d one worker serves", m->spec, n,
                 ZF_MAX_FUNCTIONS);
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *pair = PyList_GetItem(list, i);
        struct pyfn *f = &m->fns[m->nfns++];
        f->mod = m;
        snprintf(f->name, sizeof f->name, "%s", PyUnicode_AsUTF8(PyTuple_GetItem(pair, 0)));
        f->fn = PyTuple_GetItem(pair, 1);
        Py_INCREF(f->fn);
        f->max_batch = (uint32_t)PyLong_AsUnsignedLong(PyTuple_GetItem(pair, 2));
        f->max_delay_us = (uint32_t)PyLong_AsUnsignedLong(PyTuple_GetItem(pair, 3));
    }
    m->init = init == Py_None ? NULL : init;
    m->fini = fini == Py_None ? NULL : fini;
    Py_XINCREF(m->init);
    Py_XINCREF(m->fini);
    return 0;
}

int zf_pymod_import(zf_pymod_t *m, char *err, size_t errlen)
{
    assert(!m->imported);
    if (start_interpreter(err, errlen) < 0)
        return -1;
    m->imported = true;
    PyEval_RestoreThread(ts);
    int rc = -1;
    PyObject *label = PyUnicode_FromString(m->spec);
    PyObject *mod =
        label ? PyObject_CallFunctionObjArgs(PyDict_GetItemString(boot, "load"), label, NULL)
              : NULL;
    PyObject *r = mod ? PyObject_CallFunctionObjArgs(PyDict_GetItemString(boot, "functions"), mod,
                                                     label, NULL)
                      : NULL;
    if (r) {
        m->module = mod;
        mod = NULL;
        rc = take_functions(m, r, err, errlen);
    } else {
        exception_text("load_error", label, err, errlen);
    }
    Py_XDECREF(r);
    Py_XDECREF(mod);
    Py_XDECREF(label);
    ts = PyEval_SaveThread();
    return rc;
}

unsigned zf_pymod_count(const zf_pymod_t *m)
{
    return m->nfns;
}

const char *zf_pymod_name(const zf_pymod_t *m, unsigned i)
{
    return i < m->nfns ? m->fns[i].name : NULL;
}

void *zf_pymod_function(zf_pymod_t *m, unsigned i)
{
    return i < m->nfns ? &m->fns[i] : NULL;
}

int zf_pymod_init(zf_pymod_t *m, const zf_device_t *dev, char *err, size_t errlen)
{
    PyEval_RestoreThread(ts);
    if (!device)
        device = PyObject_CallFunction(PyDict_GetItemString(boot, "device"), "siissK",
                                       dev->type == ZF_DEVICE_GPU ? "gpu" : "cpu", dev->index,
                                       dev->cuda_index, dev->label, dev->name ? dev->name : "",
                                       (unsigned long long)dev->memory);
    PyObject *state = NULL;
    if (device && m->init)
        state = PyObject_CallOneArg(m->init, device);
    else if (device)
        state = Py_NewRef(Py_None);
    int rc = 0;
    if (state) {
        m->state = state;
        m->inited = true;
    } else {
        exception_text("one_line", Py_None, err, errlen);
        rc = -1;
    }
    ts = PyEval_SaveThread();
    return rc;
}

int zf_pymod_run(void *function, zf_job_t *job)
{
    struct pyfn *f = function;
    PyEval_RestoreThread(ts);
    drain_released();
    int rc;
    pyjob_t *j = job_new(job);
    if (!j) {
        rc = fail_from_exception(job);
    } else {
        PyObject *args[2] = {f->mod->state, (PyObject *)j};
        PyObject *res = PyObject_Vectorcall(f->fn, args, 2, NULL);
        rc = res ? set_output(job, res) : fail_from_exception(job);
        Py_XDECREF(res);
        job_end(j);
        Py_DECREF(j);
    }
    ts = PyEval_SaveThread();
    return rc;
}

uint32_t zf_pymod_max_batch(const zf_pymod_t *m, unsigned i, uint32_t *max_delay_us)
{
    if (i >= m->nfns || !m->fns[i].max_batch)
        return 0;
    *max_delay_us = m->fns[i].max_delay_us;
    return m->fns[i].max_batch;
}

/* One job's part of a batch's answer: an exception instance fails it, anything else is
   its output as a single handler's return value is. */
static void batch_output(zf_job_t *job, PyObject *res)
{
    if (!PyExceptionInstance_Check(res)) {
        set_output(job, res);
        return;
    }
    PyObject *fn = PyDict_GetItemString(boot, "headline"); /* borrowed */
    PyObject *s = fn ? PyObject_CallOneArg(fn, res) : NULL;
    const char *text = s ? PyUnicode_AsUTF8(s) : NULL;
    zf_job_fail(job, "%s", text ? text : "failed");
    PyErr_Clear();
    Py_XDECREF(s);
}

int zf_pymod_run_batch(void *function, zf_job_t **jobs, size_t n)
{
    struct pyfn *f = function;
    PyEval_RestoreThread(ts);
    drain_released();
    int rc = -1;
    PyObject *list = PyList_New((Py_ssize_t)n);
    for (size_t i = 0; list && i < n; i++) {
        pyjob_t *j = job_new(jobs[i]);
        if (!j) {
            Py_CLEAR(list);
            break;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, (PyObject *)j);
    }
    PyObject *res = NULL, *outs = NULL;
    if (list) {
        PyObject *args[2] = {f->mod->state, list};
        res = PyObject_Vectorcall(f->fn, args, 2, NULL);
    }
    if (res) {
        PyObject *cnt = PyLong_FromSize_t(n);
        outs = cnt ? PyObject_CallFunctionObjArgs(PyDict_GetItemString(boot, "batch_outputs"), res,
                                                  cnt, NULL)
                   : NULL;
        Py_XDECREF(cnt);
    }
    if (outs) {
        for (size_t i = 0; i < n; i++)
            batch_output(jobs[i], PyList_GetItem(outs, (Py_ssize_t)i));
        rc = 0;
    } else {
        fail_from_exception(jobs[0]); /* the batch's message: every job fails with it */
    }
    for (size_t i = 0; list && i < n; i++)
        job_end((pyjob_t *)PyList_GetItem(list, (Py_ssize_t)i));
    Py_XDECREF(outs);
    Py_XDECREF(res);
    Py_XDECREF(list);
    ts = PyEval_SaveThread();
    return rc;
}

void zf_pymod_fini(zf_pymod_t *m)
{
    if (m->finished || !m->imported || !boot) {
        m->finished = true;
        return;
    }
    m->finished = true;
    PyEval_RestoreThread(ts);
    drain_released();
    if (m->inited && m->fini) {
        PyObject *r = PyObject_CallOneArg(m->fini, m->state);
        if (!r) {
            char text[ZF_TEXT_MAX + 1];
            exception_text("one_line", Py_None, text, sizeof text);
            zf_log(ZF_LOG_WARN, "module %s: fini raised %s", m->spec, text);
        }
        Py_XDECREF(r);
    }
    for (unsigned i = 0; i < m->nfns; i++)
        Py_CLEAR(m->fns[i].fn);
    Py_CLEAR(m->state);
    Py_CLEAR(m->init);
    Py_CLEAR(m->fini);
    Py_CLEAR(m->module);
    ts = PyEval_SaveThread();
}

void zf_pymod_destroy(zf_pymod_t **self_p)
{
    free(*self_p);
    *self_p = NULL;
}
