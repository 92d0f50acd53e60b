"""Saves the random generators in every checkpoint and restores them on resume.

What MMEngine restores by itself on ``resume``: model, optimizer, schedulers, message hub, the
loop's epoch and iteration. ``IterBasedTrainLoop`` then *replays* the data loader for the
iterations already trained. With a fixed seed that replay brings back the sampler's order
(its generator is seeded from the run's seed) and the data-loader workers' generators (MMEngine
seeds each worker with ``seed + worker_id`` and the replay makes them draw again what they drew
before). It does not bring back the main process's generators: Python's, NumPy's, torch's and
CUDA's continue from the seed plus whatever model building and the replay drew, while the
uninterrupted run's had also served every RPN/RoI sampling, dropout and (with ``num_workers=0``)
augmentation of the iterations before. So the resumed run drew different RoIs from the first
iteration on, and ended with different losses and metrics.

This hook closes the gap:

* ``before_save_checkpoint``: the generators of every rank go into ``checkpoint['random_states']``
  (a list indexed by rank, gathered in ``after_train_iter`` / ``after_train_epoch`` when a
  checkpoint is due, since only rank 0 saves).
* On resume, the states are put back when the loop asks for its first new batch, i.e. after
  MMEngine's replay (which draws from the main generators itself when ``num_workers=0``).
* Validation during training draws from the same generators (the val loader's iterator takes a
  seed from torch's). It is isolated: the generators are saved before and restored after it, so
  whether or not a run validated at the checkpoint does not change what comes after.
"""
from __future__ import annotations

from typing import Any, Iterator

from mmdet.registry import HOOKS
from mmengine.dist import all_gather_object, get_rank, get_world_size
from mmengine.hooks import CheckpointHook, Hook

from ..random_state import capture_random_state, restore_random_state

STATE_KEY = 'random_states'


class _RestoreAfterReplay:
    """Stands in for ``IterBasedTrainLoop.dataloader_iterator``: lets the loop replay ``skip``
    batches, restores the generators, then hands the loop its own iterator back.

    Args:
        loop: The train loop.
        skip: Batches the loop replays before its first new iteration (its ``iter``).
        state: This rank's saved generator states.
    """

    def __init__(self, loop: Any, skip: int, state: dict) -> None:
        self._loop, self._iterator = loop, loop.dataloader_iterator
        self._skip, self._state = skip, state

    def __iter__(self) -> Iterator:
        return self

    def __next__(self) -> Any:
        if self._skip > 0:
            self._skip -= 1
            return next(self._iterator)
        restore_random_state(self._state)
        self._loop.dataloader_iterator = self._iterator
        return next(self._iterator)


@HOOKS.register_module()
class RandomStateHook(Hook):
    """Makes a killed and resumed run draw the same random numbers as an uninterrupted one.

    See the module docstring for what MMEngine restores by itself and what this hook adds.
    Priority LOW: its ``after_train_iter`` runs before ``CheckpointHook``'s (VERY_LOW).
    """

    priority = 'LOW'

    def __init__(self) -> None:
        self._gathered: list[dict] | None = None  # every rank's states, when a save is due
        self._loaded: list[dict] | None = None  # states of the checkpoint just loaded
        self._before_val: dict | None = None
        self._first_epoch = False

    # --- saving ------------------------------------------------------------------------------
    def after_train_iter(self, runner, batch_idx: int, data_batch: Any = None,
                         outputs: Any = None) -> None:
        self._gather_if_due(runner, by_epoch=False)

    def after_train_epoch(self, runner) -> None:
        self._gather_if_due(runner, by_epoch=True)

    def _gather_if_due(self, runner, by_epoch: bool) -> None:
        """Collects every rank's generators (a collective: all ranks call it alike)."""
        if get_world_size() > 1 and _checkpoint_due(runner, by_epoch):
            self._gathered = all_gather_object(capture_random_state())

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint[STATE_KEY] = self._gathered or [capture_random_state()]
        self._gathered = None

    # --- validation during training ----------------------------------------------------------
    def before_val(self, runner) -> None:
        self._before_val = capture_random_state()

    def after_val(self, runner) -> None:
        if self._before_val is not None:
            restore_random_state(self._before_val)
            self._before_val = None

    # --- resuming ------------------------------------------------------------------------------
    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        self._loaded = checkpoint.get(STATE_KEY)

    def before_train(self, runner) -> None:
        self._first_epoch = True

    def before_train_epoch(self, runner) -> None:
        """Restores the loaded states once, if the run resumed (``runner.iter > 0``)."""
        if not self._first_epoch:
            return
        self._first_epoch = False
        states, self._loaded = self._loaded, None
        if states is None or runner.iter == 0:  # nothing saved, or ``load_from`` (not resume)
            if runner.iter > 0:
                runner.logger.warning('the resumed checkpoint holds no random states: the run '
                                      'goes on from different random numbers than it had')
            return
        rank, world_size = get_rank(), get_world_size()
        if len(states) != world_size:
            runner.logger.warning(f'the checkpoint holds the random states of {len(states)} '
                                  f'processes, this run has {world_size}: not restored')
            return
        loop = runner.train_loop
        if hasattr(loop, 'dataloader_iterator'):  # IterBasedTrainLoop replays runner.iter batches
            loop.dataloader_iterator = _RestoreAfterReplay(loop, runner.iter, states[rank])
        else:  # EpochBasedTrainLoop: the epoch's iterator is created after this hook
            restore_random_state(states[rank])
        runner.logger.info('random states restored from the checkpoint')


def _checkpoint_due(runner, by_epoch: bool) -> bool:
    """Whether a ``CheckpointHook`` of the runner saves at the end of this iteration/epoch.

    Mirrors ``CheckpointHook.after_train_iter`` / ``after_train_epoch``.
    """
    for hook in runner.hooks:
        if not isinstance(hook, CheckpointHook) or hook.by_epoch != by_epoch:
            continue
        if by_epoch:
            due = (hook.every_n_epochs(runner, hook.interval, hook.save_begin)
                   or (hook.save_last and hook.is_last_train_epoch(runner)))
        else:
            due = (hook.every_n_train_iters(runner, hook.interval, hook.save_begin)
                   or (hook.save_last and hook.is_last_train_iter(runner)))
        if due:
            return True
    return False
