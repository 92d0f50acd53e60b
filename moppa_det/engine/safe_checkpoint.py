"""Safe loading of MMEngine checkpoints on torch >= 2.6.

Since torch 2.6, ``torch.load`` defaults to ``weights_only=True``: its unpickler only rebuilds
tensors, containers and an allow-list of globals. MMEngine 0.10.7 calls ``torch.load`` without
``weights_only``, and its own checkpoints hold more than that, so ``tools/train.py --resume``
dies with ``UnpicklingError: Weights only load failed``. The extra objects come from
``Runner.save_checkpoint``:

* ``message_hub.log_scalars``: one ``HistoryBuffer`` per logged value. Its ``__getstate__``
  also pickles its statistics functions (``HistoryBuffer.min``, ``.max``, ``.current``,
  ``.mean``), which pickle protocol 2 writes as ``getattr(HistoryBuffer, 'min')``; its
  ``_log_history`` / ``_count_history`` are float64 / int64 numpy arrays.
* ``message_hub.runtime_info['eta']``: a numpy float64 scalar.
* ``param_schedulers`` of a ``OneCycleLR`` / ``OneCycleMomentum``: their ``anneal_func``, a
  static method of ``OneCycleParamScheduler`` (``getattr(OneCycleParamScheduler,
  '_annealing_cos')`` or ``'_annealing_linear'``).
* Everything else (``meta``, ``state_dict``, ``optimizer``, ``param_schedulers`` with their
  ``collections.Counter`` milestones) is already allowed by torch.

Turning ``weights_only`` off would let any checkpoint run arbitrary code while it loads.
Instead, :func:`install_safe_checkpoint_loader` re-registers MMEngine's local-file loader so
that it keeps ``weights_only=True`` and allows exactly those globals, for the duration of each
load only (nothing is added to torch's process-wide allow-list). ``getattr`` is not allowed
as such: a stand-in accepts only those ``HistoryBuffer`` and ``OneCycleParamScheduler``
methods. Anything else is refused with :class:`UntrustedCheckpointError`, before any of it
runs. A file that is no checkpoint at all, or a truncated or corrupt one, is refused with
:class:`CheckpointReadError` naming the file (and not with torch's advice to load it with
``weights_only=False``).

Every local path goes through ``CheckpointLoader``: ``Runner.resume``,
``Runner.load_checkpoint`` (``load_from``), ``mmengine.runner.load_checkpoint`` and
``init_cfg=dict(type='Pretrained', ...)``. Remote schemes (http, https, ...) are untouched.
"""
from __future__ import annotations

import os.path as osp
import pickle
import re
import zipfile
from typing import Any, Callable

import numpy as np
import torch
from mmengine.logging.history_buffer import HistoryBuffer
from mmengine.optim.scheduler.param_scheduler import OneCycleParamScheduler
from mmengine.runner.checkpoint import CheckpointLoader

from .checkpoint_files import CheckpointReadError

try:
    from numpy._core import multiarray
except ImportError:  # numpy < 2
    from numpy.core import multiarray  # type: ignore[no-redef]

# The methods MMEngine checkpoints pickle as ``getattr(cls, name)``: the statistics functions
# ``HistoryBuffer.__getstate__`` keeps, and the annealing function of the one-cycle schedulers.
_PICKLED_METHODS: dict[type, frozenset[str]] = {
    HistoryBuffer: frozenset({'min', 'max', 'current', 'mean'}),
    OneCycleParamScheduler: frozenset({'_annealing_cos', '_annealing_linear'}),
}


class UntrustedCheckpointError(pickle.UnpicklingError):
    """A checkpoint holds a pickled object that is not on moppa_det's allow-list."""


def _restricted_getattr(obj: Any, name: str) -> Callable:
    """Stand-in for ``builtins.getattr`` while unpickling: the methods of ``_PICKLED_METHODS``.

    Args:
        obj: The object whose attribute the pickle asks for.
        name: The attribute name.

    Returns:
        The function ``obj.name``.

    Raises:
        pickle.UnpicklingError: For any other object or attribute.
    """
    if (isinstance(obj, type) and isinstance(name, str)
            and name in _PICKLED_METHODS.get(obj, ())):
        return getattr(obj, name)
    raise pickle.UnpicklingError(f'GLOBAL builtins.getattr called as getattr({obj!r}, {name!r})')


