"""Data-loader workers that die with the training process (and ranks that die with torchrun).

``kill -9`` of a training process gives it no chance to stop its data-loader workers; they
would live on, holding memory and file handles. On Linux each worker asks the kernel for
``SIGKILL`` when its parent dies (``prctl(PR_SET_PDEATHSIG)``), then runs the worker
initialisation MMEngine chose (its seeding ``worker_init_fn`` or the config's), unchanged.
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys
from typing import Callable

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(parent_pid: int) -> None:
    """Makes this process receive SIGKILL when its parent dies (Linux; elsewhere nothing).

    Args:
        parent_pid: The pid the parent had when it started this process. If the parent died
            before the request was made, the request would never fire: exit right away.

    Raises:
        OSError: If ``prctl`` refuses.
    """
    if not sys.platform.startswith('linux'):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f'prctl(PR_SET_PDEATHSIG) failed: {os.strerror(errno)}')
    if os.getppid() != parent_pid:
        os.kill(os.getpid(), signal.SIGKILL)


class DieWithParentWorkerInit:
    """A ``worker_init_fn`` that calls :func:`die_with_parent`, then ``init_fn``.

    A class rather than a closure, so that it pickles for the ``spawn`` start method.

    Args:
        init_fn: The worker initialisation to keep (MMEngine's seeding partial), or None.
        parent_pid: The pid of the process that creates the workers; this process when None.
    """

    def __init__(self, init_fn: Callable[[int], None] | None,
                 parent_pid: int | None = None) -> None:
        self.init_fn = init_fn
        self.parent_pid = os.getpid() if parent_pid is None else parent_pid

    def __call__(self, worker_id: int) -> None:
        die_with_parent(self.parent_pid)
        if self.init_fn is not None:
            self.init_fn(worker_id)
