"""zfleet — Python client for the zfleet job broker (pyzmq + msgpack).

Two clients with the same API:

* ``Client``: synchronous, for threaded web apps (Flask, Django, gunicorn). One client may be
  shared by every thread of a process, and keeps working in a child after ``fork()``.
* ``AsyncClient``: coroutines on ``zmq.asyncio`` (FastAPI, Starlette, aiohttp). One client
  is shared by every task of an event loop; one reader task dispatches replies to the
  waiting tasks by tag and job id.

The wire protocol is proto/PROTOCOL.md; this module follows the C client (libzfleet,
client/client.c) in behaviour: a DEALER socket, one tag per request, results pushed to the
connection that submitted the job, WAIT re-sent after a reconnect, a PING after one silent
heartbeat while waiting and a reconnect after three.

Threads (Client)
----------------
A ZeroMQ socket must never be used by two threads at once, so the client elects a reader
(leader/follower) instead of running an I/O thread of its own:

* One lock (``_lock``, with the condition ``_cond``) guards all of the client's state. The
  socket belongs to the *reader*: the one thread that holds ``_reader`` polls it, with the
  lock released while it blocks in poll. When there is no reader, whichever thread holds the
  lock may use the socket directly. No other thread ever touches it.
* A call that must wait (for a reply or a result) becomes the reader if there is none, else
  it sleeps on ``_cond``. The reader dispatches everything it receives into mailboxes — replies
  by the request's tag (``_replies``), results by job id (``_ready``/``_unclaimed``), progress
  by id — wakes the sleepers once per batch, and gives up the role when its own call is done;
  a sleeper then takes it over. So a single-threaded caller reads its own socket with no thread
  hand-off at all, and N threads cost no more than one socket and one reader at a time.
* A thread that must send while another thread reads puts the message in ``_outbox`` and
  wakes the reader through a pipe polled with the socket; the reader sends it at once (a send
  that fails fails the request or the WAIT it carried, in the thread that made it).
* A pushed RESULT goes to every thread waiting for that id (several may wait for one job);
  with nobody waiting it is kept for a later wait, at most ``max_buffered`` results and
  ``max_buffered_bytes`` of output (then the oldest are dropped and a later wait asks the
  broker again). on_progress callbacks run in the reader's thread, outside the lock, so they
  may call the client.
* watch(id) is a wait (the id is pending, so WAIT is sent and re-sent after a reconnect) plus
  a deque of Progress (``_watchers``: id -> deques, each bounded to WATCH_KEEP) that the
  reader fills; the watching thread takes one item at a time and yields it outside the lock.
* Timeouts: each call keeps its own deadline; a wait that times out leaves the result to be
  kept when it comes. A request that times out replaces the socket, as before (a submit the
  caller was told failed must not be delivered later); requests of other threads still in
  flight on that socket fail with Unreachable at once instead of waiting out their timeout.
  A broker silent for three heartbeats while someone waits for a job (and no request is in
  flight) makes the reader reconnect; after any reconnect, including ZeroMQ's own after a
  broker restart, the client sends WAIT again for every job any thread waits for.
* The monitor also tells whether a connection to the broker is up (CONNECTED/DISCONNECTED;
  _up, _down_since, kept across the client's own reconnects): a request with no connection
  for one heartbeat raises Unreachable at once (its socket replaced, as for a timeout); a wait
  with none for unreachable_after (10 heartbeats, >= 5 s) raises it unless forever=True.
* close() wakes the reader, lets it leave poll, then closes the socket; calls still waiting in
  other threads raise Error("the client is closed").

Fork (Client and AsyncClient)
-----------------------------
A ZeroMQ context does not survive fork(): its I/O threads are not in the child and closing or
terminating the inherited sockets there may hang or disturb the parent's connection. A client
therefore records the pid that made its socket; in a child (seen by os.register_at_fork, and by
comparing os.getpid() on every call, for forks that skip Python's hooks) it abandons the
inherited context, sockets, lock and wake-up pipe without touching them (kept referenced for
the life of the process so that no finaliser closes them), forgets the requests and waits of
the parent's threads, and opens a fresh connection on first use. Results the parent had already
received but nobody had claimed stay available in both processes. Results of jobs the parent
submitted are still pushed to the parent only; waiting for one in the child sends WAIT on the
child's own connection (PROTOCOL.md §6.4), so it works while the broker keeps the result (not
for forget=True jobs once pushed to the parent). The parent is unaffected.

CURVE (Client and AsyncClient)
------------------------------
With key= (this client's NAME.key_secret) and broker_key= (the broker's public NAME.key), or
$ZFLEET_KEY and $ZFLEET_BROKER_KEY, every socket the client opens (the first, each
reconnect, the one a forked child opens) is a CURVE client; the files are read once, at
construction (ValueError if they are not a usable pair). The monitor that counts
connections also watches each handshake, as the C client does (common/handshake.c): a
refusal (the key not listed, CURVE at one end only, the wrong broker key) fails every request
and wait in flight with Denied as soon as the reader sees it, and the socket is replaced
(ZeroMQ gives up a refused connection, and a submit still queued in it must never be
delivered later); a call that finds a refusal already seen replaces the socket before it
starts, so once the broker allows the key the next call is served. A reply with code 12 (the
key was revoked, or stats by a non-admin) raises Denied too.

Only the standard library, pyzmq and msgpack are used. Installable with pip from
client/python (pyproject.toml); typed (py.typed).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import inspect
import logging
import os
import random
import re
import threading
import time
import weakref
from typing import (Any, AsyncIterator, Awaitable, Callable, Collection, Deque, Dict, Iterable,
                    Iterator, List, NamedTuple, Optional, Sequence, Set, Tuple, TypeVar,
                    Union)

# (Debian's msgpack has no type hints)
import msgpack  # type: ignore[import]
import zmq
import zmq.asyncio
import zmq.auth
import zmq.utils.z85
from zmq.utils.monitor import parse_monitor_message

__version__ = "0.1.0"   # the project's version (meson.build; tests/py/test_package.py checks)

__all__ = [
    "__version__", "Client", "AsyncClient", "Result", "Status", "Progress",
    "Error", "Unreachable", "Timeout", "BrokerError", "Rejected", "QueueFull",
    "PayloadTooLarge", "UnknownJob", "InvalidState", "Denied", "JobFailed", "OutputLost",
    "Permanent", "step", "DEFAULT_BROKER", "STATES", "TERMINAL_STATES", "WATCH_KEEP",
]

log = logging.getLogger("zfleet")

Fields = Dict[int, Any]                      # a message header: field key -> value
Frames = List[Any]                           # bytes or zmq.Frame, as sent or received
ProgressCallback = Callable[[int, float, str], Any]   # on_progress(job_id, fraction, text)
KeyFile = Union[str, "os.PathLike[str]"]
Buffer = Union[bytes, bytearray, memoryview]
Data = Union[bytes, bytearray, memoryview, str]   # a job's payload (str: UTF-8)
_T = TypeVar("_T")

DEFAULT_BROKER = "tcp://127.0.0.1:5555"
PROTO_VERSION = 1

# Commands (zf_proto.h, zf_cmd_t)
SUBMIT, WAIT, GET, CANCEL, STATS, DEAD, RETRY, PING = range(0x01, 0x09)
JOBS = 0x09  # the job listing (PROTOCOL.md §6.11)
ACCEPTED, REJECTED, RESULT, STATUS, PROGRESS, REPLY, PONG, ERROR = range(0x41, 0x49)

# Header field keys (zf_field_t)
F_ID, F_ATTEMPT, F_TAG, F_FN, F_PRIORITY, F_TIMEOUT, F_DEADLINE, F_MAX_ATTEMPTS = range(1, 9)
F_DEVICE, F_STATUS, F_CODE, F_TEXT, F_CREDITS, F_DURATION, F_WORKER, F_DEVNAME = range(9, 17)
F_PROGRESS, F_FUNCTIONS, F_DEVINDEX, F_DEVMEM, F_HEARTBEAT, F_FLAGS, F_QUEUED = range(17, 24)
F_SUPERVISOR, F_MAXPAYLOAD = 24, 25
# Retries and delayed jobs (PROTOCOL.md §4.5)
F_RETRIES, F_BACKOFF, F_DELAY, F_NOT_BEFORE = 30, 31, 32, 33
RETRIES_MAX, BACKOFF_MAX_MS, DELAY_MAX_MS = 20, 60000, 30 * 24 * 3600000
F_TAGS, F_LIMIT = 35, 36
# Pipelines (PROTOCOL.md §6.12): further steps on SUBMIT; where a job is in RESULT/STATUS
F_THEN, F_STEP, F_STEPS = 37, 38, 39
PIPE_STEPS, THEN_MAX = 8, 600
TAGS_MAX, TAGS_COUNT, TAG_PART_MAX = 255, 8, 63

# Payloads larger than this are checked against the broker's limit (PONG's max_payload)
# before they are sent: past about twice the limit the broker's socket drops the
# connection instead of answering, which would read as "no answer from the broker".
# Smaller ones always get the broker's own answer.
_LIMIT_CHECK_ABOVE = 1 << 20

FLAG_PURGE = 0x1
FLAG_NO_PUSH = 0x2
FLAG_FORGET = 0x4

# Error codes (zf_error_t)
E_UNKNOWN_JOB = 4
E_QUEUE_FULL = 5
E_TOO_LARGE = 6
E_STATE = 8
E_DENIED = 12

STATES = ("queued", "running", "succeeded", "failed", "timed_out", "cancelled", "expired", "lost",
          "output_lost", "scheduled")
TERMINAL_STATES = frozenset(STATES[2:9])  # ("scheduled" waits for its time: not terminal)
DEVICES = {"any": 0, "cpu": 1, "gpu": 2}
ERROR_NAMES = ("ok", "unsupported protocol version", "malformed message", "unknown command",
               "unknown job", "queue full", "payload too large", "bad argument", "wrong state",
               "broker shutting down", "internal error", "journal unavailable", "access denied")

FN_MAX = 63
_U32 = (1 << 32) - 1
_PAYLOAD_COPY_MAX = 64 * 1024   # larger payloads are sent zero-copy
_PROGRESS_KEEP = 10000          # jobs whose last progress report progress() remembers


# ------------------------------------------------------------------ results and errors

class Permanent(Exception):
    """Raised by a handler (zfleet-worker, Python module) for a failure that must not be
    retried (bad input): the job fails at once, whatever its retries (PROTOCOL.md §4.5).
    The worker recognises it by its name and module, so a handler needs only this package."""


@dataclasses.dataclass(frozen=True)
class Result:
    """The outcome of a finished job."""
    id: int
    status: str           # succeeded / failed / timed_out / cancelled / expired / lost
    ok: bool              # status == "succeeded"
    output: bytes         # the handler's output
    error: str            # the handler's error message or the broker's cause ("" if none)
    attempts: int
    duration_us: int      # handler run time
    worker: str           # worker that ran it ("" if it never ran)
    device: str           # its device label, e.g. "cpu:1"
    function: str
    tags: Dict[str, str] = dataclasses.field(default_factory=dict)  # as submitted
    step: int = 0         # a pipeline's step the job ended at (1-based); 0: not a pipeline
    steps: int = 0        # a pipeline's steps in all

    @property
    def text(self) -> str:
        """The output decoded as UTF-8."""
        return self.output.decode("utf-8", "replace")

    def raise_for_status(self) -> Result:
        """Raises JobFailed unless the job succeeded; returns self otherwise."""
        if not self.ok:
            raise (OutputLost if self.status == "output_lost" else JobFailed)(self)
        return self


@dataclasses.dataclass(frozen=True)
class Status:
    """The state of a job that has not finished (from get())."""
    id: int
    status: str           # queued / running
    attempts: int
    progress: float       # 0..1, last reported by the handler
    progress_text: str
    worker: str
    device: str
    function: str = ""
    tags: Dict[str, str] = dataclasses.field(default_factory=dict)
    step: int = 0         # a pipeline's current step (1-based); 0: not a pipeline
    steps: int = 0


@dataclasses.dataclass(frozen=True)
class Progress:
    """A progress report of a running job, as watch() yields it."""
    id: int
    fraction: float       # 0..1, as the handler reported it
    text: str             # the handler's progress text ("" if none)


# A watch keeps at most this many progress reports not yet taken by its caller (the oldest
# go first): a slow consumer sees the latest reports, and memory stays bounded.
WATCH_KEEP = 64


class Error(Exception):
    """Base class of every zfleet error."""
    # From submit_many: the id of each payload sent, None where not accepted
    ids: Optional[List[Optional[int]]] = None


class Unreachable(Error, ConnectionError):
    """The broker did not answer within request_timeout, or there has been no connection to
    it for a heartbeat (a request) or for unreachable_after (a wait without forever=True)."""


class Timeout(Error, TimeoutError):
    """No result in time; the job may still be running. `pending`: the ids still waited for."""

    def __init__(self, message: str, pending: Iterable[int] = ()) -> None:
        super().__init__(message)
        self.pending = list(pending)


class BrokerError(Error):
    """The broker refused a request. `code` is the broker's error code (zf_error_t)."""

    def __init__(self, code: int, message: str = "") -> None:
        self.code = int(code)
        self.message = message or (ERROR_NAMES[code] if 0 <= code < len(ERROR_NAMES)
                                   else "error %d" % code)
        super().__init__(self.code, self.message)

    def __str__(self) -> str:
        return "%s (broker code %d)" % (self.message, self.code)


