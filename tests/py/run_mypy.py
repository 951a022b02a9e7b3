#!/usr/bin/python3
"""`mypy --strict` on the Python client package (client/python/zfleet): exits with mypy's
status, or 77 (skipped) when mypy is not installed (Debian python3-mypy)."""
import os
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

try:
    import mypy  # noqa: F401
except ImportError:
    print("skipped: mypy is not installed (apt install python3-mypy)")
    sys.exit(77)
pkg = os.path.join(ROOT, "client", "python", "zfleet")
r = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental", pkg],
                   cwd=os.path.join(ROOT, "client", "python"))
sys.exit(r.returncode)
