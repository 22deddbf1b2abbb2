"""Processes that die with their parent, however the parent dies.

A SIGKILLed parent runs no cleanup, so its children must be told by the kernel: Linux's
`prctl(PR_SET_PDEATHSIG, sig)` sends `sig` to a process when the thread that started it exits.
`tunesmith serve` starts every child with `die_with_parent` as its `preexec_fn`; a Celery worker's
pool processes call it when they start (worker/celery_worker.py), and so does the corpus loader of
a training job. Elsewhere than Linux it does nothing (those processes then outlive a killed parent).
"""
import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1
# looked up once, here: a preexec_fn runs between fork and exec, where loading a library could
# deadlock on a lock another thread held at the fork
try:
    _prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None
except (OSError, AttributeError):
    _prctl = None


def die_with_parent(sig: int = signal.SIGKILL, parent: int | None = None) -> None:
    """Have the kernel send `sig` to this process when its parent dies; if the parent (pid `parent`,
    default: whoever it is now) is already gone, act on it at once."""
    if _prctl is None:
        return
    expected = os.getppid() if parent is None else parent
    _prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    if os.getppid() != expected:          # the parent died before we asked: too late for the kernel
        os.kill(os.getpid(), sig)


def preexec(sig: int = signal.SIGKILL):
    """A `preexec_fn` for subprocess.Popen: the child gets `sig` when this process dies."""
    parent = os.getpid()
    return lambda: die_with_parent(sig, parent)
