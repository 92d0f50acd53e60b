"""Export an adapted backbone (timm ViT or Swin with its adapters) to ONNX and check it.

Builds ``cfg.model.backbone`` of CONFIG (``--cfg-options`` apply first), loads the checkpoint's
``backbone.*`` entries through the backbone's own load path (an adapter-only checkpoint gets its
frozen weights from the built backbone, after the weights-hash check), optionally merges LoRA /
RLRR / SSF into the frozen weights (``--merge``), and exports the backbone with its adapter
hooks (TorchScript tracing, ``dynamo=False``: the dynamo exporter needs ``onnxscript``). The
input size is fixed (``--shape H W``), the batch dynamic. Then onnxruntime runs the file on a
seeded random batch of another size than the traced one, and the maximum absolute difference
to PyTorch's outputs is printed per output; the exit status is 1 where it exceeds
``--tolerance + --rtol * max |PyTorch output|`` (absolute and relative parts, as
``torch.testing``).

timm's ViT resamples its position embedding with antialiased bicubic interpolation, which
PyTorch's ONNX exporter has no symbolic for; it is exported as ONNX ``Resize`` (opset 18,
cubic a = -0.5, antialias, half-pixel), which matches it in onnxruntime to ~1e-6.

``--features`` exports the detector's features instead: the whole ``cfg.model`` is built and
the whole checkpoint loaded, and ``extract_feat`` (backbone and neck) is exported. The rest of
the detector does not export through MMDetection 3.3's own path (README: what and why).

Example:
    PYTHONPATH=. python tools/deployment/export_backbone_onnx.py \\
        configs/mask_rcnn_vit_moppa.py none --shape 1024 1024 \\
        --cfg-options model.backbone.pretrained=False
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

DEFAULT_OPSET = 18  # Resize with antialias


def _resize_aa_bicubic(g: Any, x: Any, output_size: Any, align_corners: Any, *scales: Any) -> Any:
    """ONNX symbolic of ``aten::_upsample_bicubic2d_aa`` (align_corners=False only)."""
    from torch.onnx import symbolic_helper
    if symbolic_helper._maybe_get_const(align_corners, 'b'):
        raise RuntimeError('antialiased bicubic resize with align_corners=True is not exported')
    leading = g.op('Slice', g.op('Shape', x), g.op('Constant', value_t=torch.tensor([0])),
                   g.op('Constant', value_t=torch.tensor([2])))
    if symbolic_helper._is_constant(output_size):
        sizes = [g.op('Constant', value_t=torch.tensor(
            symbolic_helper._get_const(output_size, 'is', 'output_size')))]
    else:  # (H, W) traced from the patch grid: ints as 0-d values
        one = g.op('Constant', value_t=torch.tensor([1]))
        sizes = [g.op('Reshape', g.op('Cast', value, to_i=7), one)  # 7: INT64
                 for value in symbolic_helper._unpack_list(output_size)]
    sizes = g.op('Concat', leading, *sizes, axis_i=0)
    empty = g.op('Constant', value_t=torch.tensor([], dtype=torch.float32))
    return g.op('Resize', x, empty, empty, sizes, mode_s='cubic', cubic_coeff_a_f=-0.5,
                antialias_i=1, coordinate_transformation_mode_s='half_pixel',
                exclude_outside_i=1)


def register_symbolics(opset: int) -> None:
    """Registers the symbolics the backbones need beyond PyTorch's own."""
    if opset < DEFAULT_OPSET:
        raise ValueError(f'opset {opset}: timm ViT needs Resize with antialias (opset >= 18)')
    torch.onnx.register_custom_op_symbolic('aten::_upsample_bicubic2d_aa', _resize_aa_bicubic,
                                           opset)


def export_onnx(model: nn.Module, shape: tuple[int, int], path: str | Path, batch: int = 1,
                opset: int = DEFAULT_OPSET) -> list[str]:
    """Traces ``model`` on a (batch, 3, H, W) input and writes ONNX with a dynamic batch.

    Returns:
        The output names (``out0``, ``out1``, ...).
    """
    register_symbolics(opset)
    model.eval()
    example = torch.zeros(batch, 3, *shape)
    with torch.no_grad():
        names = [f'out{i}' for i in range(len(model(example)))]
    axes = {name: {0: 'batch'} for name in ['images', *names]}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter('ignore')  # the tracer's notes on Python ints and shapes
        torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=opset,
                          input_names=['images'], output_names=names, dynamic_axes=axes)
    return names