class Rejected(BrokerError):
    """A submit was refused; nothing was accepted. From submit_many, `ids` lists the id of
    each payload sent, in order, with None for those that were not accepted."""
    ids = None


class QueueFull(Rejected):
    """A queue bound of the broker was reached (code 5)."""


class PayloadTooLarge(Rejected):
    """The payload is larger than the broker's --max-payload (code 6)."""


class UnknownJob(BrokerError, LookupError):
    """No such job: never accepted, or its result expired (code 4)."""


class InvalidState(BrokerError):
    """The job's state forbids the request, e.g. cancelling a finished job (code 8)."""


class Denied(BrokerError):
    """No service for this client's key. Either the broker refused the connection at the
    CURVE handshake (the key is not in its key directory, CURVE is on at one end only, or
    broker_key is not this broker's public key): every request and wait in flight fails with
    it at once instead of waiting out its timeout; or the broker refused a request with code
    12 (the key was removed from its directories, or stats() by a key that is not an admin's).
    `code` is 12 either way; the message says why."""

    def __init__(self, message: str, code: int = E_DENIED) -> None:
        super().__init__(code, message)

    def __str__(self) -> str:
        return self.message


class JobFailed(Error):
    """Raised by Result.raise_for_status(); `result` is the Result."""

    def __init__(self, result: Result) -> None:
        super().__init__("job %d %s: %s" % (result.id, result.status, result.error))
        self.result = result


class OutputLost(JobFailed):
    """The handler succeeded but the broker lost its output (over --result-max-bytes, then a
    restart): the Result has no output bytes (never partial ones) and is not ok."""

    def __init__(self, result: Result) -> None:
        super().__init__(result)
        self.args = ("job %d output_lost: the handler succeeded but its output is gone, no bytes "
                     "returned: %s" % (result.id, result.error),)


def _broker_error(code: int, text: str, submit: bool = False) -> BrokerError:
    if code == E_DENIED:
        return Denied(text or ERROR_NAMES[E_DENIED])
    cls: type[BrokerError]
    if submit:
        cls = {E_QUEUE_FULL: QueueFull, E_TOO_LARGE: PayloadTooLarge}.get(code, Rejected)
    else:
        cls = {E_UNKNOWN_JOB: UnknownJob, E_STATE: InvalidState}.get(code, BrokerError)
    return cls(code, text)


# ------------------------------------------------------------------ codec

class _Msg(NamedTuple):
    cmd: int
    f: Fields
    payload: Optional[bytes]


def _encode(cmd: int, fields: Fields) -> bytes:
    body: bytes = msgpack.packb(fields, use_bin_type=True)
    return b"ZF" + bytes((PROTO_VERSION, cmd)) + body


def _unpack(buf: bytes) -> Any:
    return msgpack.unpackb(buf, raw=False, strict_map_key=False, unicode_errors="replace")


def _decode(frames: Frames) -> Optional[_Msg]:
    """A received message as _Msg, or None when it is not a zfleet message we understand."""
    if not frames:
        return None
    head = frames[0]
    head = head.bytes if hasattr(head, "bytes") else head
    if len(head) < 4 or head[:2] != b"ZF" or head[2] != PROTO_VERSION:
        return None
    try:
        f = _unpack(head[4:])
    except Exception:  # noqa: BLE001 - any decoding problem: drop the message
        return None
    if not isinstance(f, dict):
        return None
    payload = None
    if len(frames) > 1:
        p = frames[1]
        payload = p.bytes if hasattr(p, "bytes") else bytes(p)
    return _Msg(head[3], f, payload)


# The replies each request can get (PROTOCOL.md 6.1). A RESULT pushed for a job carries the
# tag of its SUBMIT: it answers the SUBMIT only when it comes instead of ACCEPTED (the job
# ended before its acceptance was sent); after ACCEPTED it is just the pushed result.
_ANSWERS = {SUBMIT: frozenset((ACCEPTED, RESULT, REJECTED, ERROR)),
            GET: frozenset((RESULT, STATUS, ERROR)),
            PING: frozenset((PONG,))}
_DEFAULT_ANSWERS = frozenset((REPLY, ERROR))


def _answers(cmd: int, m: _Msg) -> bool:
    return m.cmd in _ANSWERS.get(cmd, _DEFAULT_ANSWERS)


def _state_name(n: Any) -> str:
    return STATES[n] if isinstance(n, int) and 0 <= n < len(STATES) else "unknown"


def _result_of(m: _Msg) -> Result:
    st = _state_name(m.f.get(F_STATUS))
    return Result(id=m.f.get(F_ID, 0), status=st, ok=st == "succeeded",
                  output=m.payload or b"", error=m.f.get(F_TEXT, ""),
                  attempts=m.f.get(F_ATTEMPT, 0), duration_us=m.f.get(F_DURATION, 0),
                  worker=m.f.get(F_WORKER, ""), device=m.f.get(F_DEVNAME, ""),
                  function=m.f.get(F_FN, ""), tags=_tags_of(m.f.get(F_TAGS, "")),
                  step=m.f.get(F_STEP, 0), steps=m.f.get(F_STEPS, 0))


def _status_of(m: _Msg) -> Status:
    return Status(id=m.f.get(F_ID, 0), status=_state_name(m.f.get(F_STATUS)),
                  attempts=m.f.get(F_ATTEMPT, 0), progress=float(m.f.get(F_PROGRESS, 0.0)),
                  progress_text=m.f.get(F_TEXT, ""), worker=m.f.get(F_WORKER, ""),
                  device=m.f.get(F_DEVNAME, ""), function=m.f.get(F_FN, ""),
                  tags=_tags_of(m.f.get(F_TAGS, "")), step=m.f.get(F_STEP, 0),
                  steps=m.f.get(F_STEPS, 0))


def _tags_of(text: Any) -> Dict[str, str]:
    """The tags of a RESULT or STATUS ("k=v,k=v") as a dict."""
    if not isinstance(text, str) or not text:
        return {}
    return dict(p.split("=", 1) for p in text.split(",") if "=" in p)


def _tags_text(tags: Optional[Dict[str, str]]) -> str:
    """The wire form of submit's tags, checked as the broker checks them (ValueError)."""
    if not tags:
        return ""
    if len(tags) > TAGS_COUNT:
        raise ValueError("more than %d tags" % TAGS_COUNT)
    pairs = []
    for k, v in tags.items():
        k, v = str(k), str(v)
        for part in (k, v):
            if not 1 <= len(part.encode("utf-8")) <= TAG_PART_MAX:
                raise ValueError("a tag's key and value must be 1 to %d bytes" % TAG_PART_MAX)
            if "," in part or any(ord(ch) < 0x20 or ord(ch) == 0x7f for ch in part):
                raise ValueError("a tag must not hold ',' or control characters")
        if "=" in k:
            raise ValueError("a tag's key must not hold '='")
        pairs.append("%s=%s" % (k, v))
    text = ",".join(pairs)
    if len(text.encode("utf-8")) > TAGS_MAX:
        raise ValueError("tags are longer than %d bytes in all" % TAGS_MAX)
    return text


def _jobs_fields(state: Optional[str], function: Optional[str], tag: Optional[str],
                 limit: int, after: int) -> Fields:
    """The JOBS request fields (ValueError on bad input)."""
    if not 1 <= int(limit) <= 1000:
        raise ValueError("limit must be 1 to 1000")
    f: Fields = {F_LIMIT: int(limit)}
    if after:
        f[F_ID] = int(after)
    if state is not None:
        if state not in STATES:
            raise ValueError("unknown state %r" % state)
        f[F_STATUS] = STATES.index(state)
    if function:
        f[F_FN] = function
    if tag:
        if "," in tag or "=" not in tag:
            raise ValueError("the tag filter must be one key=value")
        f[F_TAGS] = tag
    return f


def _as_bytes(data: Data) -> Buffer:
    if isinstance(data, str):
        return data.encode("utf-8")
    if isinstance(data, (bytes, bytearray, memoryview)):
        return data
    raise TypeError("job data must be bytes or str, not %s" % type(data).__name__)


def _submit_fields(function: str, priority: int = 0, run_timeout_ms: int = 0,
                   deadline_ms: int = 0, max_attempts: int = 0, device: Union[str, int] = "any",
                   no_push: bool = False, forget: bool = False, retries: int = 0,
                   retry_backoff_ms: int = 0, delay_ms: int = 0,
                   not_before: float = 0,
                   tags: Optional[Dict[str, str]] = None,
                   then: Optional[Sequence[str]] = None) -> Fields:
    """The SUBMIT header fields (without the tag). Raises ValueError/TypeError on bad input,
    which the broker would otherwise answer with an untagged error."""
    if not isinstance(function, str):
        raise TypeError("function must be a str")
    if not 1 <= len(function.encode("utf-8")) <= FN_MAX:
        raise ValueError("function name must be 1 to %d bytes" % FN_MAX)
    f: Fields = {F_FN: function}
    if not -(1 << 31) <= int(priority) < (1 << 31):
        raise ValueError("priority must fit in 32 bits")
    for name, v in (("run_timeout_ms", run_timeout_ms), ("deadline_ms", deadline_ms),
                    ("max_attempts", max_attempts)):
        if not 0 <= int(v) <= _U32:
            raise ValueError("%s must be from 0 to %d" % (name, _U32))
    if isinstance(device, str):
        if device not in DEVICES:
            raise ValueError("device must be 'any', 'cpu' or 'gpu'")
        device = DEVICES[device]
    if priority:
        f[F_PRIORITY] = int(priority)
    if run_timeout_ms:
        f[F_TIMEOUT] = int(run_timeout_ms)
    if deadline_ms:
        f[F_DEADLINE] = int(deadline_ms)
    if max_attempts:
        f[F_MAX_ATTEMPTS] = int(max_attempts)
    if device:
        f[F_DEVICE] = int(device)
    # no_push with forget is sent as asked: the broker rejects it, saying why
    flags = (FLAG_NO_PUSH if no_push else 0) | (FLAG_FORGET if forget else 0)
    if flags:
        f[F_FLAGS] = flags
    _schedule_fields(f, retries, retry_backoff_ms, delay_ms, not_before)
    text = _tags_text(tags)
    if text:
        f[F_TAGS] = text
    steps = _then_text(then)
    if steps:
        f[F_THEN] = steps
    return f


def step(function: str, device: Optional[str] = None, timeout_ms: Optional[int] = None,
         retries: Optional[int] = None) -> str:
    """One further pipeline step for submit's then=, with its own options:
    step("infer", "gpu", timeout_ms=5000, retries=2) is "infer@gpu;timeout=5000;retries=2".
    device: "cpu", "gpu" or "any" (None: any); timeout_ms: that step's run timeout (0: none);
    retries: its handler failures retried (<= 20). An option left None is the submit's."""
    if not function or "," in function or ";" in function or "@" in function:
        raise ValueError("a step's function must be non-empty, without ',', ';' or '@'")
    text = function
    if device is not None:
        if device not in ("cpu", "gpu", "any"):
            raise ValueError("a step's device must be cpu, gpu or any")
        text += "@" + device
    if timeout_ms is not None:
        if not 0 <= int(timeout_ms) <= 0xFFFFFFFF:
            raise ValueError("a step's timeout_ms must be from 0 to 4294967295")
        text += ";timeout=%d" % int(timeout_ms)
    if retries is not None:
        if not 0 <= int(retries) <= RETRIES_MAX:
            raise ValueError("a step's retries must be from 0 to %d" % RETRIES_MAX)
        text += ";retries=%d" % int(retries)
    return text


def _then_text(then: Optional[Sequence[str]]) -> str:
    """The wire form of submit's further pipeline steps ("fn@dev;opt=v,..."); the broker
    checks names, devices and options (Rejected, with the reason), here only what joining
    them could hide."""
    if not then:
        return ""
    if isinstance(then, str):
        raise TypeError("then must be a list of 'function[@cpu|@gpu][;timeout=MS][;retries=N]'"
                        " strings (see zfleet.step)")
    if len(then) > PIPE_STEPS:
        raise ValueError("more than %d further steps" % PIPE_STEPS)
    for one in then:
        if not isinstance(one, str) or not one or "," in one:
            raise ValueError("a step must be a non-empty 'function[@cpu|@gpu][;option=value]'"
                             " without ','")
    text = ",".join(then)
    if len(text.encode("utf-8")) > THEN_MAX:
        raise ValueError("the steps are longer than %d bytes in all" % THEN_MAX)
    return text


