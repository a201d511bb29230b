"""Child processes the product starts beside ``xplatform run`` (the read models' embedded
secantusdb, the sample warehouse): tied to the parent's life, stopped by their PID.

A child launched with :data:`DIE_WITH_PARENT` first in its ``python -c`` code asks the kernel
to send it SIGTERM when its parent dies (Linux: ``PR_SET_PDEATHSIG``; elsewhere a no-op), so a
killed run leaves nothing behind; :func:`stop_child` is the orderly end.
"""

from __future__ import annotations

import subprocess

DIE_WITH_PARENT = ("import ctypes, signal\n"
                   "try:\n    ctypes.CDLL(None).prctl(1, signal.SIGTERM)\nexcept Exception:\n    pass\n")
"""Python code that makes the process it runs in end (SIGTERM) when its parent dies."""


def stop_child(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the child we started, wait up to 10 s, then SIGKILL it and wait."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