def check_parity(model: nn.Module, path: str | Path, shape: tuple[int, int], batch: int = 2,
                 seed: int = 0) -> tuple[list[float], list[float]]:
    """onnxruntime against PyTorch on a seeded (batch, 3, H, W) normal input.

    Returns:
        Per output: max |onnxruntime - PyTorch|, and max |PyTorch| (for relative errors).
    """
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(str(path), options, providers=['CPUExecutionProvider'])
    x = torch.randn(batch, 3, *shape, generator=torch.Generator().manual_seed(seed))
    outputs = session.run(None, {'images': x.numpy()})
    with torch.no_grad():
        reference = [out.numpy() for out in model.eval()(x)]
    return ([float(np.abs(out - ref).max()) for out, ref in zip(outputs, reference)],
            [float(np.abs(ref).max()) for ref in reference])


class FeatureExtractor(nn.Module):
    """A detector's ``extract_feat`` (backbone and neck) as a module: images -> feature maps."""

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.detector = detector
        self.backbone = detector.backbone  # what --merge acts on

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.detector.extract_feat(images))


def build_backbone(config: str, checkpoint: str, cfg_options: dict | None = None,
                   features: bool = False) -> nn.Module:
    """``cfg.model.backbone`` of ``config``, with the checkpoint's ``backbone.*`` entries loaded
    through the backbone's own load path (``checkpoint='none'``: as built). ``features``: the
    whole detector's :class:`FeatureExtractor`, with the whole checkpoint loaded."""
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config

    import moppa_det  # noqa: F401  (registers the backbones)
    register_all_modules(init_default_scope=True)
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    model = MODELS.build(cfg.model if features else cfg.model.backbone)
    if checkpoint.lower() != 'none':
        load_checkpoint(model, checkpoint, prefix='' if features else 'backbone.')
    backbone = model.backbone if features else model
    if getattr(backbone, 'autocast_dtype', None) is not None:
        print(f'exporting in float32, not under the config\'s {backbone.autocast_dtype} autocast')
        backbone.autocast_dtype = None
    return (FeatureExtractor(model) if features else model).eval()


def load_checkpoint(model: nn.Module, path: str, prefix: str = 'backbone.') -> None:
    """Loads the checkpoint's entries under ``prefix`` into ``model`` (strict); a backbone's
    load pre-hook fills the frozen weights of an adapter-only checkpoint and checks its meta."""
    from moppa_det.engine.safe_checkpoint import load_from_local_safe
    checkpoint = load_from_local_safe(path, map_location='cpu')
    state = checkpoint.get('state_dict', checkpoint)
    entries = {key[len(prefix):]: value for key, value in state.items()
               if key.startswith(prefix)}
    if not entries:
        raise ValueError(f'{path}: no {prefix}* entries in the checkpoint')
    model.load_state_dict(entries, strict=True)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint', help="checkpoint file, or 'none' for the backbone as built")
    parser.add_argument('--shape', type=int, nargs=2, required=True, metavar=('H', 'W'))
    parser.add_argument('--out', default=None, help='ONNX file (default: CONFIG name + size)')
    parser.add_argument('--merge', action='store_true',
                        help='merge LoRA / RLRR / SSF into the frozen weights first')
    parser.add_argument('--trace-batch', type=int, default=1)
    parser.add_argument('--check-batch', type=int, default=2)
    parser.add_argument('--tolerance', type=float, default=1e-4, help='absolute part')
    parser.add_argument('--rtol', type=float, default=1e-5,
                        help='relative part, times the output\'s largest magnitude')
    parser.add_argument('--opset', type=int, default=DEFAULT_OPSET)
    parser.add_argument('--features', action='store_true',
                        help="export the detector's extract_feat (backbone and neck)")
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default=None)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    model = build_backbone(args.config, args.checkpoint, args.cfg_options, args.features)
    if args.merge:
        backbone = model.backbone if args.features else model
        print(f'merged: {backbone.merge_adapters() or "nothing (no LoRA/RLRR/SSF)"}')
    shape = tuple(args.shape)
    out = Path(args.out or f'{Path(args.config).stem}_{shape[0]}x{shape[1]}.onnx')
    names = export_onnx(model, shape, out, args.trace_batch, args.opset)
    errors, scales = check_parity(model, out, shape, args.check_batch)
    print(f'wrote {out} ({out.stat().st_size / 2**20:.1f} MiB), input images '
          f'(batch, 3, {shape[0]}, {shape[1]}), outputs {names}')
    for name, error, scale in zip(names, errors, scales):
        print(f'{name}: max |onnxruntime - torch| = {error:.3e} (max |torch| {scale:.3g}, '
              f'batch {args.check_batch})')
    limits = [args.tolerance + args.rtol * scale for scale in scales]
    failed = [name for name, error, limit in zip(names, errors, limits) if not error <= limit]
    if failed:
        print(f'FAIL: {failed} differ by more than tolerance {args.tolerance:g} + rtol '
              f'{args.rtol:g} * max |torch|', file=sys.stderr)
        return 1
    print(f'OK: max abs difference {max(errors):.3e}, within {args.tolerance:g} + {args.rtol:g} '
          '* max |torch| for every output')
    return 0


if __name__ == '__main__':
    sys.exit(main())
