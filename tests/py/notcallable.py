"""A module whose FUNCTIONS has an entry that is not callable."""
def ok(state, job):
    return b""
FUNCTIONS = {"ok": ok, "broken": 42}
