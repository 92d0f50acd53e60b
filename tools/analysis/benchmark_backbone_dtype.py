"""Training-step time of the frozen MoPPA ViT-S in float32 against bfloat16 autocast.

The demo runs its frozen backbone under ``autocast_dtype='bfloat16'``; this prints how much
that saves on the machine at hand. Both backbones are built in one process from the same
weights (a randomly initialised ``vit_small_patch14_dinov2``: the speed does not depend on the
values) with the demo's layout (units in blocks 8-11, stride 16), and timed interleaved (the
order alternates every repeat, so drift of a shared machine hits both) after a warm-up. What is
timed is the backbone's share of a training step: forward of a batch, backward of the sum of
its output into the units. Times are medians.

Example:
    PYTHONPATH=. python tools/analysis/benchmark_backbone_dtype.py --batch 4 --side 320
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from moppa_det.models.backbones import MoPPAViT


def build(autocast_dtype: str | None, state: dict | None) -> MoPPAViT:
    """The demo's backbone (random weights; ``state`` makes both copies identical)."""
    backbone = MoPPAViT(model_name='vit_small_patch14_dinov2', feature_stride=16,
                        adapter_blocks=[8, 9, 10, 11], autocast_dtype=autocast_dtype)
    if state is not None:
        backbone.load_state_dict(state)
    return backbone.train()


def step_seconds(backbone: MoPPAViT, images: torch.Tensor) -> float:
    """Wall time of forward + backward of one batch (B, 3, H, W)."""
    start = time.perf_counter()
    features = backbone(images)
    sum(f.sum() for f in features).backward()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--batch', type=int, default=4)
    parser.add_argument('--side', type=int, default=320, help='square image side in pixels')
    parser.add_argument('--repeats', type=int, default=10)
    parser.add_argument('--threads', type=int, help='torch threads (default: torch decides)')
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    fp32 = build(None, None)
    backbones = {'float32': fp32, 'bfloat16': build('bfloat16', fp32.state_dict())}
    images = torch.randn(args.batch, 3, args.side, args.side)
    for backbone in backbones.values():  # warm-up
        step_seconds(backbone, images)
    times: dict[str, list[float]] = {name: [] for name in backbones}
    for repeat in range(args.repeats):
        order = list(backbones) if repeat % 2 == 0 else list(reversed(backbones))
        for name in order:
            times[name].append(step_seconds(backbones[name], images))
    medians = {name: statistics.median(samples) for name, samples in times.items()}
    print(f'frozen ViT-S/14 + 4 MoPPA units, forward + backward, batch {args.batch} x '
          f'{args.side}^2, {torch.get_num_threads()} threads, median of {args.repeats}:')
    for name, seconds in medians.items():
        print(f'  {name:9s} {seconds * 1e3:8.1f} ms')
    print(f'float32 / bfloat16 time ratio: {medians["float32"] / medians["bfloat16"]:.2f}x')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
