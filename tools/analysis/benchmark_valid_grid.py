"""Cost of filtering each image on its own valid grid against filtering the padded canvas.

MMDetection pads a batch to its largest image; MoPPA filters each image on its valid grid
(``moppa_det.ops.apply_within``, METHOD.md "Padding"). This measures what that costs against the
padded version (``sizes=None``: the whole canvas is filtered, as without
``backbone.set_image_sizes``), on a mixed batch of one landscape and one portrait image padded to
a square canvas:

- ``unit``: one default MoPPA unit (``MoPPAConfig()``) on the (2, H, W, D) patch map, through
  ``apply_within`` exactly as ``MoPPA.adapt_map`` calls it (valid: two crops, one per size);
- ``backbone``: a timm ViT (``MoPPAViT``, random weights: speed does not depend on the values)
  with a MoPPA unit in every block, frozen, images (2, 3, H, W).

Both versions run side by side in one process, interleaved (the order alternates every repeat,
so drift of a shared machine hits both), after a warm-up. ``forward`` runs under
``torch.no_grad`` (inference); ``fwd+bwd`` is a training step's share: forward, then backward
into the units (the unit's input requires grad, as it does deep in a frozen backbone with
units below). Printed: medians in ms and ``valid/padded``, the median of the per-repeat ratios.
``valid_frac`` is the share of the canvas the images cover.

Example:
    PYTHONPATH=. python tools/analysis/benchmark_valid_grid.py
"""
from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn

from moppa_det.models.moppa import MoPPAConfig, MoPPAUnit
from moppa_det.ops import apply_within

Sizes = list[tuple[int, int]]
PASSES = ('forward', 'fwd+bwd')
COLUMNS = ('case', 'pass', 'valid_frac', 'padded_ms', 'valid_ms', 'valid/padded')


@dataclass
class Case:
    """One benchmark case: ``step(valid, backward)`` runs one pass of either version."""
    name: str
    valid_frac: float
    step: Callable[[bool, bool], None]


def mixed_sizes(long: int, short: int) -> Sizes:
    """(h, w) of a landscape and a portrait image: the batch pads both to long x long."""
    return [(short, long), (long, short)]