def _allow_list() -> list[Any]:
    """Globals of MMEngine checkpoints that torch's weights-only unpickler lacks.

    Returns:
        Entries for ``torch.serialization.safe_globals``: objects, or ``(object, name)`` pairs
        where the pickle spells the global differently from the object's own path.
    """
    # numpy >= 2 pickles these as ``numpy._core.multiarray.*``; numpy 1.x wrote
    # ``numpy.core.multiarray.*``, so checkpoints saved on older stacks still load.
    numpy_functions = [(function, f'{module}.{function.__name__}')
                       for function in (multiarray._reconstruct, multiarray.scalar)
                       for module in ('numpy._core.multiarray', 'numpy.core.multiarray')]
    return [
        *_PICKLED_METHODS,
        (_restricted_getattr, 'builtins.getattr'),
        np.ndarray,
        np.dtype,
        # ``BUILD`` checks the dtype instance's class: HistoryBuffer arrays and the ETA scalar.
        type(np.dtype(np.float64)),
        type(np.dtype(np.int64)),
        *numpy_functions,
    ]


def _offender(message: str) -> str | None:
    """Picks the refused global out of a weights-only unpickler message.

    Args:
        message: The text of torch's ``UnpicklingError``.

    Returns:
        The global, class or call the unpickler refused; None when the error is of another
        kind (a truncated or corrupt file, say).
    """
    patterns = (r'(getattr\(.*?\)) ?$', r'GLOBAL (\S+)', r'allowlisted .*but got (.+?)$',
                r'unrecognized function (.+?)$')
    for pattern in patterns:
        match = re.search(pattern, message, flags=re.MULTILINE)
        if match:
            return match.group(1)
    return None


def load_from_local_safe(filename: str, map_location: Any = None) -> Any:
    """Loads a local checkpoint with ``weights_only=True`` and moppa_det's allow-list.

    Args:
        filename: Local checkpoint path (``~`` is expanded).
        map_location: Same as :func:`torch.load`.

    Returns:
        The loaded checkpoint.

    Raises:
        FileNotFoundError: If the file does not exist.
        CheckpointReadError: If the file is not a checkpoint, or a truncated or corrupt one.
        UntrustedCheckpointError: If the file holds a pickled object outside the allow-list.
    """
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    _check_format(filename)
    # Leave entries the user allowed process-wide in place when the context exits.
    allowed = torch.serialization.get_safe_globals()
    extra = [entry for entry in _allow_list() if entry not in allowed]
    try:
        with torch.serialization.safe_globals(extra):
            return torch.load(filename, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        offender = _offender(str(error))
        if offender is None:
            raise _read_error(filename, error) from None
        raise UntrustedCheckpointError(
            f'Refusing to load checkpoint {filename!r}: it contains {offender}, '
            "which is not on moppa_det's allow-list of the types MMEngine checkpoints hold "
            '(moppa_det.engine.safe_checkpoint). Unpickling it could run arbitrary code: only '
            'load checkpoints from sources you trust.') from None
    except (EOFError, zipfile.BadZipFile) as error:
        raise _read_error(filename, error) from None
    except RuntimeError as error:
        if not any(sign in str(error) for sign in _ARCHIVE_ERRORS):
            raise  # not about the file (a CUDA map_location on a CPU machine, say)
        raise _read_error(filename, error) from None


# torch's messages for a damaged zip archive (truncated, overwritten, CRC mismatch).
_ARCHIVE_ERRORS = ('PytorchStreamReader', 'zip archive', 'central directory', 'crc')
# A checkpoint starts with a zip local-file header (torch >= 1.6) or a pickle protocol opcode
# (torch's legacy format).
_MAGIC = (b'PK\x03\x04', b'\x80')


def _check_format(filename: str) -> None:
    """Refuses a file that is neither of torch's two formats before unpickling a byte of it."""
    with open(filename, 'rb') as file:
        head = file.read(4)
    if not head.startswith(_MAGIC):
        kind = 'an empty file' if not head else f'a file starting with {head!r}'
        raise CheckpointReadError(
            f'{filename} is not a checkpoint: it is {kind}, while torch checkpoints are zip '
            'archives (or, from torch < 1.6, pickles)')


def _read_error(filename: str, error: BaseException) -> CheckpointReadError:
    """The error for a file torch cannot read, without torch's advice to drop ``weights_only``.

    Args:
        filename: The file.
        error: torch's error.
    """
    message = str(error)
    if 'WeightsUnpickler error:' in message:  # keep the cause, not the weights_only=False hint
        message = message.split('WeightsUnpickler error:', 1)[1]
    message = message.strip().splitlines()[0] if message.strip() else type(error).__name__
    return CheckpointReadError(f'{filename} is not a readable checkpoint (truncated or corrupt): '
                               f'{message}')


def install_safe_checkpoint_loader() -> None:
    """Makes MMEngine load local checkpoints through :func:`load_from_local_safe`.

    Replaces the loader of the empty prefix, which ``CheckpointLoader`` uses for every path
    without a scheme. Calling it again changes nothing.
    """
    if CheckpointLoader._schemes.get('') is not load_from_local_safe:
        CheckpointLoader.register_scheme(prefixes='', loader=load_from_local_safe, force=True)
