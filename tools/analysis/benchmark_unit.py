"""Forward+backward time and memory of one MoPPA unit against LoRA and AdaptFormer.

All methods run side by side in one process, interleaved (the order rotates every repeat so
that drift of a shared machine spreads over all of them), after a warm-up; times are medians.

What is timed, per method, is what the adapter adds to a frozen block (forward + backward of
the adapter alone, at matched trainable parameters):
- MoPPA: one ``MoPPAUnit`` (default config: r = 8, per-token router) on (B, N, D) tokens,
  including its residual add, as the backbone calls it;
- LoRA: the rank-r update ``LoRALinear.lora_delta`` of a qkv ``Linear(D, 3D)``, i.e. the work
  LoRA adds next to the frozen qkv matmul;
- AdaptFormer: the bottleneck D -> r -> D (delta only).
The input tokens require grad (an adapter deep in a frozen backbone has to pass gradients down
to the adapters below it). The frozen qkv ``Linear(D, 3D)`` forward + input-gradient backward
is timed as a reference, so the overheads can be read against the layer they sit next to.

Memory: ``saved`` is the size of the tensors autograd keeps for the backward pass (counted with
``torch.autograd.graph.saved_tensors_hooks``, unique storages, excluding the input tokens and
the parameters): the per-layer activation memory that training adds. On CUDA the peak memory
allocated during forward + backward above what was allocated before it
(``torch.cuda.max_memory_allocated``; includes the output and the gradients) is added.

Example:
    PYTHONPATH=. python tools/analysis/benchmark_unit.py --device cpu --threads 1
"""
from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from moppa_det.models.baselines import AdaptFormerAdapter, LoRALinear
from moppa_det.models.moppa import MoPPAConfig, MoPPAUnit

METHODS = ('moppa', 'lora', 'adaptformer', 'qkv')
# The target: MoPPA's step time at most this multiple of LoRA's at 64^2 tokens x 768.
TARGET_RATIO = 1.5
# Each timed sample repeats the step until it lasts this long, so tiny sizes are not timer noise.
MIN_SAMPLE_SECONDS = 0.01


@dataclass
class Bench:
    """One method under test: its forward function and the module that owns its parameters."""
    name: str
    fn: Callable[[torch.Tensor], torch.Tensor]
    module: nn.Module
    size: str  # rank / bottleneck as printed

    @property
    def params(self) -> list[nn.Parameter]:
        """The trainable parameters."""
        return [p for p in self.module.parameters() if p.requires_grad]

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.params)