def grid_sizes(sizes: Sizes, stride: int) -> Sizes:
    """Valid token grids of pixel sizes at ``stride`` (ceil, as the backbones compute them)."""
    return [(-(-h // stride), -(-w // stride)) for h, w in sizes]


def covered(sizes: Sizes, canvas: tuple[int, int]) -> float:
    """Fraction of a batch of ``canvas``-sized images that ``sizes`` cover."""
    return sum(h * w for h, w in sizes) / (len(sizes) * canvas[0] * canvas[1])


def perturb_zero_init(module: nn.Module) -> None:
    """Randomises zero-init trainable tensors, as a few training steps would."""
    with torch.no_grad():
        for param in module.parameters():
            if param.requires_grad and not param.any():
                param.normal_(std=0.02)


def unit_case(dim: int, long: int, short: int, stride: int) -> Case:
    """One default MoPPA unit on the patch map of the mixed batch at width ``dim``."""
    unit = MoPPAUnit(dim, MoPPAConfig())
    perturb_zero_init(unit)
    side = -(-long // stride)
    grids = grid_sizes(mixed_sizes(long, short), stride)
    x = torch.randn(2, side, side, dim, requires_grad=True)
    grad_out = torch.randn_like(x)

    def step(valid: bool, backward: bool) -> None:
        sizes = grids if valid else None
        if not backward:
            with torch.no_grad():
                apply_within(x, sizes, unit)
            return
        x.grad = None
        unit.zero_grad(set_to_none=True)
        apply_within(x, sizes, unit).backward(grad_out)

    name = f'unit D={dim}, {side}x{side} tokens'
    return Case(name, covered(grids, (side, side)), step)


def backbone_case(model: str, long: int, short: int, depth: int | None,
                  embed_dim: int | None) -> Case:
    """A frozen MoPPAViT with a unit in every block on the mixed batch (pixel sizes)."""
    from moppa_det.models.backbones import MoPPAViT  # needs MMDetection's registry

    model_kwargs = {k: v for k, v in (('depth', depth), ('embed_dim', embed_dim)) if v}
    if embed_dim:
        model_kwargs['num_heads'] = max(1, embed_dim // 64)
    backbone = MoPPAViT(model_name=model, adapter='MoPPA', model_kwargs=model_kwargs).train()
    perturb_zero_init(backbone)
    stride = backbone.feature_stride
    sizes = mixed_sizes(long, short)
    images = torch.randn(2, 3, long, long)
    for image, (h, w) in zip(images, sizes):
        image[:, h:] = 0  # MMDetection pads with zeros (after normalisation)
        image[:, :, w:] = 0

    def step(valid: bool, backward: bool) -> None:
        if valid:
            backbone.set_image_sizes(sizes)
        if not backward:
            with torch.no_grad():
                backbone(images)
            return
        backbone.zero_grad(set_to_none=True)
        sum(out.sum() for out in backbone(images)).backward()

    side = -(-long // stride)
    name = (f'{model} x{len(backbone.sites())} blocks D={backbone.out_channels[0]}, '
            f'{side}x{side} tokens')
    return Case(name, covered(grid_sizes(sizes, stride), (side, side)), step)


def time_pair(case: Case, backward: bool, repeats: int, warmup: int
              ) -> tuple[float, float, float]:
    """Median seconds of the padded and the valid version, and the median per-repeat ratio."""
    def once(valid: bool) -> float:
        start = time.perf_counter()
        case.step(valid, backward)
        return time.perf_counter() - start

    for _ in range(warmup):  # DCT bases of every grid size get cached here
        once(False), once(True)
    padded, valid = [], []
    for repeat in range(repeats):
        for version in ((False, True) if repeat % 2 == 0 else (True, False)):
            (valid if version else padded).append(once(version))
    ratios = [v / p for v, p in zip(valid, padded)]
    return statistics.median(padded), statistics.median(valid), statistics.median(ratios)


def print_table(rows: Sequence[Sequence[str]]) -> None:
    """Left-aligned columns under a header of :data:`COLUMNS`."""
    table = [COLUMNS, *rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(COLUMNS))]
    for row in table:
        print('  '.join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--dim', type=int, default=768, help='unit width D (ViT-B: 768)')
    parser.add_argument('--sides', type=int, nargs=2, default=(1216, 800),
                        metavar=('LONG', 'SHORT'), help='unit case: image sides in pixels')
    parser.add_argument('--stride', type=int, default=16, help='unit case: token stride')
    parser.add_argument('--vit', default='vit_small_patch16_224', help='timm ViT name')
    parser.add_argument('--vit-sides', type=int, nargs=2, default=(640, 416),
                        metavar=('LONG', 'SHORT'), help='backbone case: image sides in pixels')
    parser.add_argument('--vit-depth', type=int, help='shrink the ViT to this many blocks')
    parser.add_argument('--vit-embed-dim', type=int, help='shrink the ViT to this width')
    parser.add_argument('--no-backbone', action='store_true', help='the unit case only')
    parser.add_argument('--repeats', type=int, default=7)
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--threads', type=int, help='torch threads (default: torch decides)')
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cases = [unit_case(args.dim, *args.sides, args.stride)]
    if not args.no_backbone:
        cases.append(backbone_case(args.vit, *args.vit_sides, args.vit_depth,
                                   args.vit_embed_dim))
    batches = [f'unit {args.sides[1]}x{args.sides[0]} px']
    batches += [] if args.no_backbone else [f'backbone {args.vit_sides[1]}x{args.vit_sides[0]} px']
    print(f'valid grids vs padded canvas: 2 images, landscape + portrait padded to a square '
          f'({", ".join(batches)}), {torch.get_num_threads()} threads, median of {args.repeats} '
          'interleaved repeats')
    rows = []
    for case in cases:
        for name in PASSES:
            padded, valid, ratio = time_pair(case, name == 'fwd+bwd', args.repeats, args.warmup)
            rows.append((case.name, name, f'{case.valid_frac:.3f}', f'{padded * 1e3:.1f}',
                         f'{valid * 1e3:.1f}', f'{ratio:.2f}'))
    print_table(rows)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
