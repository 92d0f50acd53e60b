"""Building timm models with their pre-trained weights, and explaining every way that can fail."""
from __future__ import annotations

import difflib
import hashlib
import json
import pickle
import struct
import zipfile
from pathlib import Path
from typing import Any

import timm
import torch
from safetensors import SafetensorError
from torch import nn


class BackboneBuildError(ValueError):
    """A timm backbone could not be built as configured; the message says why."""


# A torch checkpoint starts with a zip local-file header (torch >= 1.6) or a pickle protocol
# opcode (torch's legacy format).
_TORCH_MAGIC = (b'PK\x03\x04', b'\x80')
# What torch and safetensors raise for a file they cannot parse (a text file unpickles into a
# bare ``KeyError: 101``; a cut zip archive into a RuntimeError about its central directory).
_UNREADABLE = (pickle.UnpicklingError, KeyError, EOFError, zipfile.BadZipFile, UnicodeError,
               struct.error, SafetensorError)
_ARCHIVE_ERRORS = ('PytorchStreamReader', 'zip archive', 'central directory')


def check_model_name(model_name: str, family: str) -> None:
    """Raises :class:`BackboneBuildError` for a name timm does not know, with close names.

    Args:
        model_name: A timm architecture name, optionally with a pretrained tag ('.tag').
        family: 'vit' or 'swin'; only used to rank suggestions.
    """
    architecture, _, tag = model_name.partition('.')
    if timm.is_model(architecture):
        tags = [name.partition('.')[2] for name in timm.list_pretrained(architecture + '.*')]
        if tag and tag not in tags:
            close = difflib.get_close_matches(tag, tags, n=3, cutoff=0.3) or tags[:5]
            raise BackboneBuildError(f'timm model {architecture!r} has no pretrained tag {tag!r}. '
                                     f'Known tags: {", ".join(close)}.')
        return
    known = timm.list_models()
    close = difflib.get_close_matches(architecture, known, n=5, cutoff=0.5)
    if not close:
        close = [name for name in known if name.startswith(family)][:5]
    raise BackboneBuildError(f'unknown timm model name {model_name!r}. '
                             f'Close names: {", ".join(close)}.')


def create_timm_model(model_name: str, pretrained: bool, checkpoint: str | None,
                      expected_type: type[nn.Module], **kwargs: Any) -> nn.Module:
    """Creates a headless timm model with weights from timm's source or a local file.

    A local ``checkpoint`` (.safetensors or .pth) goes through timm's own loader and checkpoint
    filter, so position embeddings and patch embeddings are resampled to the model as built.

    Args:
        model_name: timm model name.
        pretrained: Fetch timm's default weights for the name (needs network access).
        checkpoint: Path of a local weight file; takes precedence over ``pretrained``.
        expected_type: The timm class the wrapper supports (VisionTransformer, SwinTransformer).
        **kwargs: Passed to ``timm.create_model``.

    Returns:
        The model, with ``num_classes=0``.

    Raises:
        BackboneBuildError: for an unknown name, a model of another family, weights that cannot
            be fetched, or a checkpoint whose keys or shapes do not fit.
        FileNotFoundError: when ``checkpoint`` does not exist.
    """
    family = 'swin' if 'Swin' in expected_type.__name__ else 'vit'
    check_model_name(model_name, family)
    load_kwargs: dict[str, Any] = dict(pretrained=pretrained)
    if checkpoint is not None:
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f'backbone checkpoint {str(path)!r} does not exist')
        check_weights_file(path)
        load_kwargs = dict(pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    try:
        model = timm.create_model(model_name, num_classes=0, **load_kwargs, **kwargs)
    except _UNREADABLE as error:
        if checkpoint is None:
            raise
        raise _unreadable(checkpoint, error) from error
    except RuntimeError as error:
        if checkpoint is not None and _is_archive_error(error):
            raise _unreadable(checkpoint, error) from error
        if checkpoint is not None:
            raise BackboneBuildError(
                f'checkpoint {checkpoint!r} does not fit timm model {model_name!r}: '
                f'{_summarise_load_error(error)}') from error
        raise
    except (OSError, ValueError) as error:
        if pretrained and checkpoint is None:
            raise BackboneBuildError(
                f'could not fetch the pre-trained weights of {model_name!r} from timm\'s source '
                f'({type(error).__name__}: {error}). Without network access, give a local file '
                'with checkpoint=PATH (e.g. --cfg-options model.backbone.checkpoint=PATH).'
            ) from error
        raise
    if not isinstance(model, expected_type):
        raise BackboneBuildError(f'timm model {model_name!r} is a {type(model).__name__}, not a '
                                 f'{expected_type.__name__}; use the matching backbone type.')
    return model


def check_weights_file(path: Path) -> None:
    """Refuses a file timm's loader cannot read, naming it, before timm reads a byte of it.

    timm picks the reader by extension: safetensors for ``.safetensors``, ``torch.load`` for
    anything else. A file of neither format (a text file, a config) would otherwise end in an
    error that names neither the file nor the problem (``KeyError: 101``).

    Args:
        path: The local weights file.

    Raises:
        BackboneBuildError: Naming the file and what it starts with.
    """
    with path.open('rb') as file:
        head = file.read(8)
        if path.suffix == '.safetensors':
            if _safetensors_header(file, head, path.stat().st_size):
                return
            expected = 'a safetensors file (an 8-byte header length, then a JSON header)'
        elif head.startswith(_TORCH_MAGIC):
            return
        else:
            expected = 'a torch checkpoint (a zip archive, or a pickle from torch < 1.6)'
    kind = 'is empty' if not head else f'starts with {head!r}'
    raise BackboneBuildError(f'backbone checkpoint {str(path)!r} is not a weights file: it '
                             f'{kind}, while timm reads {path.suffix or "this name"} files as '
                             f'{expected}')


def _safetensors_header(file: Any, head: bytes, size: int) -> bool:
    """Whether ``file`` (read past its first 8 bytes, ``head``) starts a safetensors file."""
    if len(head) < 8:
        return False
    length = struct.unpack('<Q', head)[0]
    if not 1 < length <= size - 8:
        return False
    try:
        return isinstance(json.loads(file.read(length)), dict)
    except (ValueError, UnicodeDecodeError):
        return False


def _is_archive_error(error: RuntimeError) -> bool:
    """Whether torch could not parse the file (rather than fit its weights to the model)."""
    return any(sign in str(error) for sign in _ARCHIVE_ERRORS)


def _unreadable(checkpoint: str, error: BaseException) -> BackboneBuildError:
    """The error for a weights file that could not be parsed, naming it."""
    # The first sentence: torch appends a paragraph of advice.
    detail = str(error).strip().split('\n')[0].split('. ')[0] if str(error).strip() else ''
    return BackboneBuildError(f'backbone checkpoint {checkpoint!r} is not a readable weights '
                              f'file (truncated or corrupt): {type(error).__name__}'
                              f'{": " + detail if detail else ""}')


def _summarise_load_error(error: RuntimeError, limit: int = 8) -> str:
    """Shortens torch's load_state_dict error to its first lines (missing/unexpected keys)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = ' '.join(lines[:limit])
    return text if len(text) < 1500 else text[:1500] + ' ...'


def weights_sha256(module: nn.Module) -> str:
    """sha256 of a module's state dict (names, shapes, dtypes and values), in key order.

    Used as the identity of a frozen backbone in adapter-only checkpoints.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f'{name}:{tuple(tensor.shape)}:{tensor.dtype}'.encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
