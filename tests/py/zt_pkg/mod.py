"""Imported as py:zt_pkg.mod (tests/py on PYTHONPATH)."""
FUNCTIONS = {"py_pkg": lambda state, job: b"from a package " + bytes(job.data)}
