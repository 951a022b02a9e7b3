"""Checks a zfleet log written with --log-format json (tests/test_logs.c runs it).

usage: logs_check.py LOG [EXPECT ...]

Every line of LOG must be one JSON object (parsed strictly: no NaN, no duplicate keys)
with "time" (UTC, ISO 8601 with milliseconds and Z), "level" (error|warn|info|debug),
"component" and "msg" strings, "event" a snake_case string when present, and the known
fields with their types. Each EXPECT is a JSON object: some line must have every key of
it with that value. Exit 0 when all holds, 1 with one line per failure on stdout.
"""

import json
import re
import sys

TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
EVENT = re.compile(r"^[a-z][a-z0-9_]*$")
STRINGS = ("fn", "worker", "device", "state", "reason", "path", "peer", "key")
NUMBERS = ("job", "attempt", "pid", "count", "bytes")


def no_dupes(pairs):
    keys = [k for k, _ in pairs]
    if len(keys) != len(set(keys)):
        raise ValueError("duplicate key in %s" % keys)
    return dict(pairs)


def bad_constant(name):
    raise ValueError("not JSON: " + name)


def check_line(n, text):
    """The problems of one line (an empty list when it is good), and its object."""
    try:
        obj = json.loads(text, object_pairs_hook=no_dupes, parse_constant=bad_constant)
    except ValueError as e:
        return ["line %d is not JSON (%s): %r" % (n, e, text)], None
    if not isinstance(obj, dict):
        return ["line %d is not an object: %r" % (n, text)], None
    bad = []
    if not isinstance(obj.get("time"), str) or not TIME.match(obj["time"]):
        bad.append("line %d: bad time %r" % (n, obj.get("time")))
    if obj.get("level") not in ("error", "warn", "info", "debug"):
        bad.append("line %d: bad level %r" % (n, obj.get("level")))
    for k in ("component", "msg"):
        if not isinstance(obj.get(k), str):
            bad.append("line %d: no string %s" % (n, k))
    if "event" in obj and not (isinstance(obj["event"], str) and EVENT.match(obj["event"])):
        bad.append("line %d: bad event %r" % (n, obj["event"]))
    for k in STRINGS:
        if k in obj and not isinstance(obj[k], str):
            bad.append("line %d: %s is not a string" % (n, k))
    for k in NUMBERS:
        if k in obj and not (isinstance(obj[k], int) and obj[k] > 0):
            bad.append("line %d: %s is not a positive integer" % (n, k))
    if "truncated" in obj and obj["truncated"] is not True:
        bad.append("line %d: truncated is not true" % n)
    return bad, obj


def main():
    if len(sys.argv) < 2:
        print(__doc__.strip().splitlines()[2])
        return 2
    with open(sys.argv[1], "rb") as f:
        data = f.read()
    problems, objs = [], []
    if data and not data.endswith(b"\n"):
        problems.append("the log does not end with a newline")
    for n, raw in enumerate(data.split(b"\n")[:-1] if data else [], 1):
        if len(raw) + 1 > 4096:
            problems.append("line %d is %d bytes, over 4096" % (n, len(raw) + 1))
        try:
            text = raw.decode("utf-8")  # strict: invalid UTF-8 must never reach the log
        except UnicodeDecodeError as e:
            problems.append("line %d is not UTF-8 (%s)" % (n, e))
            continue
        bad, obj = check_line(n, text)
        problems += bad
        if obj is not None:
            objs.append(obj)
    if not objs:
        problems.append("no lines")
    for spec in sys.argv[2:]:
        want = json.loads(spec)
        if not any(all(o.get(k) == v for k, v in want.items()) for o in objs):
            near = [o for o in objs if o.get("event") == want.get("event")]
            problems.append("no line has %s; lines of that event: %s" % (spec, near[:5]))
    for p in problems:
        print(p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
