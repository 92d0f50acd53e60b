"""Inference cost of each adapter against the plain frozen backbone, side by side.

One process builds the plain backbone (``adapter=None``) and, for each adapter, the same
backbone with it (random weights: speed does not depend on the values; adapter parameters are
moved off their init so that no path is skipped), then times ``eval()`` forwards under
``torch.no_grad`` of one seeded batch, after a warm-up. Every repeat times each variant right
next to its plain reference, in alternating order, so that each ratio compares two forwards a
few seconds apart (load on a shared machine drifts over minutes). Modes of each adapter:

- ``eager``: the training computation (inference caches off: gains, resized maps and the
  static router recomputed every forward);
- ``inference``: ``eval()`` with the caches, MoPPA in its units' fused inference form (only the
  spectral adapters change anything; for the others it is the eager computation, not timed
  twice); on a CPU the spectral adapters' inference runs on ``--inference-threads`` intra-op
  threads (``moppa_det.ops.threads``; default 1, ``none``: PyTorch's setting);
- ``merged``: LoRA, RLRR and SSF folded into the frozen weights (``merge_adapters``);
- ``compiled`` (``--compile``): ``torch.compile`` of the deployment form (merged where
  possible, else inference), beside a compiled plain backbone.

Printed per variant: the median time and ``ratio``, the median over repeats of its time divided
by its reference's time in the same pair (the plain backbone; for compiled variants the
compiled plain backbone, and ``vs_eager_plain`` times the compiled plain one's ratio as well).
On a shared machine wall times depend on the load: ``--threads 1 --cpu-time`` gives the compute
cost instead (process CPU time of single-threaded forwards; a multi-threaded run's CPU time
would count threads spinning at barriers).

Example (ViT-B/16 at 1024 x 1024, 64 x 64 tokens; ``--depth`` shortens the model, the
per-block ratio stays):
    PYTHONPATH=. python tools/analysis/benchmark_inference.py --depth 1 --repeats 5 --compile
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import nn

from moppa_det.models.adapters.inference import set_inference_caches
from moppa_det.models.backbones import MoPPASwin, MoPPAViT
from moppa_det.ops.threads import inference_threads, set_inference_threads

ADAPTERS = ('MoPPA', 'MoPPAPaper', 'LoRA', 'AdaptFormer', 'SSF', 'RLRR')
MERGEABLE = ('LoRA', 'SSF', 'RLRR')
CACHING = ('MoPPA', 'MoPPAPaper')


@dataclass
class Variant:
    """One timed forward: ``adapter`` ('plain' for none), ``mode`` and the callable."""
    adapter: str
    mode: str
    forward: Callable[[torch.Tensor], Any]

    @property
    def name(self) -> str:
        return f'{self.adapter}/{self.mode}'


def build(args: argparse.Namespace, adapter: str | None) -> nn.Module:
    """The benchmarked backbone with ``adapter`` (None: plain), in eval(), off its init."""
    torch.manual_seed(0)
    kwargs: dict[str, Any] = dict(model_name=args.model, adapter=adapter)
    if args.depth is not None:
        kwargs['model_kwargs'] = dict(depth=args.depth) if args.family == 'vit' else dict(
            depths=tuple(min(d, args.depth) for d in (2, 2, 6, 2)))
    backbone = (MoPPAViT if args.family == 'vit' else MoPPASwin)(**kwargs).eval()
    with torch.no_grad():
        for param in backbone.adapters.parameters():
            param.add_(torch.randn_like(param) * 0.02)
    return backbone


def compiled(module: nn.Module) -> Callable[[torch.Tensor], Any]:
    return torch.compile(module, dynamic=False)


def variants(args: argparse.Namespace) -> list[Variant]:
    """Every variant of the run, plain first."""
    plain = build(args, None)
    found = [Variant('plain', 'eager', plain)]
    if args.compile:
        found.append(Variant('plain', 'compiled', compiled(plain)))
    for adapter in args.adapters:
        eager = build(args, adapter)
        set_inference_caches(eager, False)
        found.append(Variant(adapter, 'eager', eager))
        deploy = build(args, adapter)
        if adapter in CACHING:
            found.append(Variant(adapter, 'inference', deploy))
        if adapter in MERGEABLE:
            deploy.merge_adapters()
            found.append(Variant(adapter, 'merged', deploy))
        if args.compile:
            found.append(Variant(adapter, 'compiled', compiled(deploy)))
    return found


def time_forward(forward: Callable[[torch.Tensor], Any], x: torch.Tensor,
                 clock: Callable[[], float] = time.perf_counter) -> float:
    """Seconds of ``clock`` (wall time, or the process's CPU time) one forward takes."""
    with torch.no_grad():
        start = clock()
        forward(x)
        return clock() - start


def reference_of(variant: Variant) -> str | None:
    """The plain variant a variant is timed against (None for the eager plain backbone)."""
    if variant.name == 'plain/eager':
        return None
    if variant.mode == 'compiled' and variant.adapter != 'plain':
        return 'plain/compiled'
    return 'plain/eager'


def measure(found: list[Variant], x: torch.Tensor, repeats: int, warmup: int,
            clock: Callable[[], float] = time.perf_counter
            ) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Seconds per forward of every variant, and its ratios to its plain reference.

    Every repeat times each variant right next to its reference (the order alternating), so
    that each ratio compares two forwards a few seconds apart on a shared machine.
    """
    by_name = {variant.name: variant for variant in found}
    for variant in found:
        for _ in range(warmup):  # compiles the compiled ones, fills the caches
            time_forward(variant.forward, x)
    times: dict[str, list[float]] = {variant.name: [] for variant in found}
    ratios: dict[str, list[float]] = {variant.name: [] for variant in found}
    for repeat in range(repeats):
        for index, variant in enumerate(found):
            reference = reference_of(variant)
            if reference is None:
                continue
            pair = [variant, by_name[reference]]
            if (repeat + index) % 2:
                pair.reverse()
            measured = {v.name: time_forward(v.forward, x, clock) for v in pair}
            for name, seconds in measured.items():
                times[name].append(seconds)
            ratios[variant.name].append(measured[variant.name] / measured[reference])
    return times, ratios


def table(found: list[Variant], times: dict[str, list[float]],
          ratios: dict[str, list[float]]) -> list[tuple[str, ...]]:
    """Rows: adapter, mode, median ms, median ratio to its reference, to the eager plain."""
    rows = []
    compiled_plain = statistics.median(ratios.get('plain/compiled') or [1.0])
    for variant in found:
        ratio = statistics.median(ratios[variant.name] or [1.0])
        to_eager = ratio * compiled_plain if reference_of(variant) == 'plain/compiled' else ratio
        rows.append((variant.adapter, variant.mode,
                     f'{statistics.median(times[variant.name]) * 1e3:.0f}', f'{ratio:.3f}',
                     f'{to_eager:.3f}'))
    return rows


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--family', choices=('vit', 'swin'), default='vit')
    parser.add_argument('--model', default=None, help='timm name (default: ViT-B/16, Swin-B)')
    parser.add_argument('--size', type=int, nargs=2, default=(1024, 1024), metavar=('H', 'W'))
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--depth', type=int, default=None,
                        help='blocks of the ViT (Swin: at most this many per stage)')
    parser.add_argument('--adapters', nargs='+', default=list(ADAPTERS), choices=ADAPTERS)
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--compile', action='store_true')
    parser.add_argument('--threads', type=int, default=None)
    parser.add_argument('--cpu-time', action='store_true',
                        help='time by the process CPU time instead of wall time; with '
                             '--threads 1 the compute cost, whatever the load of the machine')
    parser.add_argument('--inference-threads', default='1', metavar='N|none',
                        help="intra-op threads of the adapters' inference forms on a CPU "
                             "(default 1; 'none': PyTorch's setting)")
    args = parser.parse_args(argv)
    args.inference_threads = (None if args.inference_threads.lower() == 'none'
                              else int(args.inference_threads))
    args.model = args.model or ('vit_base_patch16_224' if args.family == 'vit'
                                else 'swin_base_patch4_window7_224')
    return args


def main(argv: Sequence[str] | None = None) -> list[tuple[str, ...]]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    x = torch.randn(args.batch, 3, *args.size, generator=torch.Generator().manual_seed(0))
    found = variants(args)
    previous = inference_threads()
    set_inference_threads(args.inference_threads)
    try:
        clock = time.process_time if args.cpu_time else time.perf_counter
        times, ratios = measure(found, x, args.repeats, args.warmup, clock)
    finally:
        set_inference_threads(previous)
    print(f'# {args.model} depth={args.depth or "full"} input {args.batch}x3x{args.size[0]}x'
          f'{args.size[1]}, torch {torch.__version__}, {torch.get_num_threads()} threads, '
          f'{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, '
          f'{args.repeats} repeats, each variant next to its reference, adapter inference '
          f'threads {args.inference_threads or "unlimited"}, '
          f'{"process CPU" if args.cpu_time else "wall"} time')
    rows = table(found, times, ratios)
    header = ('adapter', 'mode', 'median_ms', 'ratio', 'vs_eager_plain')
    print('| ' + ' | '.join(header) + ' |')
    print('|' + '---|' * len(header))
    for row in rows:
        print('| ' + ' | '.join(row) + ' |')
    return rows


if __name__ == '__main__':
    main()