def _schedule_fields(f: Fields, retries: int, retry_backoff_ms: int, delay_ms: int,
                     not_before: float) -> None:
    """Retries and delayed start: retries (handler failures retried, <= 20) after
    retry_backoff_ms (doubling, capped at 60 s, equal jitter); delay_ms after acceptance or
    not_before (wall-clock, ms since the epoch), whichever is later (<= 30 days ahead)."""
    for name, v, top in (("retries", retries, RETRIES_MAX),
                         ("retry_backoff_ms", retry_backoff_ms, BACKOFF_MAX_MS),
                         ("delay_ms", delay_ms, DELAY_MAX_MS)):
        if not 0 <= int(v) <= top:
            raise ValueError("%s must be from 0 to %d" % (name, top))
    if not_before and not 0 < int(not_before) <= int(time.time() * 1000) + DELAY_MAX_MS:
        raise ValueError("not_before must be wall-clock ms since the epoch, at most 30 days "
                         "ahead")
    values: Tuple[Tuple[int, float], ...] = (
        (F_RETRIES, retries), (F_BACKOFF, retry_backoff_ms), (F_DELAY, delay_ms),
        (F_NOT_BEFORE, not_before))
    for key, val in values:
        if val:
            f[key] = int(val)


def _frames(cmd: int, fields: Fields, payload: Any = None) -> Tuple[Frames, bool]:
    if payload is None:
        return [_encode(cmd, fields)], True
    return [_encode(cmd, fields), payload], len(payload) <= _PAYLOAD_COPY_MAX


class _LruSet:
    """A bounded set: the oldest entries go first."""

    def __init__(self, cap: int) -> None:
        self._d: collections.OrderedDict[int, None] = collections.OrderedDict()
        self._cap = cap

    def add(self, k: int) -> None:
        self._d[k] = None
        self._d.move_to_end(k)
        while len(self._d) > self._cap:
            self._d.popitem(last=False)

    def __contains__(self, k: object) -> bool:
        return k in self._d

    def discard(self, k: int) -> None:
        self._d.pop(k, None)


# ------------------------------------------------------------------ CURVE

_CERT_FILE_MAX = 65536   # a certificate is a few hundred bytes; more is not one
_HS_FAILED = frozenset((zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL, zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL,
                        zmq.EVENT_HANDSHAKE_FAILED_AUTH))
# What the client's monitor reports: connections (a reconnect sends WAIT again) and the
# outcome of each handshake (a refused key fails the calls at once: Denied).
_MONITORED = (zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED | zmq.EVENT_CONNECT_RETRIED
              | zmq.EVENT_HANDSHAKE_SUCCEEDED)
for _e in _HS_FAILED:
    _MONITORED |= _e
del _e


def _key_path(value: Optional[KeyFile], env: str) -> Optional[str]:
    """A key file argument, else the environment variable (as the CLI: --key, then $ZFLEET_KEY).
    An empty string, given or in the environment, means none."""
    if value is None:
        value = os.environ.get(env)
    else:
        value = os.fspath(value)
    return value or None


def _is_z85_key(k: Any) -> bool:
    if not isinstance(k, bytes) or len(k) != 40:
        return False
    try:
        return len(zmq.utils.z85.decode(k)) == 32  # type: ignore[no-untyped-call]
    except Exception:  # noqa: BLE001 - a character outside Z85
        return False


def _read_cert(path: str, what: str) -> Tuple[bytes, Optional[bytes]]:
    """(public, secret or None) Z85 keys of a certificate file (czmq's zcert / pyzmq's
    zmq.auth format, as `zfleet keygen` writes it). ValueError says what is wrong."""
    shown = os.fsdecode(path)
    try:
        with open(path, "rb") as f:
            size = len(f.read(_CERT_FILE_MAX + 1))
    except OSError as e:
        raise ValueError("cannot read the %s file %s: %s"
                         % (what, shown, e.strerror or e)) from None
    if size > _CERT_FILE_MAX:
        raise ValueError("%s (%s) is not a key file: over %d bytes" % (shown, what, _CERT_FILE_MAX))
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError):
        raise ValueError("%s (%s) is not a CURVE certificate: no public-key line (make keys with "
                         "`zfleet keygen NAME` or zmq.auth.create_certificates)"
                         % (shown, what)) from None
    for name, k in (("public-key", public), ("secret-key", secret)):
        if k is not None and not _is_z85_key(k):
            raise ValueError("%s (%s): the %s is not 40 Z85 characters" % (shown, what, name))
    return public, secret


def _load_keys(key: Optional[KeyFile],
               broker_key: Optional[KeyFile]) -> Optional[Tuple[bytes, bytes, bytes]]:
    """This client's CURVE keys as (public, secret, broker's public), Z85, from the files
    `key` (a NAME.key_secret) and `broker_key` (the broker's NAME.key), else $ZFLEET_KEY and
    $ZFLEET_BROKER_KEY; None when neither is given (no CURVE). Raises ValueError."""
    key = _key_path(key, "ZFLEET_KEY")
    broker_key = _key_path(broker_key, "ZFLEET_BROKER_KEY")
    if key is None and broker_key is None:
        return None
    if key is None or broker_key is None:
        raise ValueError("CURVE needs both this client's key (key=\"NAME.key_secret\" or "
                         "$ZFLEET_KEY) and the broker's public key (broker_key=\"broker.key\" or "
                         "$ZFLEET_BROKER_KEY); only the %s was given"
                         % ("key" if key is not None else "broker_key"))
    if not zmq.has("curve"):
        raise ValueError("this libzmq (%s) was built without CURVE" % zmq.zmq_version())
    public, secret = _read_cert(key, "key")
    if secret is None:
        raise ValueError("%s holds no secret-key: give this client's NAME.key_secret file as "
                         "key, not the public NAME.key" % os.fsdecode(key))
    if zmq.curve_public(secret) != public:
        raise ValueError("%s: its public-key is not the secret-key's public half"
                         % os.fsdecode(key))
    server, _ = _read_cert(broker_key, "broker_key")
    return public, secret, server


# ------------------------------------------------------------------ fork

_LIVE: weakref.WeakSet[_Base] = weakref.WeakSet()   # every client: reset in a forked child
# What a forked child inherited and must neither close nor free (a finaliser would close it):
# contexts, sockets, tasks of the parent's clients. Kept for the life of the process.
_ABANDONED: List[Tuple[Any, ...]] = []


def _reset_after_fork() -> None:
    """os.register_at_fork(after_in_child): runs in the child, in its only thread."""
    for c in list(_LIVE):
        try:
            c._forked()
        except Exception:  # noqa: BLE001 - must not break the fork; the pid check retries
            log.exception("zfleet: resetting a client after fork failed")


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


# ------------------------------------------------------------------ shared state

