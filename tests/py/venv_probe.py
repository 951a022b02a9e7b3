"""Reports where the interpreter runs: sys.prefix, a package only the venv has, and one
from the system's site-packages (the venv was made with --system-site-packages)."""
import sys
def where(state, job):
    import zt_venv_only
    import numpy
    return f"{sys.prefix} {zt_venv_only.MARK} numpy {numpy.__version__}"
FUNCTIONS = {"py_where": where}
