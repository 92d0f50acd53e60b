"""Loading a checkpoint into the model so that nothing trained is silently left out.

MMEngine's ``Runner.load_checkpoint`` (``load_from``, ``--resume``, ``tools/test.py``) loads
non-strictly: weights the checkpoint lacks, and weights whose shapes differ from the model's,
are only logged, and the model runs with its random initialisation there (``tools/test.py``
with a checkpoint of another head configuration evaluates random heads).

:func:`load_state_dict_checked` loads the way MMEngine does (model wrappers and test-time
augmentation wrappers unwrapped, every module's load pre-hooks run) and reports what did not
fit. A moppa_det backbone's pre-hook has already filled in the frozen timm weights an
adapter-only checkpoint leaves out, so whatever is still missing afterwards was trained and is
really missing. :func:`check_load_report` turns that into :class:`CheckpointMismatchError`,
naming the first few keys (and both shapes for a mismatch); keys the checkpoint has and the
model lacks are only warned about.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from mmengine.model import BaseTTAModel, is_model_wrapper
from torch import nn

# How many keys a message names before it says how many more there are.
SHOWN_KEYS = 5
# torch's message for a shape mismatch; those are reported from their shapes instead.
_SIZE_MISMATCH = 'size mismatch for '


class CheckpointMismatchError(ValueError):
    """A checkpoint lacks weights the model has, or holds some of them in other shapes."""


@dataclass
class LoadReport:
    """What did not fit when a state dict was loaded into a model.

    Attributes:
        missing: Model keys the state dict lacks (after the modules' load pre-hooks).
        unexpected: State dict keys the model has no place for.
        mismatched: (key, shape in the checkpoint, shape in the model) of weights left as they
            were because their shapes differ.
        errors: torch's other copy errors, verbatim.
    """
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def load_state_dict_checked(module: nn.Module, state_dict: dict[str, Any]) -> LoadReport:
    """Loads ``state_dict`` into ``module`` as ``mmengine.runner.load_state_dict`` does.

    Every weight that fits is copied; nothing is raised for those that do not (see
    :func:`check_load_report`), except by the modules' own load hooks.

    Args:
        module: The model (a model wrapper or ``BaseTTAModel`` is looked through, as MMEngine
            does).
        state_dict: The checkpoint's state dict, keys already revised (``module.`` stripped).

    Returns:
        What did not fit. ``num_batches_tracked`` of batch norms is never reported missing
        (MMEngine ignores it too: old checkpoints lack it).
    """
    metadata = getattr(state_dict, '_metadata', None)
    state_dict = dict(state_dict)  # the pre-hooks add to it: keep the caller's intact
    report = LoadReport()
    torch_errors: list[str] = []

    def load(child: nn.Module, local: dict[str, Any], prefix: str) -> None:
        if is_model_wrapper(child) or isinstance(child, BaseTTAModel):
            child = child.module
        local_metadata = {} if metadata is None else metadata.get(prefix[:-1], {})
        child._load_from_state_dict(local, prefix, local_metadata, True, report.missing,
                                    report.unexpected, torch_errors)
        report.mismatched.extend(_shape_mismatches(child, local, prefix))
        for name, grandchild in child._modules.items():
            if grandchild is not None:
                child_prefix = f'{prefix}{name}.'
                load(grandchild, {key: value for key, value in local.items()
                                  if key.startswith(child_prefix)}, child_prefix)
        incompatible = nn.modules.module._IncompatibleKeys(report.missing, report.unexpected)
        for hook in child._load_state_dict_post_hooks.values():
            hook(child, incompatible)

    load(module, state_dict, '')
    report.missing = [key for key in report.missing if 'num_batches_tracked' not in key]
    report.errors = [error for error in torch_errors if not error.startswith(_SIZE_MISMATCH)]
    return report


def _shape_mismatches(module: nn.Module, local: dict[str, Any], prefix: str
                      ) -> list[tuple[str, tuple[int, ...], tuple[int, ...]]]:
    """(key, checkpoint shape, model shape) of ``module``'s own tensors torch refused to copy.

    Mirrors the test in ``nn.Module._load_from_state_dict``, including its allowance for a
    one-element vector loaded into a 0-dim tensor.
    """
    own = dict(module._parameters)
    own.update((name, buffer) for name, buffer in module._buffers.items()
               if name not in module._non_persistent_buffers_set)
    found = []
    for name, tensor in own.items():
        given = local.get(prefix + name)
        if tensor is None or not isinstance(given, torch.Tensor) or nn.parameter.is_lazy(tensor):
            continue
        if tensor.dim() == 0 and given.shape == (1,):
            continue
        if given.shape != tensor.shape:
            found.append((prefix + name, tuple(given.shape), tuple(tensor.shape)))
    return found


def check_load_report(report: LoadReport, filename: str, *, allow_partial: bool = False,
                      refuse_unexpected: bool = False, warn: Callable[[str], None] = print,
                      hint: str = '') -> None:
    """Raises for trained weights the checkpoint could not give the model; warns for the rest.

    Args:
        report: What :func:`load_state_dict_checked` found.
        filename: The checkpoint, for the messages.
        allow_partial: Only warn about missing and mismatched weights (fine-tuning from a
            checkpoint of another task, on purpose).
        refuse_unexpected: Also raise for keys the model does not have (``strict=True``).
        warn: Where warnings go (the runner's logger).
        hint: Appended to the error (how to load partially on purpose, where that is allowed).

    Raises:
        CheckpointMismatchError: Naming the missing keys, the mismatched keys with both
            shapes, and torch's other copy errors.
    """
    unexpected = (f'{_count(report.unexpected, "weight")} the model does not have: '
                  f'{_first(report.unexpected)}')
    if report.unexpected and not refuse_unexpected:
        warn(f'checkpoint {filename} holds {unexpected} (ignored)')
    problems = [unexpected] if report.unexpected and refuse_unexpected else []
    if report.missing:
        problems.append(f'{_count(report.missing, "weight")} of the model missing from it: '
                        f'{_first(report.missing)}')
    if report.mismatched:
        shapes = [f'{key} {_shape(given)} in the checkpoint, {_shape(model)} in the model'
                  for key, given, model in report.mismatched]
        problems.append(f'{_count(shapes, "weight")} of another shape: {_first(shapes, "; ")}')
    if report.errors:
        problems.append(f'{_count(report.errors, "copy error")}: {_first(report.errors, "; ")}')
    if not problems:
        return
    message = f'checkpoint {filename} does not fit the model: {"; ".join(problems)}'
    if allow_partial:
        warn(f'{message} (load_partial=True: these keep their initialisation)')
        return
    raise CheckpointMismatchError(message + (f'. {hint}' if hint else ''))


def _count(items: list, noun: str) -> str:
    return f'{len(items)} {noun}{"s" if len(items) != 1 else ""}'


def _first(items: list[str], separator: str = ', ') -> str:
    """The first :data:`SHOWN_KEYS` items, and how many more there are."""
    shown = separator.join(items[:SHOWN_KEYS])
    rest = len(items) - SHOWN_KEYS
    return f'{shown} (and {rest} more)' if rest > 0 else shown


def _shape(shape: tuple[int, ...]) -> str:
    return f'({", ".join(map(str, shape))})' if len(shape) != 1 else f'({shape[0]},)'
