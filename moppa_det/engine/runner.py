"""MMEngine's Runner with the fault tolerance ``tools/train.py`` and ``tools/test.py`` rely on.

* Data-loader workers die with the process (:mod:`moppa_det.engine.worker_init`), composed
  with the worker initialisation MMEngine picked (its seeding), not replacing it.
* ``CheckpointHook`` becomes :class:`AtomicCheckpointHook` (same arguments).
* :class:`RandomStateHook` and :class:`NonFiniteLossHook` are added unless the config lists
  them already (list them to change their arguments, e.g. ``action='skip'``).
* Resume picks the newest *readable* checkpoint and names each one it had to skip; a
  ``load_from`` / ``--resume PATH`` / ``tools/test.py`` checkpoint that is not a readable
  checkpoint is refused with :class:`CheckpointReadError` naming it, before anything loads.
* Loading is strict about what was trained (:mod:`moppa_det.engine.strict_load`): a checkpoint
  that lacks weights of the model (after the backbone filled in its frozen timm weights), or
  holds some in other shapes, is refused with :class:`CheckpointMismatchError` naming them.
  ``load_partial=True`` in the config loads a ``load_from`` checkpoint partially on purpose
  (fine-tuning from another task's heads); never a resumed one.
"""
from __future__ import annotations

import re
from collections import OrderedDict
from typing import Any, Callable

from mmdet.registry import RUNNERS
from mmengine.hooks import CheckpointHook
from mmengine.model import is_model_wrapper
from mmengine.runner import Runner
from mmengine.runner.checkpoint import _load_checkpoint
from torch.utils.data import DataLoader

from .checkpoint_files import check_checkpoint_file, latest_good_checkpoint
from .hooks import AtomicCheckpointHook, NonFiniteLossHook, RandomStateHook
from .safe_checkpoint import load_from_local_safe
from .strict_load import check_load_report, load_state_dict_checked
from .worker_init import DieWithParentWorkerInit

# Hooks every training run gets unless its custom_hooks name them.
ADDED_HOOKS = (RandomStateHook, NonFiniteLossHook)


@RUNNERS.register_module()
class FaultTolerantRunner(Runner):
    """``mmengine.runner.Runner`` plus the behaviour listed in the module docstring."""

    @staticmethod
    def build_dataloader(dataloader: DataLoader | dict, seed: int | None = None,
                         diff_rank_seed: bool = False) -> DataLoader:
        loader = Runner.build_dataloader(dataloader, seed=seed, diff_rank_seed=diff_rank_seed)
        if isinstance(loader, DataLoader) and loader.num_workers > 0 and \
                not isinstance(loader.worker_init_fn, DieWithParentWorkerInit):
            loader.worker_init_fn = DieWithParentWorkerInit(loader.worker_init_fn)
        return loader

    def register_default_hooks(self, hooks: dict | None = None) -> None:
        hooks = dict(hooks or {})
        checkpoint = hooks.get('checkpoint', dict(type='CheckpointHook', interval=1))
        if isinstance(checkpoint, dict) and _names(checkpoint.get('type'), CheckpointHook):
            hooks['checkpoint'] = dict(checkpoint, type=AtomicCheckpointHook)
        super().register_default_hooks(hooks)

    def register_hooks(self, default_hooks: dict | None = None,
                       custom_hooks: list | None = None) -> None:
        custom_hooks = list(custom_hooks or [])
        for added in ADDED_HOOKS:
            if not any(_names(_hook_type(hook), added) for hook in custom_hooks):
                custom_hooks.append(dict(type=added))
        super().register_hooks(default_hooks, custom_hooks)

    def load_or_resume(self) -> None:
        """Checks the checkpoint to load before MMEngine reads it; on auto-resume, picks the
        newest readable one."""
        if self._has_loaded:
            return None
        if self._resume and self._load_from is None:
            latest = latest_good_checkpoint(self.work_dir, self.logger.warning,
                                            load_from_local_safe)
            if latest is not None:
                self.logger.info(f'Auto resumed from the latest checkpoint {latest}.')
                self._load_from = latest
        elif self._load_from is not None and '://' not in str(self._load_from):
            check_checkpoint_file(str(self._load_from), load_from_local_safe)
        return super().load_or_resume()

    def load_checkpoint(self, filename: str, map_location: str | Callable = 'cpu',
                        strict: bool = False,
                        revise_keys: list[tuple[str, str]] = [(r'^module.', '')]  # noqa: B006
                        ) -> dict[str, Any]:
        """``Runner.load_checkpoint`` (``load_from``, ``resume``, ``tools/test.py``), strict
        about missing and mismatched weights (see the module docstring).

        Args:
            filename: Checkpoint path or URL.
            map_location: As for :func:`torch.load`.
            strict: Also refuse keys the model does not have (otherwise a warning names them).
            revise_keys: (pattern, replacement) pairs applied to the checkpoint's keys.

        Returns:
            The checkpoint.

        Raises:
            CheckpointMismatchError: Naming the missing or mismatched weights.
        """
        checkpoint = _load_checkpoint(filename, map_location=map_location)
        self.call_hook('after_load_checkpoint', checkpoint=checkpoint)
        model = self.model.module if is_model_wrapper(self.model) else self.model
        report = load_state_dict_checked(
            model, _revised(checkpoint.get('state_dict', checkpoint), revise_keys))
        resuming = bool(self._resume)
        partial = bool(self.cfg.get('load_partial', False)) and not resuming
        check_load_report(report, str(filename), allow_partial=partial,
                          refuse_unexpected=strict,
                          warn=self.logger.warning,
                          hint='' if resuming else 'To load only the weights that fit, on '
                          'purpose (fine-tuning from other heads), set load_partial=True in '
                          'the config')
        self._has_loaded = True
        self.logger.info(f'Load checkpoint from {filename}')
        return checkpoint


def _revised(state_dict: dict[str, Any], revise_keys: list[tuple[str, str]]
             ) -> OrderedDict[str, Any]:
    """The state dict with each (pattern, replacement) applied to its keys, metadata kept."""
    metadata = getattr(state_dict, '_metadata', OrderedDict())
    revised = OrderedDict(state_dict)
    for pattern, replacement in revise_keys:
        revised = OrderedDict((re.sub(pattern, replacement, key), value)
                              for key, value in revised.items())
    revised._metadata = metadata  # type: ignore[attr-defined]
    return revised


def _hook_type(hook: Any) -> Any:
    """The type of a hook given as a config dict or as an instance."""
    return hook.get('type') if isinstance(hook, dict) else type(hook)


def _names(kind: Any, cls: type) -> bool:
    """Whether a config ``type`` (a class or a registry name) denotes ``cls`` itself."""
    if isinstance(kind, str):
        return kind.split('.')[-1] == cls.__name__
    return kind is cls
