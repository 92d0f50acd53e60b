"""A test-only hook: every rank records its resident memory during training, so a test can
check that a long run does not grow."""
from __future__ import annotations

import ctypes
import gc
import json
import os

from mmdet.registry import HOOKS
from mmengine.dist import get_rank
from mmengine.hooks import Hook


def resident_mib() -> float:
    """This process's resident set size in MiB (Linux ``/proc/self/statm``)."""
    with open('/proc/self/statm') as file:
        pages = int(file.read().split()[1])
    return pages * os.sysconf('SC_PAGE_SIZE') / 2 ** 20


def trimmed_resident_mib() -> float:
    """RSS after glibc returned its free heap pages (``malloc_trim``): memory still in use."""
    ctypes.CDLL('libc.so.6').malloc_trim(0)
    return resident_mib()


@HOOKS.register_module()
class RecordMemoryHook(Hook):
    """Writes ``memory_rank{r}.json``: {iteration: [RSS MiB, RSS after malloc_trim MiB, Python
    objects]} every ``interval`` iterations.

    Args:
        interval: Iterations between two records (the first iteration is always recorded).
    """

    def __init__(self, interval: int = 25) -> None:
        self.interval = interval
        self.records: dict[int, list[float]] = {}

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        step = runner.iter + 1
        if step == 1 or step % self.interval == 0:
            raw = resident_mib()
            self.records[step] = [round(raw, 1), round(trimmed_resident_mib(), 1),
                                  len(gc.get_objects())]

    def after_train(self, runner) -> None:
        path = os.path.join(runner.work_dir, f'memory_rank{get_rank()}.json')
        with open(path, 'w') as file:
            json.dump(self.records, file)