class _Base:
    """State and message dispatch shared by Client and AsyncClient. Subclasses do the I/O
    and implement the hooks _on_reply, _result_ready, _wait_failed and _send_now."""

    def __init__(self, endpoint: Optional[str], request_timeout: float, heartbeat: float,
                 on_progress: Optional[ProgressCallback], max_buffered: int,
                 max_buffered_bytes: int, key: Optional[KeyFile], broker_key: Optional[KeyFile],
                 unreachable_after: Optional[float]) -> None:
        self._curve = _load_keys(key, broker_key)   # (public, secret, broker's) or None
        self.endpoint = endpoint or os.environ.get("ZFLEET_BROKER") or DEFAULT_BROKER
        if request_timeout is None or request_timeout <= 0:
            raise ValueError("request_timeout must be > 0 seconds")
        self.request_timeout = float(request_timeout)
        self.heartbeat = float(heartbeat) if heartbeat and heartbeat > 0 else 1.0
        # A wait (wait, results, watch) with no connection to the broker for this long
        # raises Unreachable, unless forever=True
        self.unreachable_after = (max(10 * self.heartbeat, 5.0) if unreachable_after is None
                                  else float(unreachable_after))
        # Whether a connection to the broker is up (the monitor's CONNECTED / DISCONNECTED),
        # and since when none is (kept across the client's own reconnects)
        self._up = False
        self._down_since = time.monotonic()
        self.on_progress = on_progress
        self._tag = random.getrandbits(62)
        self._epoch = 0                 # socket generation: bumped by every reconnect
        self._connects = 0              # CONNECTED events seen on the current socket
        self._connects_later = 0        # ... read but not yet acted on (_on_monitor defer)
        # Why the broker refuses the current socket's handshakes (None: it does not), and the
        # connections it closed during the handshake in a row (NO_DETAIL events)
        self._denied: Optional[str] = None
        self._hs_closed = 0
        self._last_recv = time.monotonic()
        self._last_ping = 0.0
        self._quiet_from = 0.0          # silence is measured from max(this, _last_recv)
        # Job ids submitted on the current connection with push: their result comes by
        # itself, so waiting on them sends WAIT only after a heartbeat of waiting.
        self._pushed: Set[int] = set()
        self._wait_tags: Dict[int, int] = {}   # tag of a WAIT sent -> job id
        self._lazy: Dict[int, float] = {}      # job id -> when waiting began (WAIT not yet sent)
        # id -> Result nobody waits for yet
        self._unclaimed: collections.OrderedDict[int, Result] = collections.OrderedDict()
        self._unclaimed_bytes = 0       # the output bytes of those results
        if max_buffered < 0 or max_buffered_bytes < 0:
            raise ValueError("max_buffered and max_buffered_bytes must be >= 0")
        self._max_buffered = int(max_buffered)
        self._max_buffered_bytes = int(max_buffered_bytes)
        self._watchers: Dict[int, List[Any]] = {}   # job id -> [watch() state] (progress to each)
        self._delivered = _LruSet(100000)  # ids whose result was handed out (drop repeats)
        self._progress: Dict[int, Tuple[float, str]] = {}   # id -> (fraction, text)
        self._closed = False
        self._pid = os.getpid()         # the process whose socket this is (fork check)
        self._forks = 0                 # forks this client went through (a generation)
        _LIVE.add(self)

    def _next_tag(self) -> int:
        self._tag = (self._tag + 1) & ((1 << 64) - 1) or 1
        return self._tag

    # ---- hooks
    def _waiting_ids(self) -> Collection[int]:
        raise NotImplementedError

    def _on_reply(self, tag: int, m: _Msg) -> bool:
        """A reply for request `tag`. Returns False if no request waits for it."""
        raise NotImplementedError

    def _result_ready(self, r: Result) -> bool:
        """A result for a job somebody waits for. Returns False if nobody does."""
        raise NotImplementedError

    def _wait_failed(self, job_id: int, exc: Error) -> None:
        raise NotImplementedError

    def _send_now(self, frames: Frames, copy: bool, tag: Optional[int] = None) -> Any:
        """Sends a message; `tag` is the request (or WAIT) it carries, if any."""
        raise NotImplementedError

    def _forked(self) -> None:
        """In a forked child: drop what belongs to the parent's socket and process."""
        raise NotImplementedError

    def _reconnect(self) -> None:
        """A new socket in place of the current one (the caller owns the socket)."""
        raise NotImplementedError

    def _fork_reset(self) -> None:
        """The part of _forked shared by both clients: the connection's state goes (the child
        will have a new connection); finished results (_unclaimed, _progress) stay."""
        self._pid = os.getpid()
        self._forks += 1
        self._epoch += 1
        self._connects = self._connects_later = 0
        self._pushed = set()   # pushed to the parent's connection, not to ours
        self._wait_tags = {}
        self._lazy = {}
        self._watchers = {}             # the parent's watches (they register again here)
        self._up = False
        self._down_since = time.monotonic()
        self._tag = random.getrandbits(62)
        self._last_recv = self._quiet_from = time.monotonic()

    # ---- dispatch
    def _dispatch(self, frames: Frames) -> None:
        self._last_recv = time.monotonic()
        m = _decode(frames)
        if m is None:
            log.warning("zfleet: dropped a message that is not a zfleet reply")
            return
        tag = m.f.get(F_TAG, 0)
        cmd = m.cmd
        if cmd == PONG:
            self._on_reply(tag, m)  # the answer to a limit check (others are liveness)
            return
        if cmd == PROGRESS:
            self._note_progress(m.f.get(F_ID, 0), float(m.f.get(F_PROGRESS, 0.0)),
                                m.f.get(F_TEXT, ""))
            return
        if cmd == RESULT:
            self._take_result(_result_of(m))
            self._wait_tags.pop(tag, None)
            self._on_reply(tag, m)       # the answer to a GET
            return
        if tag in self._wait_tags and cmd in (STATUS, ERROR):
            job_id = self._wait_tags.pop(tag)
            if cmd == ERROR:
                self._wait_failed(job_id, _broker_error(m.f.get(F_CODE, 0), m.f.get(F_TEXT, "")))
            elif F_PROGRESS in m.f and job_id in self._watchers:
                # the progress so far, for a watch that begins while the job runs
                self._progress_event(Progress(job_id, float(m.f[F_PROGRESS]),
                                              m.f.get(F_TEXT, "")))
            return  # a STATUS: the broker knows the job and will push its result
        if not self._on_reply(tag, m):
            if cmd == ERROR:
                log.warning("zfleet: broker error %s: %s", m.f.get(F_CODE), m.f.get(F_TEXT, ""))
            else:
                log.debug("zfleet: unexpected reply 0x%02x (tag %d)", cmd, tag)

    def _note_progress(self, job_id: int, fraction: float, text: str) -> None:
        self._progress.pop(job_id, None)
        self._progress[job_id] = (fraction, text)
        while len(self._progress) > _PROGRESS_KEEP:   # jobs whose result never came here
            del self._progress[next(iter(self._progress))]
        self._progress_event(Progress(job_id, fraction, text))
        if self.on_progress is not None:
            self._call_progress(job_id, fraction, text)

    def _progress_event(self, p: Progress) -> None:
        """A progress report for the watches of its job (hook)."""
        raise NotImplementedError

    def _keep(self, r: Result) -> None:
        """Keeps a result nobody waits for yet, within max_buffered results and
        max_buffered_bytes of output: the oldest go first (the broker still has them, for its
        result TTL, unless submitted with forget=True: a later wait asks for them again). One
        larger than max_buffered_bytes is not kept (and pushes nothing out)."""
        self._unkeep(r.id)
        if len(r.output) > self._max_buffered_bytes or self._max_buffered == 0:
            return   # could never fit: it must not push the others out
        self._unclaimed[r.id] = r
        self._unclaimed_bytes += len(r.output)
        while self._unclaimed and (len(self._unclaimed) > self._max_buffered
                                   or self._unclaimed_bytes > self._max_buffered_bytes):
            _, old = self._unclaimed.popitem(last=False)
            self._unclaimed_bytes -= len(old.output)

    def _unkeep(self, job_id: int) -> Optional[Result]:
        """Removes a kept result (returned, or None)."""
        r = self._unclaimed.pop(job_id, None)
        if r is not None:
            self._unclaimed_bytes -= len(r.output)
        return r

    def _call_progress(self, job_id: int, fraction: float, text: str) -> None:
        if self.on_progress is None:
            return
        try:
            r = self.on_progress(job_id, fraction, text)
            if inspect.isawaitable(r):
                asyncio.ensure_future(r)
        except Exception:  # noqa: BLE001 - a callback must not break the client
            log.exception("zfleet: on_progress callback failed")

    def _take_result(self, r: Result) -> None:
        self._pushed.discard(r.id)
        self._progress.pop(r.id, None)
        self._lazy.pop(r.id, None)
        if self._result_ready(r):
            self._delivered.add(r.id)
            return
        if r.id in self._delivered:
            return  # a second copy (pushed and asked for): already handed out
        self._keep(r)

    def _claim(self, job_id: int) -> Optional[Result]:
        """A buffered result, handed out (or None)."""
        r: Optional[Result] = self._unkeep(job_id)
        if r is not None:
            self._delivered.add(job_id)
        return r

    # ---- sending
    def _send_wait(self, job_id: int) -> None:
        self._lazy.pop(job_id, None)
        tag = self._next_tag()
        self._wait_tags[tag] = job_id
        if len(self._wait_tags) > 4 * max(self._max_buffered, 1000):  # replies that never came
            for t in list(self._wait_tags)[: len(self._wait_tags) // 2]:
                del self._wait_tags[t]
        self._send_now(*_frames(WAIT, {F_ID: job_id, F_TAG: tag}), tag)

    def _start_wait(self, job_id: int) -> None:
        """Somebody begins waiting for job_id: ask the broker, at once or (for a job whose
        result is pushed to this connection anyway) only after a heartbeat."""
        if job_id in self._pushed:
            self._lazy.setdefault(job_id, time.monotonic())
        else:
            self._send_wait(job_id)

    def _housekeeping(self, busy: bool, can_reconnect: bool) -> None:
        """Heartbeat duties, run at least every heartbeat/2 while anybody waits: lazy WAITs,
        PING after one silent heartbeat, reconnect + WAIT again after three."""
        now = time.monotonic()
        hb = self.heartbeat
        for job_id, since in list(self._lazy.items()):
            if now - since >= hb:
                self._send_wait(job_id)
        if not busy:
            return
        silent = now - max(self._last_recv, self._quiet_from)
        if silent >= 3 * hb and can_reconnect:
            log.info("zfleet: broker at %s silent for %.1fs: reconnecting", self.endpoint, silent)
            self._reconnect()
        elif silent >= hb and now - self._last_ping >= hb:
            self._last_ping = now
            self._send_now([_encode(PING, {})], True)

    def _after_reconnect(self) -> None:
        """Results are pushed to the old connection's identity: ask for them again."""
        self._epoch += 1
        self._pushed.clear()
        self._quiet_from = time.monotonic()
        for job_id in list(self._waiting_ids()):
            self._send_wait(job_id)

    def _on_monitor(self, frames: Frames, defer: bool = False) -> None:
        """One monitor event. defer: a CONNECTED is only counted, for _connected to act on
        later (the caller is in the middle of a send and must not send WAITs now)."""
        try:
            ev = parse_monitor_message(frames)
        except Exception:  # noqa: BLE001
            return
        event = ev["event"]
        if event == zmq.EVENT_CONNECTED:
            self._up = True
            self._connects_later += 1
            if not defer:
                self._connected()
        elif event == zmq.EVENT_DISCONNECTED:
            if self._up:
                self._up = False
                self._down_since = time.monotonic()
        elif event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            self._denied = None        # e.g. the key was added and the broker reloaded
            self._hs_closed = 0
        elif event in _HS_FAILED:
            why = self._handshake_failure(event, ev["value"])
            if why is not None:
                if self._denied is None:
                    log.info("zfleet: no service from the broker at %s: %s",
                             self.endpoint, why)
                self._denied = why

    def _connected(self) -> None:
        """The CONNECTED events counted: after the first, each is a reconnect."""
        n, self._connects_later = self._connects_later, 0
        for _ in range(n):
            self._connects += 1
            if self._connects > 1:
                log.info("zfleet: reconnected to %s", self.endpoint)
                self._after_reconnect()

    def _handshake_failure(self, event: int, value: int) -> Optional[str]:
        """Why a handshake failed, as the C client says it (common/handshake.c), or None when
        one failure does not tell yet. Only this end's configuration is known here: a
        mismatch with keys means the broker has no CURVE, without keys that it has."""
        if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            return ("the broker refused this key (CURVE authentication failed, ZAP status %d): "
                    "it is not in the broker's key directory for this endpoint" % value)
        if event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
            if value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
                if self._curve is not None:
                    return ("security mismatch: CURVE is on at one end only (this client has a "
                            "key; the broker runs without --curve-secret: give neither key nor "
                            "broker_key for it)")
                return ("security mismatch: CURVE is on at one end only (the broker runs with "
                        "--curve-secret; give this client key= and broker_key=, or "
                        "$ZFLEET_KEY and $ZFLEET_BROKER_KEY)")
            if value == zmq.PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC:
                return ("CURVE handshake failed: the broker key given (broker_key) is not this "
                        "broker's")
            return "security handshake failed (ZeroMQ protocol error 0x%x)" % value
        # The broker closed the connection during the handshake, with no reason: what a CURVE
        # broker does to a HELLO it cannot decrypt (the wrong broker_key) or to a client
        # without CURVE, and a NULL broker to a CURVE client. Once could be a broker that
        # died at that moment; twice in a row, with no handshake between, is a refusal.
        self._hs_closed += 1
        if self._hs_closed < 2:
            return None
        if self._curve is not None:
            return ("the broker closed the connection during the CURVE handshake: the broker "
                    "key given (broker_key) is not this broker's, or the broker runs without "
                    "--curve-secret")
        return ("the broker closed the connection during the handshake: it most likely runs "
                "with CURVE (--curve-secret) and this client has no key (give key= and "
                "broker_key=, or $ZFLEET_KEY and $ZFLEET_BROKER_KEY)")

    def _denial(self) -> Denied:
        return Denied("no service from the broker at %s: %s" % (self.endpoint, self._denied))

    @staticmethod
    def _too_large(m: _Msg, size: int) -> Optional[PayloadTooLarge]:
        """PayloadTooLarge when `size` is over the limit a PONG states, else None."""
        limit = m.f.get(F_MAXPAYLOAD)
        if isinstance(limit, int) and size > limit:
            return PayloadTooLarge(E_TOO_LARGE, "payload too large: %d bytes, the broker's "
                                   "limit is %d" % (size, limit))
        return None

    def _reply_check(self, m: _Msg, submit: bool = False) -> _Msg:
        if m.cmd in (REJECTED, ERROR) or (m.cmd == REPLY and m.f.get(F_CODE, 0) != 0):
            raise _broker_error(m.f.get(F_CODE, 0), m.f.get(F_TEXT, ""), submit)
        return m

    def _new_socket(self, ctx: Any) -> Tuple[Any, Any]:
        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.RECONNECT_IVL, 100)
        s.setsockopt(zmq.RECONNECT_IVL_MAX, 5000)
        if self._curve is not None:   # every socket: the first, a reconnect, after fork
            public, secret, server = self._curve
            s.setsockopt(zmq.CURVE_SERVERKEY, server)
            s.setsockopt(zmq.CURVE_PUBLICKEY, public)
            s.setsockopt(zmq.CURVE_SECRETKEY, secret)
        mon = s.get_monitor_socket(_MONITORED)
        try:
            s.connect(self.endpoint)
        except zmq.ZMQError as e:
            s.disable_monitor()
            mon.close(0)
            s.close(0)
            raise ValueError("bad broker endpoint %r: %s" % (self.endpoint, e)) from None
        self._connects = self._connects_later = 0
        self._denied = None
        self._hs_closed = 0
        self._last_recv = time.monotonic()
        if self._up:   # a connection that was up goes with the old socket
            self._up = False
            self._down_since = self._last_recv
        return s, mon

    def _unreachable(self, since: float, limit: float) -> bool:
        """Whether no connection to the broker has been up for `limit` seconds, counted from
        `since` at the earliest (when the call began)."""
        return not self._up and time.monotonic() - max(self._down_since, since) >= limit

    def _down_error(self, since: float, limit: Optional[float]) -> Unreachable:
        return Unreachable("no connection to the broker at %s for %.1fs"
                           % (self.endpoint, time.monotonic() - max(self._down_since, since)))

    @staticmethod
    def _close_socket(s: Any, mon: Any) -> None:
        if s is not None:
            try:
                s.disable_monitor()
            except zmq.ZMQError:
                pass
            s.close(0)
        if mon is not None:
            mon.close(0)

    @staticmethod
    def _dead_reply(m: _Msg, purge: bool) -> Any:
        if purge:
            n = re.search(r"\d+", m.f.get(F_TEXT, ""))
            return int(n.group()) if n else 0
        return _unpack(m.payload) if m.payload else []


# ------------------------------------------------------------------ synchronous client

