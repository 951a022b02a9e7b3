"""Batched Python handlers for tests/test_batch.c (issue 17)."""
import time

import zfleet


def pbatch(state, jobs):
    """One output per job, "<batch size>|<input>"; an input "fail..." fails that job alone,
    "boom" fails the whole batch (it raises)."""
    data = [bytes(j.data) for j in jobs]
    if b"boom" in data:
        raise RuntimeError("the batch blew up")
    time.sleep(0.03)
    return [ValueError(f"bad input: {d.decode()}") if d.startswith(b"fail")
            else f"{len(jobs)}|".encode() + d for d in data]


def plen(state, jobs):
    """Returns one output too few: the whole batch fails."""
    return [b"x"] * (len(jobs) - 1)


FUNCTIONS = {
    "pbatch": zfleet.batched(pbatch, max_batch=8, max_delay_ms=50),
    "plen": zfleet.batched(plen, max_batch=4, max_delay_ms=20),
}