def count_trainable(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def matched_lora_rank(target: int, dim: int) -> int:
    """Rank whose LoRA-on-qkv count r * (D + 3D) is closest to ``target`` (within 2D)."""
    return max(1, round(target / (4 * dim)))


def matched_adaptformer_bottleneck(target: int, dim: int) -> int:
    """Bottleneck whose AdaptFormer count 2Dr + r + D is closest to ``target`` (within D + 1)."""
    return max(1, round((target - dim) / (2 * dim + 1)))


def perturb_zero_init(module: nn.Module) -> None:
    """Randomises every zero-init tensor, as a few training steps would (keeps cost realistic)."""
    with torch.no_grad():
        for param in module.parameters():
            if param.requires_grad and not param.any():
                param.normal_(std=0.02)


def build_benches(dim: int, grid: tuple[int, int], device: torch.device,
                  prefix_tokens: int = 0) -> list[Bench]:
    """The four methods at width D, with LoRA and AdaptFormer matched to MoPPA's budget."""
    unit = MoPPAUnit(dim, MoPPAConfig(bottleneck=8, router='token')).to(device)
    target = count_trainable(unit)
    qkv = nn.Linear(dim, 3 * dim).to(device).requires_grad_(False)
    lora = LoRALinear(nn.Linear(dim, 3 * dim), rank=matched_lora_rank(target, dim)).to(device)
    adapter = AdaptFormerAdapter(dim, matched_adaptformer_bottleneck(target, dim)).to(device)
    for module in (unit, lora, adapter):
        perturb_zero_init(module)
    return [
        Bench('moppa', lambda x: unit(x, grid=grid, num_prefix_tokens=prefix_tokens), unit,
              'r=8'),
        Bench('lora', lora.lora_delta, lora, f'r={lora.rank}'),
        Bench('adaptformer', adapter, adapter, f'r={adapter.bottleneck}'),
        Bench('qkv', qkv, qkv, 'frozen'),
    ]


def make_step(bench: Bench, x: torch.Tensor) -> Callable[[], None]:
    """A closure running one forward + backward from fresh (None) gradients."""
    with torch.no_grad():
        grad_out = torch.randn_like(bench.fn(x))

    params = bench.params

    def step() -> None:
        x.grad = None
        for param in params:
            param.grad = None
        bench.fn(x).backward(grad_out)

    return step


def saved_bytes(bench: Bench, x: torch.Tensor) -> int:
    """Bytes of the unique storages autograd saves for backward, minus input and parameters."""
    exclude = {t.untyped_storage().data_ptr() for t in [x, *bench.module.parameters()]}
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in exclude:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = bench.fn(x)
    del out
    return sum(storages.values())


def cuda_peak_bytes(step: Callable[[], None], device: torch.device) -> int:
    """Peak CUDA memory allocated during one step above what was allocated before it."""
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    step()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - before


def sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def timed(step: Callable[[], None], inner: int, device: torch.device) -> float:
    """Seconds per step, averaged over ``inner`` back-to-back steps."""
    sync(device)
    start = time.perf_counter()
    for _ in range(inner):
        step()
    sync(device)
    return (time.perf_counter() - start) / inner


def time_interleaved(steps: dict[str, Callable[[], None]], device: torch.device, warmup: int,
                     repeats: int) -> dict[str, float]:
    """Median seconds per step of each method, measured round-robin."""
    names = list(steps)
    inner = {}
    for name in names:
        for _ in range(warmup):
            steps[name]()
        inner[name] = max(1, round(MIN_SAMPLE_SECONDS / timed(steps[name], 1, device)))
    samples: dict[str, list[float]] = {name: [] for name in names}
    for i in range(repeats):
        for name in names[i % len(names):] + names[:i % len(names)]:
            samples[name].append(timed(steps[name], inner[name], device))
    return {name: statistics.median(values) for name, values in samples.items()}


def bench_case(dim: int, side: int, batch: int, device: torch.device, warmup: int,
               repeats: int, prefix_tokens: int = 0) -> dict:
    """All measurements of one (D, grid) case as one flat row."""
    benches = build_benches(dim, (side, side), device, prefix_tokens)
    x = torch.randn(batch, prefix_tokens + side * side, dim, device=device, requires_grad=True)
    steps = {b.name: make_step(b, x) for b in benches}
    seconds = time_interleaved(steps, device, warmup, repeats)
    row = {'dim': dim, 'grid': side, 'batch': batch}
    for bench in benches:
        row[f'{bench.name}_size'] = bench.size
        row[f'{bench.name}_params'] = bench.num_params
        row[f'{bench.name}_ms'] = 1e3 * seconds[bench.name]
        row[f'{bench.name}_saved_mb'] = saved_bytes(bench, x) / 2**20
        if device.type == 'cuda':
            row[f'{bench.name}_peak_mb'] = cuda_peak_bytes(steps[bench.name], device) / 2**20
    for other in ('lora', 'adaptformer'):
        row[f'time_vs_{other}'] = row['moppa_ms'] / row[f'{other}_ms']
        row[f'saved_vs_{other}'] = row['moppa_saved_mb'] / row[f'{other}_saved_mb']
    return row


def run_benchmark(dims: tuple[int, ...] = (384, 768), grids: tuple[int, ...] = (14, 32, 64),
                  batch: int = 2, device: str = 'cpu', warmup: int = 3,
                  repeats: int = 10, prefix_tokens: int = 0) -> list[dict]:
    """Benchmarks every (D, grid side) case.

    Args:
        dims: Token widths D.
        grids: Grid sides; the token grid is side x side.
        batch: Batch size B.
        device: 'cpu' or 'cuda'.
        warmup: Untimed steps per method before timing.
        repeats: Timed samples per method (the median is reported).
        prefix_tokens: Class/register tokens before the grid (MoPPA passes them through).

    Returns:
        One dict per case with per-method ``*_params``, ``*_ms``, ``*_saved_mb`` (and
        ``*_peak_mb`` on CUDA) and the ratios ``time_vs_lora``, ``time_vs_adaptformer``,
        ``saved_vs_lora``, ``saved_vs_adaptformer`` (MoPPA / other).
    """
    torch.manual_seed(0)
    return [bench_case(dim, side, batch, torch.device(device), warmup, repeats, prefix_tokens)
            for dim in dims for side in grids]


def format_table(header: list[str], rows: list[list]) -> str:
    cells = [header] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = [' | '.join(c.rjust(w) for c, w in zip(row, widths)) for row in cells]
    lines.insert(1, '-+-'.join('-' * w for w in widths))
    return '\n'.join(lines)


def format_report(rows: list[dict]) -> str:
    """Parameter, time and memory tables of ``run_benchmark``'s rows."""
    per_dim = {row['dim']: row for row in rows}
    params = format_table(
        ['D', 'MoPPA', 'LoRA (qkv)', 'AdaptFormer'],
        [[d, f"{r['moppa_params']} ({r['moppa_size']})", f"{r['lora_params']} ({r['lora_size']})",
          f"{r['adaptformer_params']} ({r['adaptformer_size']})"] for d, r in per_dim.items()])
    times = format_table(
        ['D', 'tokens', 'MoPPA ms', 'LoRA ms', 'AF ms', 'qkv ms', 'MoPPA/LoRA', 'MoPPA/AF'],
        [[r['dim'], f"{r['grid']}^2", f"{r['moppa_ms']:.3f}", f"{r['lora_ms']:.3f}",
          f"{r['adaptformer_ms']:.3f}", f"{r['qkv_ms']:.3f}", f"{r['time_vs_lora']:.2f}",
          f"{r['time_vs_adaptformer']:.2f}"] for r in rows])
    memory_header = ['D', 'tokens', 'MoPPA MB', 'LoRA MB', 'AF MB', 'MoPPA/LoRA', 'MoPPA/AF']
    memory_rows = [[r['dim'], f"{r['grid']}^2", f"{r['moppa_saved_mb']:.2f}",
                    f"{r['lora_saved_mb']:.2f}", f"{r['adaptformer_saved_mb']:.2f}",
                    f"{r['saved_vs_lora']:.2f}", f"{r['saved_vs_adaptformer']:.2f}"]
                   for r in rows]
    if 'moppa_peak_mb' in rows[0]:
        memory_header += ['MoPPA peak MB', 'LoRA peak MB', 'AF peak MB']
        for line, r in zip(memory_rows, rows):
            line += [f"{r[f'{m}_peak_mb']:.2f}" for m in ('moppa', 'lora', 'adaptformer')]
    return '\n\n'.join([
        'Trainable parameters (LoRA rank / AdaptFormer bottleneck matched to MoPPA):\n' + params,
        'Forward + backward, median ms per step (qkv = the frozen Linear(D, 3D), reference):\n'
        + times,
        'Saved activations for backward, MB (excl. input and parameters):\n'
        + format_table(memory_header, memory_rows)])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--device', choices=('cpu', 'cuda'), default='cpu')
    parser.add_argument('--threads', type=int, default=1,
                        help='torch CPU threads (default 1: stable on a shared machine)')
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--dims', type=int, nargs='+', default=[384, 768])
    parser.add_argument('--grids', type=int, nargs='+', default=[14, 32, 64],
                        help='grid sides; the token grid is side x side')
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--repeats', type=int, default=10)
    parser.add_argument('--prefix-tokens', type=int, default=0,
                        help='class/register tokens before the grid')
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = run_benchmark(tuple(args.dims), tuple(args.grids), args.batch, args.device,
                         args.warmup, args.repeats, args.prefix_tokens)
    print(f'device={args.device} threads={torch.get_num_threads()} batch={args.batch} '
          f'prefix_tokens={args.prefix_tokens} warmup={args.warmup} repeats={args.repeats} '
          f'torch={torch.__version__}\n')
    print(format_report(rows))
    for row in rows:
        if row['dim'] == 768 and row['grid'] == 64:
            verdict = 'met' if row['time_vs_lora'] <= TARGET_RATIO else 'NOT met'
            print(f"\nTarget MoPPA <= {TARGET_RATIO}x LoRA time at 64^2 x 768: {verdict} "
                  f"({row['time_vs_lora']:.2f}x)")


if __name__ == '__main__':
    main()
