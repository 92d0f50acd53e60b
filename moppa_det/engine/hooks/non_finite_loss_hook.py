"""Stops training at the first non-finite loss (or skips that step), before the optimizer
applies it."""
from __future__ import annotations

from typing import Any

import torch
from mmdet.registry import HOOKS
from mmengine.dist import all_reduce, get_world_size
from mmengine.hooks import Hook
from torch import nn


class NonFiniteLossError(RuntimeError):
    """A loss term was NaN or infinite; training stopped before the optimizer step."""


@HOOKS.register_module()
class NonFiniteLossHook(Hook):
    """Checks every loss term of every training step before the optimizer step.

    The check sits in a forward hook of the model, so it sees the loss dict (each term by name)
    before MMEngine sums it and the optimizer wrapper steps. Under DDP the ranks agree (one
    scalar all-reduce per step), so all of them stop or skip together.

    Args:
        action: ``'stop'`` (default) raises :class:`NonFiniteLossError` naming the iteration and
            the non-finite terms; the parameters never see the step and no checkpoint of it is
            written, so the last good checkpoint stays the newest. ``'skip'`` drops the step's
            gradients (the optimizer leaves every parameter and its state as they were), logs a
            warning naming the iteration and the terms, and trains on.
    """

    priority = 'VERY_HIGH'

    def __init__(self, action: str = 'stop') -> None:
        if action not in ('stop', 'skip'):
            raise ValueError(f"NonFiniteLossHook.action must be 'stop' or 'skip', got {action!r}")
        self.action = action
        self._runner: Any = None
        self._skip_step = False
        self._handles: list = []

    def before_train(self, runner) -> None:
        self._runner = runner
        model = getattr(runner.model, 'module', runner.model)
        self._handles.append(model.register_forward_hook(self._check))
        for optimizer in _optimizers(runner.optim_wrapper):
            self._handles.append(optimizer.register_step_pre_hook(self._drop_gradients))

    def after_train(self, runner) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _check(self, module: nn.Module, args: Any, output: Any) -> None:
        """Forward hook: looks at the loss dict of a training step."""
        if not module.training or not isinstance(output, dict):
            return
        bad = non_finite_terms(output)
        flag = torch.tensor(float(bool(bad)))
        if get_world_size() > 1:
            all_reduce(flag)  # every rank must take the same decision
        if flag.item() == 0:
            return
        where = f'iteration {self._runner.iter + 1}'
        terms = ', '.join(f'{name}={value}' for name, value in bad.items()) or \
            'none on this rank (another rank had them)'
        if self.action == 'skip':
            self._skip_step = True
            self._runner.logger.warning(f'{where}: non-finite loss terms: {terms}; step skipped')
            return
        last = self._runner.message_hub.get_info('last_ckpt')
        kept = f'the last good checkpoint is {last}' if last else 'no checkpoint was saved yet'
        raise NonFiniteLossError(
            f'{where}: non-finite loss terms: {terms}. Training stopped before this step was '
            f'applied; {kept}. Lower the learning rate or check the data of this iteration; '
            "custom_hooks=[dict(type='NonFiniteLossHook', action='skip')] skips such steps.")

    def _drop_gradients(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        """Optimizer step pre-hook: in ``skip`` mode, a flagged step updates nothing."""
        if not self._skip_step:
            return
        self._skip_step = False
        for group in optimizer.param_groups:
            for param in group['params']:
                param.grad = None  # torch's optimizers leave parameters without grad alone


def non_finite_terms(losses: dict[str, Any]) -> dict[str, float]:
    """The loss terms (keys containing 'loss', as MMEngine sums them) that are not finite.

    Args:
        losses: A model's loss dict: tensors or lists of tensors.

    Returns:
        Name -> first non-finite value, in the dict's order.
    """
    bad = {}
    for name, value in losses.items():
        if 'loss' not in name:
            continue
        tensors = value if isinstance(value, (list, tuple)) else [value]
        for tensor in tensors:
            if not isinstance(tensor, torch.Tensor):
                continue
            flat = tensor.detach().flatten()
            finite = torch.isfinite(flat)
            if not finite.all():
                bad[name] = flat[~finite][0].item()
                break
    return bad


def _optimizers(optim_wrapper: Any) -> list[torch.optim.Optimizer]:
    """The torch optimizers of an ``OptimWrapper`` or ``OptimWrapperDict``."""
    wrappers = getattr(optim_wrapper, 'optim_wrappers', None)
    if wrappers is not None:
        return [wrapper.optimizer for wrapper in wrappers.values()]
    return [optim_wrapper.optimizer]