class Client(_Base):
    """A synchronous zfleet client, safe to share between threads and usable after fork().

    endpoint: the broker's client endpoint (default $ZFLEET_BROKER, else tcp://127.0.0.1:5555).
    request_timeout: seconds a request (submit, get, cancel, stats...) waits for the broker
    before Unreachable; with no connection to the broker at all it fails after one
    heartbeat. unreachable_after: seconds with no connection after which a wait (wait,
    results, watch) raises Unreachable unless given forever=True (default 10 heartbeats,
    at least 5 s). heartbeat: seconds of silence while waiting before a PING; three
    make the client reconnect and ask again. on_progress(job_id, fraction, text) is called
    for progress reports that arrive while the client reads (inside wait, results, ...), in
    whichever thread is reading then, outside the client's lock.

    Results of jobs submitted on this client are pushed to it and kept until you wait for
    them: at most max_buffered results and max_buffered_bytes of output nobody waits for
    yet (the oldest are dropped first and asked of the broker again when waited for).
    watch(id) yields a job's Progress reports, then its Result.
    Submit with no_push=True for jobs whose result you will not collect here, and with
    forget=True for jobs whose result you will collect only here (the broker drops it once
    pushed).

    Any number of threads may call one client at once (each call gets its own reply; a result
    goes to the threads waiting for its job). In a child process after fork() the client
    opens a new connection by itself (see the module's notes on threads and fork).

    CURVE (a broker run with --curve-secret): key is this client's secret key file
    (NAME.key_secret, from `zfleet keygen NAME` or zmq.auth.create_certificates), broker_key
    the broker's public key file (its NAME.key); by default $ZFLEET_KEY and
    $ZFLEET_BROKER_KEY. Both or neither (ValueError otherwise, or for a file that is not a
    certificate). A broker that refuses the key makes calls raise Denied at once.
    """

    def __init__(self, endpoint: Optional[str] = None, request_timeout: float = 5.0,
                 heartbeat: float = 1.0, *, on_progress: Optional[ProgressCallback] = None,
                 context: Optional[zmq.Context[Any]] = None, max_buffered: int = 1000,
                 max_buffered_bytes: int = 16 << 20, key: Optional[KeyFile] = None,
                 broker_key: Optional[KeyFile] = None,
                 unreachable_after: Optional[float] = None) -> None:
        super().__init__(endpoint, request_timeout, heartbeat, on_progress, max_buffered,
                         max_buffered_bytes, key, broker_key, unreachable_after)
        self._ctx: Any = context or zmq.Context.instance()
        self._sock: Any = None         # zmq.Socket, the DEALER
        self._mon: Any = None          # its monitor's PAIR socket
        self._poller: Any = None       # zmq.Poller of both and the wake-up pipe
        # tag -> _Msg (or the exception that ends the request)
        self._replies: Dict[int, Union[_Msg, Error]] = {}
        # tag -> (request command, deque of answered tags or None)
        self._expected: Dict[int, Tuple[int, Optional[Deque[int]]]] = {}
        self._pending: Dict[int, int] = {}     # job id -> number of waiters (wait / results)
        self._ready: Dict[int, Result] = {}    # job id -> Result for a pending id
        self._taken: Set[int] = set()          # pending ids whose Result a waiter has taken
        self._errors: Dict[int, Error] = {}    # job id -> exception for a pending id
        self._listeners: List[Deque[int]] = []  # deques of ids that became ready (results())
        self._process_state()
        self._open()

    def _process_state(self) -> None:
        """What cannot cross a fork: the lock, the reader election, the wake-up pipe."""
        self._lock = threading.RLock()  # reentrant: a finaliser may run inside a call
        self._cond = threading.Condition(self._lock)
        # one JOBS page in flight per connection: the broker keeps at most 8 waiting per
        # connection while jobs run (PROTOCOL.md §6.11); threads listing at once take turns
        self._jobs_lock = threading.Lock()
        self._sleepers = 0             # threads in _sleep (notify only when there are some)
        self._reader: Optional[int] = None   # ident of the thread that owns the socket
        self._want_reconnect: Optional[int] = None   # epoch another thread asks to replace
        # (frames, copy, tag) for the reader to send
        self._outbox: Deque[Tuple[Frames, bool, Optional[int]]] = collections.deque()
        self._deferred: List[Tuple[int, float, str]] = []   # on_progress calls, outside the lock
        self._wake_r: Optional[int]
        self._wake_w: Optional[int]
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._woken = False            # a byte is in the pipe, not yet drained

    # ---- socket
    def _open(self) -> None:
        self._sock, self._mon = self._new_socket(self._ctx)
        self._poller = zmq.Poller()
        self._poller.register(self._sock, zmq.POLLIN)
        self._poller.register(self._mon, zmq.POLLIN)
        self._poller.register(self._wake_r, zmq.POLLIN)

    def _reconnect(self) -> None:
        """A new socket (the caller owns the socket). Requests in flight on the old one can
        no longer be answered: they fail now; the outbox goes with the old socket (WAITs are
        sent again by _after_reconnect)."""
        self._close_socket(self._sock, self._mon)
        self._outbox.clear()
        lost = Unreachable("connection to the broker at %s reset: no answer" % self.endpoint)
        for tag in self._expected:
            self._fail_request(tag, lost)
        self._open()
        self._after_reconnect()
        self._notify()

    def _refused(self) -> None:
        """The reader, when the broker refuses this socket's handshakes: every request and
        wait in flight fails with Denied now (nothing would ever come), and the socket is
        replaced: a submit still queued in it must not be delivered should the key be allowed
        later, and the next call gets a handshake of its own."""
        for tag in list(self._expected):
            self._fail_request(tag, self._denial())
        for job_id in list(self._pending):
            self._wait_failed(job_id, self._denial())
        self._reconnect()

    def _sleep(self, seconds: float) -> None:
        """With the lock held: releases it until _notify or `seconds` pass."""
        self._sleepers += 1
        try:
            self._cond.wait(seconds)
        finally:
            self._sleepers -= 1

    def _notify(self) -> None:
        if self._sleepers:
            self._cond.notify_all()

    def _acquire(self) -> threading.RLock:
        """The client's lock, for `with`; first, in a forked child, the fork reset (the
        inherited lock may be held by a thread that does not exist here)."""
        if self._pid != os.getpid():
            self._forked()
        return self._lock

    def _usable(self) -> None:
        """With the lock held, before using the connection: raises if closed, opens the
        connection a forked child has not opened yet."""
        if self._closed:
            raise Error("the client is closed")
        if self._sock is None:
            self._ctx = zmq.Context.instance()
            self._open()

    def _forked(self) -> None:
        """In a forked child (its only thread): abandon the parent's context, sockets, lock
        and pipe without touching them, and forget the parent's calls in progress (their
        threads are not here). The connection is opened again on first use."""
        if self._pid == os.getpid():
            return
        _ABANDONED.append((self._ctx, self._sock, self._mon, self._poller))
        for fd in (self._wake_r, self._wake_w):
            if fd is not None:
                try:
                    os.close(fd)   # the child's copy of the pipe: the parent keeps its own
                except OSError:
                    pass
        self._fork_reset()
        self._process_state()
        self._ctx = self._sock = self._mon = self._poller = None
        self._replies = {}
        self._expected = {}
        self._pending = {}
        self._ready = {}
        self._taken = set()
        self._errors = {}
        self._listeners = []
        if self._closed and self._wake_r is not None and self._wake_w is not None:
            os.close(self._wake_r)   # nothing to wake in a closed client
            os.close(self._wake_w)
            self._wake_r = self._wake_w = None

    def close(self) -> None:
        """Closes the connection. Jobs already accepted keep running; calls waiting in other
        threads raise Error."""
        with self._acquire():
            if self._closed:
                return
            self._closed = True
            self._notify()
            me = threading.get_ident()
            give_up = time.monotonic() + 5.0
            while self._reader is not None and self._reader != me:
                if time.monotonic() > give_up:
                    # a reader that never comes back (a frozen daemon thread at exit): what
                    # it polls cannot be closed safely, so it is left as it is
                    _ABANDONED.append((self._sock, self._mon, self._wake_r, self._wake_w))
                    self._sock = self._mon = self._wake_r = self._wake_w = None
                    break
                self._wake()            # the reader leaves poll, sees _closed and returns
                self._sleep(0.1)
            self._outbox.clear()
            self._close_socket(self._sock, self._mon)
            self._sock = self._mon = self._poller = None
            for fd in (self._wake_r, self._wake_w):
                if fd is not None:
                    os.close(fd)
            self._wake_r = self._wake_w = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass

    # ---- hooks
    def _waiting_ids(self) -> Collection[int]:
        return self._pending.keys()

    def _on_reply(self, tag: int, m: _Msg) -> bool:
        entry = self._expected.get(tag)
        if entry is None or not _answers(entry[0], m) or tag in self._replies:
            return False
        self._replies[tag] = m
        if entry[1] is not None:
            entry[1].append(tag)
        return True

    def _fail_request(self, tag: int, exc: Error) -> None:
        """Request `tag` gets `exc` instead of a reply (raised in the thread that sent it)."""
        entry = self._expected.get(tag)
        if entry is not None and tag not in self._replies:
            self._replies[tag] = exc
            if entry[1] is not None:
                entry[1].append(tag)

    def _result_ready(self, r: Result) -> bool:
        if r.id not in self._pending:
            return False
        self._ready[r.id] = r
        for q in tuple(self._listeners):
            q.append(r.id)
        return True

    def _wait_failed(self, job_id: int, exc: Error) -> None:
        if job_id in self._pending:
            self._errors[job_id] = exc
            for q in tuple(self._listeners):
                q.append(job_id)

    def _call_progress(self, job_id: int, fraction: float, text: str) -> None:
        self._deferred.append((job_id, fraction, text))   # run outside the lock (_read)

    def _progress_event(self, p: Progress) -> None:
        for q in self._watchers.get(p.id, ()):
            q.append(p)   # a deque(maxlen=WATCH_KEEP): the oldest report goes first

    def _send_now(self, frames: Frames, copy: bool, tag: Optional[int] = None) -> Any:
        """With the lock held: sends at once if no other thread owns the socket, else hands
        the message to the reader. Raises Unreachable when a direct send times out."""
        if self._closed:
            raise Error("the client is closed")
        if self._reader is None or self._reader == threading.get_ident():
            self._send_direct(frames, copy)
        else:
            self._outbox.append((frames, copy, tag))
            self._wake()

    def _send_direct(self, frames: Frames, copy: bool) -> None:
        """The socket's owner sends. When the message cannot be queued at once (the queue to
        the broker is full, or ZeroMQ gave up a connection whose handshake the broker
        refused: then nothing can be queued), waits up to request_timeout for room while
        watching the handshakes: a refusal fails the calls in flight with Denied (raised
        here too) and replaces the socket; no room in time raises Unreachable."""
        try:
            self._sock.send_multipart(frames, zmq.NOBLOCK, copy=copy)
            return
        except zmq.Again:
            pass
        sock, mon = self._sock, self._mon
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLOUT)
        poller.register(mon, zmq.POLLIN)
        start = time.monotonic()
        deadline = start + self.request_timeout
        while True:
            self._drain_monitor(defer=True)
            if self._denied is not None:
                exc = self._denial()
                self._refused()
                raise exc
            left = deadline - time.monotonic()
            if left <= 0 or self._unreachable(start, self.heartbeat):
                raise Unreachable("cannot send to the broker at %s (not connected)"
                                  % self.endpoint)
            if sock in dict(poller.poll(max(1, int(min(left, self.heartbeat) * 1000)))):
                try:
                    sock.send_multipart(frames, zmq.NOBLOCK, copy=copy)
                    return
                except zmq.Again:
                    pass

    def _drain_monitor(self, defer: bool = False) -> None:
        while True:
            try:
                frames = self._mon.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self._on_monitor(frames, defer)

    def _flush_outbox(self) -> None:
        """The reader sends what other threads queued; a failure goes to its request or WAIT."""
        while self._outbox:
            frames, copy, tag = self._outbox.popleft()
            try:
                self._send_direct(frames, copy)
            except (Unreachable, Denied) as e:   # (a refusal cleared the outbox)
                if tag is not None and tag in self._wait_tags:
                    self._wait_failed(self._wait_tags.pop(tag), e)
                elif tag is not None:
                    self._fail_request(tag, e)

    def _wake(self) -> None:
        """Interrupts the reader's poll (with the lock held)."""
        if not self._woken and self._wake_w is not None:
            self._woken = True
            try:
                os.write(self._wake_w, b"\0")
            except BlockingIOError:
                pass

    # ---- receiving
    def _recv_ready(self, events: Dict[Any, int]) -> None:
        if self._connects_later:
            self._connected()   # connections seen during a send
        if self._mon in events:
            self._drain_monitor()
        if self._sock in events:
            for _ in range(10000):
                try:
                    frames = self._sock.recv_multipart(zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    break
                self._dispatch(frames)

    def _read(self, wait_s: float, done: Optional[Callable[[], bool]] = None) -> None:
        """With the lock held and no reader: becomes the reader, polls up to wait_s seconds
        with the lock released, dispatches what came, does the heartbeat duties unless
        done(), then gives the role up and wakes the threads waiting on _cond."""
        self._reader = threading.get_ident()
        try:
            poller = self._poller
            self._lock.release()
            try:
                events = dict(poller.poll(max(0, int(wait_s * 1000))))
            finally:
                self._lock.acquire()
            if self._closed:
                return
            if self._wake_r is not None and self._wake_r in events:
                try:
                    while os.read(self._wake_r, 4096):
                        pass
                except BlockingIOError:
                    pass
                self._woken = False
            if self._want_reconnect is not None:
                stale = self._want_reconnect != self._epoch
                self._want_reconnect = None
                if not stale:
                    self._reconnect()   # asked for by a request that timed out
                    return              # what the old socket had is gone with it
            if self._outbox:
                self._flush_outbox()
            self._recv_ready(events)
            if self._denied is not None and (self._expected or self._pending):
                self._refused()
                return
            if done is not None and not done():
                # replace the socket only for a job waiter, never under a request in flight
                self._housekeeping(True, bool(self._pending) and not self._expected)
        finally:
            self._reader = None
            self._notify()
            if self._deferred:
                self._run_deferred()

    def _run_deferred(self) -> None:
        calls, self._deferred = self._deferred, []
        self._lock.release()
        try:
            for args in calls:
                _Base._call_progress(self, *args)
        finally:
            self._lock.acquire()

    def _poll_nowait(self) -> None:
        """Takes in what has arrived, if no other thread is reading (it does, then); a
        refusal seen earlier replaces the socket (_begin)."""
        self._usable()
        if self._reader is None:
            self._read(0)
            if self._denied is not None and self._reader is None:
                self._refused()

    def _begin(self) -> None:
        """With the lock held, before a request uses the connection. A refusal already seen
        on this socket is no answer to this call (ZeroMQ does not retry a refused handshake,
        so the socket would stay refused even after the broker allowed the key): the socket
        is replaced first, and the call gets a handshake of its own."""
        self._usable()
        if self._reader is None:
            self._drain_monitor()
            if self._denied is not None:
                self._refused()

    def _touch(self) -> None:
        """An operation begins: an idle client measures silence from now."""
        if not (self._expected or self._pending):
            self._quiet_from = time.monotonic()

    def _pump(self, done: Callable[[], bool], deadline: Optional[float]) -> bool:
        """With the lock held: reads (as the reader) or sleeps (while another thread reads)
        until done() or the deadline (monotonic; None = never). Returns done()."""
        while True:
            if self._closed:
                raise Error("the client is closed")
            if done():
                return True
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return False
            wait_s = self.heartbeat / 2
            if deadline is not None:
                wait_s = min(wait_s, deadline - now)
            if self._reader is None:
                self._read(max(wait_s, 0.001), done)
            else:
                self._sleep(wait_s)

    def _request(self, cmd: int, fields: Fields, payload: Any = None,
                 submit: bool = False) -> _Msg:
        """With the lock held: one request and its reply (checked)."""
        self._begin()
        self._touch()
        tag = self._next_tag()
        fields[F_TAG] = tag
        self._expected[tag] = (cmd, None)
        epoch = self._epoch
        start = time.monotonic()
        try:
            self._send_now(*_frames(cmd, fields, payload), tag)
            # no connection for a heartbeat: Unreachable now, not after request_timeout
            if not self._pump(lambda: tag in self._replies
                              or self._unreachable(start, self.heartbeat),
                              start + self.request_timeout) or tag not in self._replies:
                down = self._unreachable(start, self.heartbeat)
                self._give_up(epoch)
                if down:
                    raise self._down_error(start, self.heartbeat)
                raise Unreachable("no answer from the broker at %s within %.1fs"
                                  % (self.endpoint, self.request_timeout))
            m = self._replies.pop(tag)
            if isinstance(m, Exception):
                raise m
            return self._reply_check(m, submit)
        finally:
            self._expected.pop(tag, None)
            self._replies.pop(tag, None)

    def _give_up(self, epoch: int) -> None:
        """A request timed out: drop the socket, so that a request still queued in it is
        not delivered later (a submit the caller was told failed must not run). Only the
        socket's owner may do it: the reader, when another thread reads."""
        while epoch == self._epoch and not self._closed:
            if self._reader is None:
                self._reconnect()
                return
            self._want_reconnect = epoch
            self._wake()
            self._sleep(0.1)

    # ---- waiting
    def _add_pending(self, job_id: int) -> None:
        n = self._pending.get(job_id, 0)
        self._pending[job_id] = n + 1
        if n == 0:
            r = self._claim(job_id)
            if r is not None:
                self._ready[job_id] = r
            else:
                try:
                    self._start_wait(job_id)
                except BaseException:
                    self._remove_pending(job_id)
                    raise

    def _remove_pending(self, job_id: int) -> None:
        n = self._pending.get(job_id, 0) - 1
        if n > 0:
            self._pending[job_id] = n
            return
        self._pending.pop(job_id, None)
        self._lazy.pop(job_id, None)
        self._errors.pop(job_id, None)
        r = self._ready.pop(job_id, None)
        if job_id in self._taken:
            self._taken.discard(job_id)
        elif r is not None:  # nobody took it (timeout, closed generator): keep it
            self._delivered.discard(job_id)
            self._keep(r)

    def _take_ready(self, job_id: int) -> Optional[Result]:
        """The result or error for a pending job_id, or None. It stays for the other threads
        waiting for the same job until the last of them leaves (_remove_pending)."""
        if job_id in self._errors:
            raise self._errors[job_id]
        r = self._ready.get(job_id)
        if r is not None:
            self._taken.add(job_id)
        return r

    # ---- API
    def submit(self, function: str, data: Data, *,
               priority: int = 0, run_timeout_ms: int = 0, deadline_ms: int = 0,
               max_attempts: int = 0, device: Union[str, int] = "any", no_push: bool = False,
               forget: bool = False, retries: int = 0, retry_backoff_ms: int = 0,
               delay_ms: int = 0, not_before: float = 0,
               tags: Optional[Dict[str, str]] = None,
               then: Optional[Sequence[str]] = None) -> int:
        """Submits a job and returns its id once the broker has accepted it. Raises
        QueueFull, PayloadTooLarge or Rejected (refused), Unreachable (no answer).
        forget=True: the broker drops the result once it has pushed it to this client, so
        collect it here (wait, results); a later get or wait that has to ask the broker
        raises UnknownJob. Not with no_push=True (Rejected).
        retries: handler failures retried after a backoff (retry_backoff_ms, doubling,
        capped, jittered) unless the handler raises zfleet.Permanent; delay_ms / not_before
        (wall-clock ms since the epoch): the job is `scheduled` until then.
        tags: up to 8 str key/value
        pairs (each side 1-63 bytes, 255 bytes in all), kept with the job and returned in
        its Result and Status (.tags); malformed: ValueError. then: a pipeline's further
        steps, e.g. ["infer@gpu", "encode@cpu"]: each runs on the previous step's output,
        under this one id (Result/Status .step and .steps)."""
        f = _submit_fields(function, priority, run_timeout_ms, deadline_ms, max_attempts,
                           device, no_push, forget, retries, retry_backoff_ms, delay_ms,
                           not_before, tags, then)
        data = _as_bytes(data)
        with self._acquire():
            if len(data) > _LIMIT_CHECK_ABOVE:  # asked each time: a broker may restart
                err = self._too_large(self._request(PING, {}), len(data))
                if err:
                    raise err
            epoch = self._epoch
            m = self._request(SUBMIT, f, data, submit=True)
            job_id: int = m.f[F_ID]
            self._note_pushed(m, no_push, epoch)
            return job_id

    def _note_pushed(self, m: _Msg, no_push: bool, epoch: int) -> None:
        """An accepted job whose result will be pushed here (unless it already was: another
        thread may have read it before this one woke up)."""
        job_id = m.f[F_ID]
        if (m.cmd == ACCEPTED and not no_push and epoch == self._epoch
                and job_id not in self._unclaimed and job_id not in self._delivered):
            self._pushed.add(job_id)

    def wait(self, job_id: int, timeout: Optional[float] = None, *,
             forever: bool = False) -> Result:
        """Waits up to `timeout` seconds (None = no limit) for the job's Result. Raises
        Timeout, UnknownJob, Unreachable: when a WAIT cannot be sent, and when no connection
        to the broker has been up for unreachable_after seconds (10 heartbeats, at least
        5 s, by default) while waiting, unless forever=True (then the wait goes on through
        any outage, until the result or the timeout). A broker restart shorter than that
        does not disturb the wait: WAIT is sent again. Several threads may wait for the
        same job: each gets its Result."""
        with self._acquire():
            self._poll_nowait()
            self._touch()
            self._add_pending(job_id)
            try:
                start = time.monotonic()
                deadline = None if timeout is None else start + timeout
                limit = None if forever else self.unreachable_after
                done = lambda: (job_id in self._ready or job_id in self._errors  # noqa: E731
                                or self._down(start, limit))
                if not self._pump(done, deadline):
                    raise Timeout("job %d: no result within %.1fs" % (job_id, timeout or 0.0),
                                  [job_id])
                r = self._take_ready(job_id) if job_id in self._ready or \
                    job_id in self._errors else None
                if r is None:
                    raise self._down_error(start, limit)
                return r
            finally:
                self._remove_pending(job_id)

    def get(self, job_id: int) -> Union[Result, Status]:
        """The job's Result if it has finished, else its Status. Raises UnknownJob."""
        with self._acquire():
            m = self._request(GET, {F_ID: job_id})
            if m.cmd == RESULT:
                if job_id not in self._pending:
                    self._unkeep(job_id)
                self._delivered.add(job_id)
                return _result_of(m)
            if m.cmd == STATUS:
                return _status_of(m)
            raise Error("unexpected reply 0x%02x to GET" % m.cmd)

    def run(self, function: str, data: Data,
            timeout: Optional[float] = None, **opts: Any) -> Result:
        """submit() then wait(): the job's Result (check .ok)."""
        return self.wait(self.submit(function, data, **opts), timeout)

    def cancel(self, job_id: int) -> None:
        """Cancels a queued or running job (its result will say cancelled). Raises
        UnknownJob, or InvalidState when the job has already finished."""
        with self._acquire():
            self._request(CANCEL, {F_ID: job_id})

    def retry(self, job_id: int) -> None:
        """Requeues a job from the dead-letter list; its result will come to this client."""
        with self._acquire():
            self._request(RETRY, {F_ID: job_id})

    def stats(self) -> Any:
        """The broker's statistics: a dict with "broker", "finished", "functions", "workers"."""
        with self._acquire():
            m = self._request(STATS, {})
        return _unpack(m.payload) if m.payload else {}

    def jobs(self, state: Optional[str] = None, function: Optional[str] = None,
             tag: Optional[str] = None, limit: int = 100, after: int = 0) -> Any:
        """One page of the job listing, in id order: a dict {"jobs": [{"id", "state",
        "function", "attempts", "tags"}...], "next": cursor, "scanned": n}. Pass "next" as
        `after` for the following page until it is 0; a page may hold fewer than `limit`
        jobs (the broker looks at no more than 10,000 per call). tag: one "k=v". While jobs
        run the broker paces listing (PROTOCOL.md §6.11): threads listing at once take turns,
        one page in flight per client."""
        f = _jobs_fields(state, function, tag, limit, after)
        self._acquire()  # (a forked child's locks are new ones)
        with self._jobs_lock, self._acquire():
            m = self._request(JOBS, f)
        return _unpack(m.payload) if m.payload else {}

    def dead(self, purge: bool = False) -> Any:
        """The dead-letter list: a list of dicts (id, function, state, attempts, causes).
        With purge=True the list is cleared instead and the number purged is returned."""
        with self._acquire():
            m = self._request(DEAD, {F_FLAGS: FLAG_PURGE} if purge else {})
        return self._dead_reply(m, purge)

    def progress(self, job_id: int) -> Optional[Tuple[float, str]]:
        """The last progress report seen for a job as (fraction, text), or None."""
        with self._acquire():
            self._poll_nowait()
            return self._progress.get(job_id)

    def submit_many(self, function: str, payloads: Iterable[Any], *, window: int = 256,
                    **opts: Any) -> List[Optional[int]]:
        """Submits one job per payload, keeping up to `window` submits in flight, and returns
        their ids in order. On a rejection no more are sent, the ones in flight are
        collected, and the Rejected error is raised with .ids (None where not accepted)."""
        base = _submit_fields(function, **opts)
        no_push = bool(opts.get("no_push"))
        with self._acquire():
            self._begin()
            return self._submit_many(base, payloads, window, no_push)

    def _submit_many(self, base: Fields, payloads: Iterable[Any], window: int,
                     no_push: bool) -> List[Optional[int]]:
        ids: List[Optional[int]] = []
        inflight: Dict[int, int] = {}   # tag -> index
        answered: Deque[int] = collections.deque()   # tags of inflight requests answered
        error: Optional[Error] = None
        it = iter(payloads)
        epoch = self._epoch
        self._touch()
        try:
            while True:
                while error is None and len(inflight) < window:
                    data = next(it, _END)
                    if data is _END:
                        break
                    tag = self._next_tag()
                    f = dict(base)
                    f[F_TAG] = tag
                    self._expected[tag] = (SUBMIT, answered)
                    inflight[tag] = len(ids)
                    ids.append(None)
                    self._send_now(*_frames(SUBMIT, f, _as_bytes(data)), tag)
                if not inflight:
                    break
                start = time.monotonic()
                if not self._pump(lambda: bool(answered)  # noqa: B023
                                  or self._unreachable(start, self.heartbeat),  # noqa: B023
                                  start + self.request_timeout) or not answered:
                    down = self._unreachable(start, self.heartbeat)
                    self._give_up(epoch)
                    e = (self._down_error(start, self.heartbeat) if down else
                         Unreachable("no answer from the broker at %s within %.1fs"
                                     % (self.endpoint, self.request_timeout)))
                    e.ids = ids
                    raise e
                while answered:
                    tag = answered.popleft()
                    if tag not in inflight:
                        continue
                    m = self._replies.pop(tag)
                    i = inflight.pop(tag)
                    self._expected.pop(tag, None)
                    if isinstance(m, Exception):   # the socket was replaced under it
                        m.ids = ids
                        raise m
                    if m.cmd in (ACCEPTED, RESULT):
                        ids[i] = m.f[F_ID]
                        self._note_pushed(m, no_push, epoch)
                    elif error is None:
                        try:
                            self._reply_check(m, submit=True)
                            error = Rejected(0, "unexpected reply 0x%02x to SUBMIT" % m.cmd)
                        except (Rejected, Denied) as e:
                            error = e
        finally:
            for tag in inflight:
                self._expected.pop(tag, None)
                self._replies.pop(tag, None)
        if error is not None:
            error.ids = ids
            raise error
        return ids

    def results(self, ids: Iterable[int], timeout: Optional[float] = None, *,
                forever: bool = False) -> Iterator[Result]:
        """Yields the Result of each job id as it arrives (each once, in finishing order).
        `timeout` bounds the whole iteration: Timeout (with .pending) when it runs out.
        Unreachable and forever as for wait(). The client's lock is not held while the
        caller has a result in hand."""
        ids = list(dict.fromkeys(ids))
        start = time.monotonic()
        limit = None if forever else self.unreachable_after
        remaining = set(ids)
        q: Deque[int] = collections.deque()
        added: Set[int] = set()   # ids this generator registered as pending (undone at the end)
        forks = None    # the fork generation they were registered in
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while remaining:
                with self._acquire():
                    if forks != self._forks:   # first time, or resumed in a forked child
                        forks = self._forks
                        q.clear()
                        added.clear()
                        self._listeners.append(q)
                        self._poll_nowait()
                        for job_id in ids:
                            if job_id in remaining:
                                self._add_pending(job_id)
                                added.add(job_id)
                                if job_id in self._ready:
                                    q.append(job_id)
                    r = self._next_result(q, remaining, deadline, timeout, ids, start, limit)
                yield r
        finally:
            if forks is not None:
                with self._acquire():
                    if forks == self._forks:
                        # by identity: deques compare by content (two empty ones are equal)
                        self._listeners = [x for x in self._listeners if x is not q]
                        for job_id in ids:
                            if job_id in remaining and job_id in added:
                                self._remove_pending(job_id)

    def watch(self, job_id: int, timeout: Optional[float] = None, *,
              forever: bool = False) -> Iterator[Union[Progress, Result]]:
        """Yields the job's Progress reports as they arrive, then its Result (as wait()
        returns it), then stops. For any job id, submitted by any process or connection: it
        sends WAIT, and the broker pushes progress and the result to every connection waiting
        on the job; after a reconnect (a broker restart) WAIT is sent again, as for wait().
        A watch that begins while the job runs first yields its progress so far (when the
        job has reported any). At most WATCH_KEEP (64) reports wait for the caller: when it
        is slower than the job, the oldest are dropped. `timeout` (seconds, None = no limit)
        bounds the whole watch: Timeout when it runs out. Raises UnknownJob, and Unreachable
        unless forever=True, as wait() does. Any number of threads may watch the same or
        different jobs at once; the client's lock is not held while the caller has an item
        in hand."""
        q: Deque[Progress] = collections.deque(maxlen=WATCH_KEEP)
        forks = None    # the fork generation the watch is registered in (None: not)
        start = time.monotonic()
        deadline = None if timeout is None else start + timeout
        limit = None if forever else self.unreachable_after
        try:
            while True:
                with self._acquire():
                    if forks != self._forks:   # first time, or resumed in a forked child
                        forks = self._forks
                        q.clear()
                        self._poll_nowait()
                        self._touch()
                        self._watchers.setdefault(job_id, []).append(q)
                        try:
                            self._add_pending(job_id)
                        except BaseException:
                            self._unwatch(job_id, q)
                            forks = None
                            raise
                    done = lambda: (bool(q) or job_id in self._ready  # noqa: E731
                                    or job_id in self._errors or self._down(start, limit))
                    if not self._pump(done, deadline):
                        raise Timeout("job %d: no result within %.1fs" % (job_id, timeout or 0.0),
                                      [job_id])
                    if not q and job_id not in self._ready and job_id not in self._errors:
                        raise self._down_error(start, limit)
                    item: Union[Progress, Result, None]
                    if q:
                        item = q.popleft()
                    else:
                        item = self._take_ready(job_id)   # (raises the wait's error)
                        if item is None:   # (cannot be: the result is ready)
                            raise Error("job %d: no result" % job_id)
                        self._unwatch(job_id, q)
                        self._remove_pending(job_id)
                        forks = None
                yield item
                if forks is None:
                    return
        finally:
            if forks is not None:
                with self._acquire():
                    if forks == self._forks:
                        self._unwatch(job_id, q)
                        self._remove_pending(job_id)

    def _unwatch(self, job_id: int, q: Deque[Progress]) -> None:
        qs = [x for x in self._watchers.get(job_id, ()) if x is not q]   # by identity
        if qs:
            self._watchers[job_id] = qs
        else:
            self._watchers.pop(job_id, None)

    def _down(self, start: float, limit: Optional[float]) -> bool:
        return limit is not None and self._unreachable(start, limit)

    def _next_result(self, q: Deque[int], remaining: Set[int], deadline: Optional[float],
                     timeout: Optional[float], ids: List[int], start: float,
                     limit: Optional[float]) -> Result:
        while True:
            while q:
                job_id = q.popleft()
                if job_id not in remaining:
                    continue
                r = self._take_ready(job_id)
                if r is None:
                    continue
                remaining.discard(job_id)
                self._remove_pending(job_id)
                return r
            if not self._pump(lambda: bool(q) or self._down(start, limit), deadline):
                raise Timeout("%d job(s) without a result within %.1fs"
                              % (len(remaining), timeout or 0.0),
                              [i for i in ids if i in remaining])
            if not q:
                raise self._down_error(start, limit)


_END: Any = object()


# ------------------------------------------------------------------ asyncio client

class AsyncClient(_Base):
    """The asyncio client: the API of Client, as coroutines. Share one client between all
    the tasks of an event loop; create it anywhere, use it inside the loop.

        client = zfleet.AsyncClient()
        result = await client.run("echo", b"hi", timeout=30)
        async for r in client.results(await client.submit_many("echo", payloads)): ...
        await client.close()

    key and broker_key (CURVE) as for Client.
    """

    def __init__(self, endpoint: Optional[str] = None, request_timeout: float = 5.0,
                 heartbeat: float = 1.0, *, on_progress: Optional[ProgressCallback] = None,
                 context: Optional[zmq.Context[Any]] = None, max_buffered: int = 1000,
                 max_buffered_bytes: int = 16 << 20, key: Optional[KeyFile] = None,
                 broker_key: Optional[KeyFile] = None,
                 unreachable_after: Optional[float] = None) -> None:
        super().__init__(endpoint, request_timeout, heartbeat, on_progress, max_buffered,
                         max_buffered_bytes, key, broker_key, unreachable_after)
        self._ctx: Any = context
        self._sock: Any = None         # zmq.asyncio.Socket, the DEALER
        self._mon: Any = None          # its monitor's PAIR socket
        self._reader: Optional[asyncio.Task[None]] = None   # the reader task
        self._loop: Any = None         # the event loop it belongs to
        # tag -> (request command, Future(_Msg))
        self._reply_futs: Dict[int, Tuple[int, asyncio.Future[_Msg]]] = {}
        self._waiters: Dict[int, List[asyncio.Future[Result]]] = {}   # job id -> futures
        self._jobs_lock: Optional[asyncio.Lock] = None  # one JOBS page in flight (Client's)

    # ---- socket and reader
    def _ensure(self) -> None:
        if self._pid != os.getpid():
            self._forked()
        if self._closed:
            raise Error("the client is closed")
        if self._sock is not None:
            if asyncio.get_running_loop() is not self._loop:
                raise Error("this AsyncClient belongs to another event loop: "
                            "create one client per loop")
            return
        self._loop = asyncio.get_running_loop()
        if self._ctx is None:
            self._ctx = zmq.asyncio.Context.shadow(zmq.Context.instance().underlying)
        self._open()
        self._reader = self._loop.create_task(self._read_loop())

    def _open(self) -> None:
        self._sock, self._mon = self._new_socket(self._ctx)

    def _forked(self) -> None:
        """In a forked child: the parent's socket, context, reader task and futures are
        abandoned untouched (its event loop does not run here); the next call, in the
        child's loop, opens a new connection on the child's context."""
        if self._pid == os.getpid():
            return
        _ABANDONED.append((self._ctx, self._sock, self._mon, self._reader,
                           self._reply_futs, self._waiters))
        self._fork_reset()
        self._ctx = None
        self._sock = self._mon = None
        self._reader = self._loop = None
        self._reply_futs = {}
        self._waiters = {}

    def _refused(self) -> None:
        """The broker refuses this socket's handshakes: every request and wait in flight fails
        with Denied now, and the socket is replaced (as Client._refused)."""
        for _, fut in list(self._reply_futs.values()):
            if not fut.done():
                fut.set_exception(self._denial())
        for job_id in list(self._waiters):
            self._wait_failed(job_id, self._denial())
        self._reconnect()

    def _begin(self) -> None:
        """Before a request or a wait: a refusal already seen on this socket (and not undone
        by a handshake since) is no answer to this call (ZeroMQ does not retry a refused
        handshake): the socket is replaced, and the call gets a handshake of its own. The
        monitor is read here first: the reader task has not run while the loop was stopped."""
        while True:
            f = self._mon.recv_multipart(zmq.NOBLOCK)   # done at once (pyzmq short-circuits)
            if not f.done():
                f.cancel()
                break
            try:
                frames = f.result()
            except zmq.Again:
                break
            self._on_monitor(frames)
        if self._denied is not None:
            self._refused()

    def _reconnect(self) -> None:
        # Closing cancels the reader's poll on the old socket; it then polls the new one.
        self._close_socket(self._sock, self._mon)
        self._open()
        self._after_reconnect()

    async def _read_loop(self) -> None:
        while not self._closed:
            sock, mon = self._sock, self._mon
            poller = zmq.asyncio.Poller()
            poller.register(sock, zmq.POLLIN)
            poller.register(mon, zmq.POLLIN)
            while sock is self._sock and not self._closed:
                busy = bool(self._reply_futs or self._waiters)
                try:
                    events = dict(await poller.poll(max(1, int(self.heartbeat * 500))))
                except asyncio.CancelledError:
                    # close() cancelled us, or another task closed the socket (a reconnect)
                    # and with it the poll
                    if self._closed:
                        return
                    if sock is not self._sock:
                        break
                    raise
                except zmq.ZMQError:
                    # the poll ended on a socket another task closed (ENOTSOCK)
                    if self._closed:
                        return
                    if sock is not self._sock:
                        break
                    raise
                if sock is not self._sock or self._closed:
                    break   # replaced (or closed) by another task while the poll returned
                if mon in events:
                    while True:
                        try:
                            self._on_monitor(await mon.recv_multipart(zmq.NOBLOCK))
                        except zmq.Again:
                            break
                    if self._denied is not None and (self._reply_futs or self._waiters):
                        self._refused()   # a new socket: the loop polls that one
                        continue
                if sock is self._sock and sock in events:
                    for _ in range(10000):
                        try:
                            frames = await sock.recv_multipart(zmq.NOBLOCK, copy=False)
                        except zmq.Again:
                            break
                        self._dispatch(frames)
                if sock is self._sock:
                    try:
                        self._housekeeping(busy and bool(self._reply_futs or self._waiters),
                                           bool(self._waiters))
                    except Exception:  # noqa: BLE001 - the reader must live on
                        log.exception("zfleet: heartbeat failed")

    def _touch(self) -> None:
        """An operation begins: an idle client measures silence from now."""
        if not (self._reply_futs or self._waiters):
            self._quiet_from = time.monotonic()

    async def close(self) -> None:
        """Closes the connection; operations still waiting get Error."""
        if self._pid != os.getpid():
            self._forked()
        if self._closed:
            return
        self._closed = True
        if self._reader is not None:
            self._reader.cancel()
            try:
                await self._reader
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
        exc = Error("the client is closed")
        for _, fut in self._reply_futs.values():
            if not fut.done():
                fut.set_exception(exc)
        for futs in self._waiters.values():
            for wfut in futs:
                if not wfut.done():
                    wfut.set_exception(exc)
        self._reply_futs.clear()
        self._waiters.clear()
        self._close_socket(self._sock, self._mon)
        self._sock = self._mon = None

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ---- hooks
    def _waiting_ids(self) -> Collection[int]:
        return self._waiters.keys()

    def _on_reply(self, tag: int, m: _Msg) -> bool:
        entry = self._reply_futs.get(tag)
        if entry is None or not _answers(entry[0], m):
            return False
        del self._reply_futs[tag]
        if not entry[1].done():
            entry[1].set_result(m)
        return True

    def _result_ready(self, r: Result) -> bool:
        futs = self._waiters.pop(r.id, None)
        taken = False
        for fut in futs or ():
            if not fut.done():
                fut.set_result(r)
                taken = True
        return taken

    def _progress_event(self, p: Progress) -> None:
        for q, ev in self._watchers.get(p.id, ()):
            q.append(p)   # a deque(maxlen=WATCH_KEEP): the oldest report goes first
            ev.set()

    def _wait_failed(self, job_id: int, exc: Error) -> None:
        for fut in self._waiters.pop(job_id, None) or ():
            if not fut.done():
                fut.set_exception(exc)
        self._lazy.pop(job_id, None)

    def _send_now(self, frames: Frames, copy: bool, tag: Optional[int] = None) -> Any:
        if self._closed:
            raise Error("the client is closed")
        fut = self._sock.send_multipart(frames, copy=copy)
        if fut.done():
            fut.result()
        else:
            fut.add_done_callback(_log_send_error)
        return fut

    async def _await(self, aw: Awaitable[_T], deadline: Optional[float], limit: Optional[float],
                     start: float) -> _T:
        """aw's result. Raises asyncio.TimeoutError at `deadline` (monotonic, None: none) and
        _Down when no connection to the broker has been up for `limit` seconds (None: no
        such limit) since `start`. A task it made for a coroutine is cancelled if unfinished;
        a future given is left as it is."""
        fut = asyncio.ensure_future(aw)
        try:
            while True:
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    raise asyncio.TimeoutError
                if limit is not None and self._unreachable(start, limit):
                    raise _Down
                step = self.heartbeat / 4
                if deadline is not None:
                    step = min(step, deadline - now)
                done, _ = await asyncio.wait((fut,), timeout=max(step, 0.001))
                if done:
                    return fut.result()
        finally:
            if fut is not aw and not fut.done():
                fut.cancel()

    # ---- requests
    async def _request(self, cmd: int, fields: Fields, payload: Any = None,
                       submit: bool = False) -> _Msg:
        self._ensure()
        self._begin()
        tag = self._next_tag()
        fields[F_TAG] = tag
        fut = self._loop.create_future()
        self._touch()
        self._reply_futs[tag] = (cmd, fut)
        epoch = self._epoch
        start = time.monotonic()
        try:
            send = self._send_now(*_frames(cmd, fields, payload))
            # no connection for a heartbeat: Unreachable now, not after request_timeout
            m = await self._await(_both(send, fut), start + self.request_timeout,
                                  self.heartbeat, start)
        except (asyncio.TimeoutError, _Down) as e:
            if epoch == self._epoch and not self._closed:
                self._reconnect()  # drop what is still queued: a failed submit must not run
            if isinstance(e, _Down):
                raise self._down_error(start, self.heartbeat) from None
            raise Unreachable("no answer from the broker at %s within %.1fs"
                              % (self.endpoint, self.request_timeout)) from None
        finally:
            self._reply_futs.pop(tag, None)
        return self._reply_check(m, submit)

    def _add_waiter(self, job_id: int) -> asyncio.Future[Result]:
        """A future for job_id's result (already done if the result is buffered)."""
        fut: asyncio.Future[Result] = self._loop.create_future()
        r = self._claim(job_id)
        if r is not None:
            fut.set_result(r)
            return fut
        self._begin()
        self._touch()
        futs = self._waiters.setdefault(job_id, [])
        futs.append(fut)
        if len(futs) == 1:
            try:
                self._start_wait(job_id)
            except BaseException:
                self._drop_waiter(job_id, fut)
                raise
        return fut

    def _drop_waiter(self, job_id: int, fut: asyncio.Future[Result]) -> None:
        futs = self._waiters.get(job_id)
        if futs is None:
            return
        if fut in futs:
            futs.remove(fut)
        if not futs:
            del self._waiters[job_id]
            self._lazy.pop(job_id, None)

    # ---- API
    async def submit(self, function: str, data: Data, *,
                     priority: int = 0, run_timeout_ms: int = 0, deadline_ms: int = 0,
                     max_attempts: int = 0, device: Union[str, int] = "any",
                     no_push: bool = False, forget: bool = False, retries: int = 0,
                     retry_backoff_ms: int = 0, delay_ms: int = 0,
                     not_before: float = 0,
                     tags: Optional[Dict[str, str]] = None,
                     then: Optional[Sequence[str]] = None) -> int:
        """As Client.submit."""
        f = _submit_fields(function, priority, run_timeout_ms, deadline_ms, max_attempts,
                           device, no_push, forget, retries, retry_backoff_ms, delay_ms,
                           not_before, tags, then)
        data = _as_bytes(data)
        if len(data) > _LIMIT_CHECK_ABOVE:
            err = self._too_large(await self._request(PING, {}), len(data))
            if err:
                raise err
        epoch = self._epoch
        m = await self._request(SUBMIT, f, data, submit=True)
        job_id: int = m.f[F_ID]
        if m.cmd == ACCEPTED and not no_push and epoch == self._epoch:
            self._pushed.add(job_id)
        return job_id

    async def wait(self, job_id: int, timeout: Optional[float] = None, *,
                   forever: bool = False) -> Result:
        """As Client.wait. Many tasks may wait at once, for the same job or others."""
        self._ensure()
        fut = self._add_waiter(job_id)
        start = time.monotonic()
        try:
            return await self._await(fut, None if timeout is None else start + timeout,
                                     None if forever else self.unreachable_after, start)
        except asyncio.TimeoutError:
            raise Timeout("job %d: no result within %.1fs" % (job_id, timeout or 0.0),
                          [job_id]) from None
        except _Down:
            raise self._down_error(start, self.unreachable_after) from None
        finally:
            self._drop_waiter(job_id, fut)

    async def get(self, job_id: int) -> Union[Result, Status]:
        """As Client.get."""
        m = await self._request(GET, {F_ID: job_id})
        if m.cmd == RESULT:
            if job_id not in self._waiters:
                self._unkeep(job_id)
            self._delivered.add(job_id)
            return _result_of(m)
        if m.cmd == STATUS:
            return _status_of(m)
        raise Error("unexpected reply 0x%02x to GET" % m.cmd)

    async def run(self, function: str, data: Data,
                  timeout: Optional[float] = None, **opts: Any) -> Result:
        """As Client.run."""
        return await self.wait(await self.submit(function, data, **opts), timeout)

    async def cancel(self, job_id: int) -> None:
        """As Client.cancel."""
        await self._request(CANCEL, {F_ID: job_id})

    async def retry(self, job_id: int) -> None:
        """As Client.retry."""
        await self._request(RETRY, {F_ID: job_id})

    async def stats(self) -> Any:
        """As Client.stats."""
        m = await self._request(STATS, {})
        return _unpack(m.payload) if m.payload else {}

    async def jobs(self, state: Optional[str] = None, function: Optional[str] = None,
                   tag: Optional[str] = None, limit: int = 100, after: int = 0) -> Any:
        """As Client.jobs; tasks listing at once take turns, one page in flight."""
        f = _jobs_fields(state, function, tag, limit, after)
        if self._jobs_lock is None:
            self._jobs_lock = asyncio.Lock()
        async with self._jobs_lock:
            m = await self._request(JOBS, f)
        return _unpack(m.payload) if m.payload else {}

    async def dead(self, purge: bool = False) -> Any:
        """As Client.dead."""
        m = await self._request(DEAD, {F_FLAGS: FLAG_PURGE} if purge else {})
        return self._dead_reply(m, purge)

    async def progress(self, job_id: int) -> Optional[Tuple[float, str]]:
        """As Client.progress (the reader task keeps it current)."""
        self._ensure()
        return self._progress.get(job_id)

    async def submit_many(self, function: str, payloads: Iterable[Any], *, window: int = 256,
                          **opts: Any) -> List[Optional[int]]:
        """As Client.submit_many."""
        base = _submit_fields(function, **opts)
        no_push = bool(opts.get("no_push"))
        self._ensure()
        self._begin()
        ids: List[Optional[int]] = []
        failed: List[Error] = []
        slots = asyncio.Semaphore(window)
        inflight: Dict[int, asyncio.Future[_Msg]] = {}   # tag -> future
        epoch = self._epoch

        def answered(i: int, tag: int, fut: asyncio.Future[_Msg]) -> None:
            slots.release()
            inflight.pop(tag, None)
            self._reply_futs.pop(tag, None)
            if fut.cancelled():
                return
            try:
                m = self._reply_check(fut.result(), submit=True)
            except Error as e:
                failed.append(e)
                return
            job_id: int = m.f[F_ID]
            ids[i] = job_id   # ACCEPTED, or the job's RESULT in its place
            if m.cmd == ACCEPTED and not no_push and epoch == self._epoch:
                self._pushed.add(job_id)

        async def take_slot() -> None:
            start = time.monotonic()
            try:
                await self._await(slots.acquire(), start + self.request_timeout,
                                  self.heartbeat, start)
            except (asyncio.TimeoutError, _Down) as down:
                for tag, fut in list(inflight.items()):
                    self._reply_futs.pop(tag, None)
                    fut.cancel()
                if epoch == self._epoch and not self._closed:
                    self._reconnect()  # drop what is still queued
                e = (self._down_error(start, self.heartbeat) if isinstance(down, _Down) else
                     Unreachable("no answer from the broker at %s within %.1fs"
                                 % (self.endpoint, self.request_timeout)))
                e.ids = ids
                raise e from None

        for data in payloads:
            await take_slot()
            if failed:
                slots.release()
                break
            tag = self._next_tag()
            f = dict(base)
            f[F_TAG] = tag
            fut = self._loop.create_future()
            self._touch()
            self._reply_futs[tag] = (SUBMIT, fut)
            inflight[tag] = fut
            ids.append(None)
            fut.add_done_callback(lambda fut, i=len(ids) - 1, tag=tag: answered(i, tag, fut))
            self._send_now(*_frames(SUBMIT, f, _as_bytes(data)))
        for _ in range(window):   # every answer is in when all the slots are free
            await take_slot()
        if failed:
            e = next((x for x in failed if isinstance(x, Rejected)), failed[0])
            e.ids = ids
            raise e
        return ids

    async def results(self, ids: Iterable[int], timeout: Optional[float] = None, *,
                      forever: bool = False) -> AsyncIterator[Result]:
        """As Client.results, as an async generator: `async for r in client.results(ids)`."""
        self._ensure()
        start = time.monotonic()
        limit = None if forever else self.unreachable_after
        ids = list(dict.fromkeys(ids))
        done_q: asyncio.Queue[asyncio.Future[Result]] = asyncio.Queue()
        futs: Dict[int, asyncio.Future[Result]] = {}
        yielded: Set[int] = set()
        try:
            for job_id in ids:
                fut = self._add_waiter(job_id)
                futs[job_id] = fut
                fut.add_done_callback(done_q.put_nowait)
            by_fut = {f: i for i, f in futs.items()}
            deadline = None if timeout is None else start + timeout
            while len(yielded) < len(ids):
                try:
                    fut = await self._await(done_q.get(), deadline, limit, start)
                except asyncio.TimeoutError:
                    pending = [i for i in ids if i not in yielded]
                    raise Timeout("%d job(s) without a result within %.1fs"
                                  % (len(pending), timeout or 0.0), pending) from None
                except _Down:
                    raise self._down_error(start, limit) from None
                job_id = by_fut[fut]
                r = fut.result()   # raises UnknownJob & co
                yielded.add(job_id)
                yield r
        finally:
            for job_id, fut in futs.items():
                self._drop_waiter(job_id, fut)
                if not fut.done():
                    fut.cancel()
                elif (job_id not in yielded and not fut.cancelled()
                      and fut.exception() is None):
                    # arrived but not handed out (the caller stopped early): keep it
                    self._delivered.discard(job_id)
                    self._keep(fut.result())


    async def watch(self, job_id: int, timeout: Optional[float] = None, *,
                    forever: bool = False) -> AsyncIterator[Union[Progress, Result]]:
        """As Client.watch, as an async generator: `async for item in client.watch(id)`
        yields Progress reports, then the Result. Many tasks may watch at once."""
        self._ensure()
        q: Deque[Progress] = collections.deque(maxlen=WATCH_KEEP)
        ev = asyncio.Event()
        entry = (q, ev)
        self._watchers.setdefault(job_id, []).append(entry)
        fut = None
        taken = False
        start = time.monotonic()
        deadline = None if timeout is None else start + timeout
        limit = None if forever else self.unreachable_after
        try:
            fut = self._add_waiter(job_id)
            fut.add_done_callback(lambda _f: ev.set())
            while True:
                while q:
                    yield q.popleft()
                if fut.done():
                    r = fut.result()   # raises UnknownJob & co
                    taken = True
                    yield r
                    return
                ev.clear()
                try:
                    await self._await(ev.wait(), deadline, limit, start)
                except asyncio.TimeoutError:
                    raise Timeout("job %d: no result within %.1fs" % (job_id, timeout or 0.0),
                                  [job_id]) from None
                except _Down:
                    raise self._down_error(start, limit) from None
        finally:
            qs = [x for x in self._watchers.get(job_id, ()) if x is not entry]
            if qs:
                self._watchers[job_id] = qs
            else:
                self._watchers.pop(job_id, None)
            if fut is not None:
                self._drop_waiter(job_id, fut)
                if not fut.done():
                    fut.cancel()
                elif not taken and not fut.cancelled() and fut.exception() is None:
                    # arrived but not handed out (the caller stopped early): keep it
                    self._delivered.discard(job_id)
                    self._keep(fut.result())


class _Down(Exception):
    """AsyncClient._await: no connection to the broker for too long."""


async def _both(send_fut: Any, reply_fut: asyncio.Future[_Msg]) -> _Msg:
    """The reply, once the request is sent. A send that cannot complete (ZeroMQ gave up the
    connection after a refused handshake) does not hide the reply future's Denied."""
    await asyncio.wait((send_fut, reply_fut), return_when=asyncio.FIRST_EXCEPTION)
    if reply_fut.done() or not send_fut.done():
        return await reply_fut
    send_fut.result()   # raises what the send raised
    return await reply_fut


def _log_send_error(fut: Any) -> None:
    if not fut.cancelled() and fut.exception() is not None:
        log.warning("zfleet: send failed: %s", fut.exception())


class Batched:
    """A batched handler for zfleet-worker's Python modules (issue 17, docs/PYTHON.md):
    ``FUNCTIONS = {"segment": zfleet.batched(segment, max_batch=32, max_delay_ms=5)}``.
    ``segment(state, jobs)`` gets a list of jobs and returns one output per job; an
    Exception instance in an output's place fails that job alone, raising fails the batch.
    The worker calls it with max_batch jobs, or once the oldest waited max_delay_ms (a job
    after a quiet spell waits 200 µs at most: a lone job at idle runs at once).
    The worker defines the same marker (``__zfleet_batch__``) when this package is absent."""

    def __init__(self, fn: Any, max_batch: int = 8, max_delay_ms: float = 5) -> None:
        self.__zfleet_batch__ = (fn, max_batch, max_delay_ms)

    def __call__(self, state: Any, job: Any) -> Any:
        return self.__zfleet_batch__[0](state, [job])[0]


def batched(fn: Any, max_batch: int = 8, max_delay_ms: float = 5) -> Batched:
    """Marks fn(state, jobs) as a batched handler (see Batched)."""
    return Batched(fn, max_batch, max_delay_ms)
