"""Training cost of every method on the detection backbones, measured side by side in one run.

For each timm backbone (ViT-S/14 DINOv2, ViT-B/16 and Swin-T by default; Swin-B with
``--models``) and each method (MoPPA, MoPPAPaper, the authors' recipe, LoRA, AdaptFormer, the
frozen backbone, full fine-tuning), on a detection input (``--batch`` x 3 x H x W; default
2 x 3 x 512 x 512 on a CPU, 2 x 3 x 1024 x 1024 with ``--device cuda``), printed and written
(``--out DIR``: ``benchmark_train.csv``, ``benchmark_train.md``):

- ``trainable_params``: trainable parameters of the backbone;
- ``train_ms``: one training step: ``zero_grad``, forward of the backbone and of a stand-in
  head, backward, AdamW step over the trainable parameters (backbone and head);
- ``train_mem_mb``: peak memory of training on top of the built model (activations kept for
  the backward pass, gradients, AdamW states, temporaries). CUDA:
  ``torch.cuda.max_memory_allocated()`` over the training steps minus
  ``torch.cuda.memory_allocated()`` after building. CPU: the process's peak resident set
  (``VmHWM`` of ``/proc/self/status``, reset after building through ``/proc/self/clear_refs``)
  minus its resident set after building; where the reset is refused, ``ru_maxrss`` is used and
  ``build_transient_mb`` (how far building rose above the built model) bounds its error. The
  column ``mem_measure`` names the measure;
- ``infer_ms``: one ``eval()`` forward of the backbone under ``torch.no_grad`` (MoPPA's and
  MoPPAPaper's inference caches on, as deployed);
- each time and memory also as a ratio to LoRA's from the same run (``*_vs_lora``; for times
  the median over rounds of time / LoRA's time in that round), memory also to full fine-tuning
  (``mem_vs_full``).

The methods are read from ONE source, the demo leaves ``configs/demo/<method>.py``
(``model.backbone.adapter`` and ``model.backbone.frozen``); their ``adapter_blocks`` (the last 4
of 12 ViT blocks, a CPU budget) is overridden: here every block is adapted, or the last k in
the sweep. Backbones have random weights (``pretrained=False``: speed does not depend on the
values) and the adapters' parameters are moved off their init so that no zero path is skipped.
ViTs run at feature stride 16, as the detection configs (the patch-14 DINOv2 sees the image
resized by 14/16).

The stand-in head, identical for every method: per output level a 1x1 convolution to
``HEAD_WIDTH`` channels and the mean squared error against a fixed random target, summed over
levels; the adapters' auxiliary losses (``loss_route``, ``loss_prior_entropy``) are added, as
MMDetection adds them to a detector's loss.

How: each method of a backbone lives in its own worker process (forked from a forkserver that
has imported torch and moppa_det), so that its memory is its own; the parent drives rounds in
which every worker times one step in turn (the order rotating each round), so that drift of a
shared machine's load hits every method alike. ``--warmup`` untimed steps come first (their
memory counts: the first AdamW step allocates the optimizer's states). Training rounds run
first, then the inference rounds (so that inference caches are not invalidated by optimizer
steps in between). Times are medians over ``--repeats`` rounds.

Last-k sweep (``--last-k 1 2 4 8``, on ``--sweep-model``): the adapter methods with adapters in
the last k blocks only (over all blocks in forward order; on Swin across stages), so the
backward pass stops at the first adapted block; ``full`` trains only the last k blocks (and
what follows them: Swin's later patch mergings, the ViT's final norm). Each method's rows (k
and all blocks) run interleaved with each other, and ``*_vs_all`` is the ratio to the same
method with every block adapted, from the same run.

Example (the CPU run of the README):
    PYTHONPATH=. nice -n 10 python tools/analysis/benchmark_train.py \\
        --models vit_small_patch14_dinov2 swin_tiny_patch4_window7_224 --threads 1 \\
        --repeats 3 --warmup 1 --last-k 1 4 --sweep-methods moppa lora adaptformer full \\
        --out /tmp/bench_train_out
"""
from __future__ import annotations

import argparse
import copy
import csv
import ctypes
import gc
import inspect
import math
import multiprocessing as mp
import os
import resource
import statistics
import sys
import time
import traceback
from dataclasses import dataclass, field
from multiprocessing import forkserver
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from moppa_det.models.backbones import MoPPASwin, MoPPAViT
from moppa_det.models.backbones.base import TimmAdapterBackbone

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = REPO_ROOT / 'configs' / 'demo'
METHODS = ('moppa', 'moppa_paper', 'moppa_paper_recipe', 'lora', 'adaptformer', 'frozen', 'full')
ADAPTER_METHODS = ('moppa', 'moppa_paper', 'moppa_paper_recipe', 'lora', 'adaptformer')
MODELS = ('vit_small_patch14_dinov2', 'vit_base_patch16_224', 'swin_tiny_patch4_window7_224')
REFERENCE = 'lora'  # every time and memory is also printed as a ratio to this method's
HEAD_WIDTH = 64  # channels of the stand-in head's 1x1 convolutions
VIT_STRIDE = 16  # feature stride of the ViTs, as in the detection configs
ADAPTER_JITTER = 0.02  # std of the noise that moves adapter parameters off their init
MAIN_COLUMNS = ('model', 'input', 'method', 'blocks', 'trainable_params', 'train_ms',
                'train_vs_lora', 'train_mem_mb', 'mem_vs_lora', 'mem_vs_full', 'infer_ms',
                'infer_vs_lora', 'model_mb', 'build_transient_mb', 'mem_measure')
SWEEP_COLUMNS = ('model', 'input', 'method', 'k', 'blocks', 'trainable_params', 'train_ms',
                 'train_vs_all', 'train_mem_mb', 'mem_vs_all', 'model_mb',
                 'build_transient_mb', 'mem_measure')


# ------------------------------------------------------------------------------ methods
@dataclass(frozen=True)
class Method:
    """A method as its demo leaf defines it: the backbone's ``adapter`` and ``frozen``."""
    name: str
    adapter: Any
    frozen: bool


def load_method(name: str, config_dir: Path = CONFIG_DIR) -> Method:
    """``model.backbone.adapter`` / ``frozen`` of ``config_dir/<name>.py`` (per-adapter
    ``blocks`` dropped: the benchmark chooses the blocks)."""
    from mmengine.config import Config, ConfigDict

    backbone = Config.fromfile(str(config_dir / f'{name}.py')).model.backbone
    adapter = backbone.get('adapter', _default_of('adapter'))
    if isinstance(adapter, ConfigDict):
        adapter = adapter.to_dict()
    elif isinstance(adapter, (list, tuple)):
        adapter = [a.to_dict() if isinstance(a, ConfigDict) else a for a in adapter]
    for spec in adapter if isinstance(adapter, list) else [adapter]:
        if isinstance(spec, dict):
            spec.pop('blocks', None)
    return Method(name, adapter, bool(backbone.get('frozen', _default_of('frozen'))))


def _default_of(argument: str) -> Any:
    """The backbone's own default of ``argument`` (for a leaf that does not set it)."""
    return inspect.signature(TimmAdapterBackbone.__init__).parameters[argument].default


# ---------------------------------------------------------------------------- backbones
@dataclass(frozen=True)
class Spec:
    """Everything a worker needs to build one method's backbone and input.

    ``blocks``: adapted blocks (None: all); ``train_last``: for full fine-tuning, train only
    the last k blocks (None: all).
    """
    model: str
    method: Method
    batch: int
    size: tuple[int, int]
    device: str
    threads: int | None
    depth: int | None = None
    blocks: tuple[int, ...] | None = None
    train_last: int | None = None
    seed: int = 0

    @property
    def is_swin(self) -> bool:
        return 'swin' in self.model


def model_kwargs(model: str, depth: int | None) -> dict[str, Any] | None:
    """timm kwargs shortening ``model`` to ``depth`` blocks (Swin: at most that many per
    stage); None: the model as it is."""
    if depth is None:
        return None
    if 'swin' not in model:
        return dict(depth=depth)
    return dict(depths=tuple(min(d, depth) for d in stage_depths(model)))


def stage_depths(model: str, depth: int | None = None) -> list[int]:
    """Blocks per stage of ``model`` (a ViT: one stage), read from timm on the meta device."""
    import timm

    kwargs = model_kwargs(model, depth) or {}
    with torch.device('meta'):
        net = timm.create_model(model, pretrained=False, **kwargs)
    if hasattr(net, 'layers'):
        return [len(stage.blocks) for stage in net.layers]
    return [len(net.blocks)]


def build_backbone(spec: Spec) -> TimmAdapterBackbone:
    """The benchmarked backbone, in train(), adapter parameters off their init."""
    torch.manual_seed(spec.seed)  # the same pre-trained stand-in weights for every method
    kwargs: dict[str, Any] = dict(
        model_name=spec.model, pretrained=False, adapter=copy.deepcopy(spec.method.adapter),
        frozen=spec.method.frozen,
        adapter_blocks=None if spec.blocks is None else list(spec.blocks),
        model_kwargs=model_kwargs(spec.model, spec.depth))
    if not spec.is_swin:
        kwargs['feature_stride'] = VIT_STRIDE
    backbone = (MoPPASwin if spec.is_swin else MoPPAViT)(**kwargs)
    with torch.no_grad():
        for param in backbone.adapters.parameters():
            param.add_(torch.randn_like(param) * ADAPTER_JITTER)
    if spec.train_last is not None:
        train_only_last(backbone, spec.train_last)
    return backbone.to(spec.device).train()


def train_only_last(backbone: TimmAdapterBackbone, k: int) -> None:
    """Full fine-tuning of the last ``k`` blocks and of what follows them in the forward pass
    (the final norm; on Swin the patch mergings of later stages); the rest is frozen."""
    if backbone.frozen:
        raise ValueError('train_only_last needs a backbone built with frozen=False')
    trainable = {id(p) for p in backbone.model.parameters() if p.requires_grad}
    backbone.model.requires_grad_(False)
    sites = backbone.sites()[-k:]
    modules: list[nn.Module] = [site.block for site in sites]
    if backbone.final_norm() is not None:
        modules.append(backbone.final_norm())
    if isinstance(backbone, MoPPASwin):
        modules += [stage.downsample for index, stage in enumerate(backbone.model.layers)
                    if index > sites[0].stage]
    for module in modules:
        for param in module.parameters():
            param.requires_grad_(id(param) in trainable)  # unused modules stay frozen


class StandInHead(nn.Module):
    """The fixed head of every method: a 1x1 convolution per level and an MSE loss.

    Args:
        channels: Channels C_i of the backbone's output levels.
        width: Output channels of each convolution.
    """

    def __init__(self, channels: Sequence[int], width: int = HEAD_WIDTH) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(c, width, 1) for c in channels)
        self.targets: list[torch.Tensor] | None = None

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Sum over levels of the MSE between conv(f_i): (B, width, h_i, w_i) and a fixed
        random target of that shape (drawn at the first call, seed 0)."""
        outputs = [conv(f) for conv, f in zip(self.convs, features)]
        if self.targets is None:
            generator = torch.Generator().manual_seed(0)
            self.targets = [torch.randn(o.shape, generator=generator).to(o.device)
                            for o in outputs]
        return sum(nn.functional.mse_loss(o, t) for o, t in zip(outputs, self.targets))


def trainable_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


# ------------------------------------------------------------------------------- memory
class MemoryMeter:
    """Peak memory of a phase on top of what was allocated when :meth:`start` was called.

    CUDA: ``torch.cuda.max_memory_allocated`` (peak reset at start). CPU: peak resident set
    ``VmHWM``, reset at start by writing 5 to ``/proc/self/clear_refs`` (Linux >= 4.0); where
    that is refused, ``ru_maxrss``, whose peak may then be one from before the start (building
    the model): ``transient_bytes`` says by how much the peak before the start exceeded the
    resident set at start.
    """

    def __init__(self, device: str) -> None:
        self.cuda = device.startswith('cuda')
        self.measure = 'cuda max_memory_allocated'
        self.base = 0
        self.transient_bytes = 0

    def start(self) -> None:
        gc.collect()
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
            return
        _trim_heap()
        self.base = _status_bytes('VmRSS')
        self.transient_bytes = max(0, _maxrss_bytes() - self.base)
        try:
            with open('/proc/self/clear_refs', 'w') as file:
                file.write('5')
            self.measure, self.transient_bytes = 'cpu peak RSS (VmHWM reset)', 0
        except OSError:
            self.measure = 'cpu ru_maxrss'

    def peak_growth(self) -> int:
        """Bytes: peak since :meth:`start` minus what was allocated at start."""
        if self.cuda:
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated() - self.base
        peak = _status_bytes('VmHWM') if 'VmHWM' in self.measure else _maxrss_bytes()
        return peak - self.base


def _status_bytes(key: str) -> int:
    with open('/proc/self/status') as file:
        for line in file:
            if line.startswith(key + ':'):
                return int(line.split()[1]) * 1024  # kB
    raise KeyError(key)


def _maxrss_bytes() -> int:
    scale = 1 if sys.platform == 'darwin' else 1024  # macOS: bytes, Linux: KiB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def _trim_heap() -> None:
    """Returns freed heap memory to the OS, so the resident set at start is what is live."""
    try:
        ctypes.CDLL('libc.so.6').malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _fixed_mmap_threshold() -> None:
    """Large blocks (>= 128 KiB) always mmap'ed and unmapped when freed (glibc otherwise raises
    the threshold after frees and keeps large freed blocks in the heap): the resident set then
    follows the live tensors, and the peak measures them, not the allocator's slack."""
    try:
        ctypes.CDLL('libc.so.6').mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


# ------------------------------------------------------------------------------- worker
class Trainer:
    """One method's backbone, head, AdamW and input, in the worker process."""

    def __init__(self, spec: Spec) -> None:
        self.device = torch.device(spec.device)
        self.backbone = build_backbone(spec)
        self.head = StandInHead(self.backbone.out_channels).to(self.device)
        params = [p for m in (self.backbone, self.head) for p in m.parameters()
                  if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.05)
        generator = torch.Generator().manual_seed(spec.seed)
        self.images = torch.randn(spec.batch, 3, *spec.size,
                                  generator=generator).to(self.device)

    def _sync(self) -> None:
        if self.device.type == 'cuda':
            torch.cuda.synchronize()

    def loss(self) -> torch.Tensor:
        """The stand-in head's loss on the (B, 3, H, W) images plus the adapters' losses."""
        loss = self.head(self.backbone(self.images))
        for key, value in self.backbone.auxiliary_losses().items():
            if 'loss' in key:  # what MMEngine sums into the training loss
                loss = loss + value
        return loss

    def prime(self) -> None:
        """One forward and backward, gradients then dropped and weights unchanged: the kernels'
        code and the lazily allocated thread buffers are paged in before the memory baseline,
        so that the training memory does not count them."""
        self.loss().backward()
        self.optimizer.zero_grad(set_to_none=True)

    def train_step(self) -> float:
        """Seconds of zero_grad, forward, loss, backward and AdamW step."""
        self._sync()
        start = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        self.loss().backward()
        self.optimizer.step()
        self._sync()
        return time.perf_counter() - start

    def infer_step(self) -> float:
        """Seconds of an eval() backbone forward under no_grad."""
        self.backbone.eval()
        self._sync()
        start = time.perf_counter()
        with torch.no_grad():
            self.backbone(self.images)
        self._sync()
        return time.perf_counter() - start


def worker_main(conn: Any, spec: Spec) -> None:
    """Worker process: builds ``spec``'s trainer, then answers commands until 'stop'.

    Commands: 'train' and 'infer' (answer: seconds), 'memory' (answer: peak growth in bytes
    since the trainer was built; call it after the training steps).
    """
    try:
        _fixed_mmap_threshold()
        if spec.threads:
            torch.set_num_threads(spec.threads)
        trainer = Trainer(spec)
        trainer.prime()
        meter = MemoryMeter(spec.device)
        meter.start()
        conn.send(('ok', dict(params=trainable_count(trainer.backbone), model_bytes=meter.base,
                              threads=torch.get_num_threads())))
        actions: dict[str, Callable[[], Any]] = dict(
            train=trainer.train_step, infer=trainer.infer_step,
            memory=lambda: dict(bytes=meter.peak_growth(), measure=meter.measure,
                                transient=meter.transient_bytes))
        while (command := conn.recv()) != 'stop':
            conn.send(('ok', actions[command]()))
    except Exception:  # noqa: BLE001 - reported to the parent, which raises it
        conn.send(('error', traceback.format_exc()))
    finally:
        conn.close()


class Worker:
    """Parent-side handle of one worker process."""

    def __init__(self, context: Any, spec: Spec) -> None:
        self.conn, child = context.Pipe()
        self.process = context.Process(target=worker_main, args=(child, spec), daemon=True)
        self.process.start()
        child.close()
        self.info: dict[str, Any] = self._answer()

    def call(self, command: str) -> Any:
        self.conn.send(command)
        return self._answer()

    def _answer(self) -> Any:
        try:
            status, payload = self.conn.recv()
        except EOFError:
            self.process.join(5)
            raise RuntimeError(f'benchmark worker died (exit code {self.process.exitcode})'
                               ) from None
        if status == 'error':
            raise RuntimeError(f'benchmark worker failed:\n{payload}')
        return payload

    def stop(self) -> None:
        try:
            self.conn.send('stop')
        except (BrokenPipeError, OSError):
            pass
        self.process.join(30)
        if self.process.is_alive():
            self.process.terminate()


def worker_context() -> Any:
    """A forkserver that has imported torch and moppa_det: each worker starts in a fraction of
    a second, in a process of its own (its own memory peak)."""
    context = mp.get_context('forkserver')
    context.set_forkserver_preload(['__main__', 'moppa_det.models.backbones'])
    forkserver.ensure_running()  # imports meanwhile (the parent reads the configs)
    return context


# ------------------------------------------------------------------------------- rounds
@dataclass
class Group:
    """Workers measured together: times (seconds per round), memory, info per key."""
    workers: dict[str, Worker]
    times: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    memory: dict[str, dict[str, Any]] = field(default_factory=dict)


def timed_rounds(workers: dict[str, Worker], command: str, repeats: int, warmup: int
                 ) -> dict[str, list[float]]:
    """Seconds of ``command`` per worker and round; each round runs every worker once, the
    order rotating by one each round."""
    names = list(workers)
    for _ in range(warmup):
        for name in names:
            workers[name].call(command)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(repeats):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].append(workers[name].call(command))
    return times


def run_group(specs: dict[str, Spec], args: argparse.Namespace, infer: bool) -> Group:
    """Builds one worker per spec (one at a time), runs the training rounds, reads the memory,
    then the inference rounds (if ``infer``), and stops the workers."""
    context = worker_context()
    workers: dict[str, Worker] = {}
    try:
        for key, spec in specs.items():
            workers[key] = Worker(context, spec)
        group = Group(workers)
        group.times['train'] = timed_rounds(workers, 'train', args.repeats, args.warmup)
        group.memory = {key: worker.call('memory') for key, worker in workers.items()}
        if infer:
            group.times['infer'] = timed_rounds(workers, 'infer', args.repeats, args.warmup)
        return group
    finally:
        for worker in workers.values():
            worker.stop()


def median_ratio(times: list[float], reference: list[float]) -> float:
    """Median over rounds of time / reference time in the same round."""
    return statistics.median(t / r for t, r in zip(times, reference))


def memory_ratio(memory: dict[str, Any], reference: dict[str, Any] | None) -> float:
    if reference is None or reference['bytes'] <= 0:
        return math.nan
    return memory['bytes'] / reference['bytes']


# ------------------------------------------------------------------------------- tables
def input_label(args: argparse.Namespace) -> str:
    return f'{args.batch}x3x{args.size[0]}x{args.size[1]}'


def blocks_label(blocks: Sequence[int] | None, count: int) -> str:
    if blocks is None:
        return f'all {count}'
    return f'{blocks[0]}-{blocks[-1]}' if len(blocks) > 1 else str(blocks[0])


def method_rows(model: str, methods: dict[str, Method], args: argparse.Namespace
                ) -> list[dict[str, Any]]:
    """The main table's rows of one backbone (every method, every block adapted)."""
    specs = {name: Spec(model, method, args.batch, tuple(args.size), args.device, args.threads,
                        depth=args.depth) for name, method in methods.items()}
    group = run_group(specs, args, infer=True)
    count = sum(stage_depths(model, args.depth))
    rows = []
    for name in methods:
        worker, memory = group.workers[name], group.memory[name]
        train, infer = group.times['train'], group.times['infer']
        rows.append(dict(
            model=model, input=input_label(args), method=name, blocks=blocks_label(None, count),
            trainable_params=worker.info['params'],
            train_ms=statistics.median(train[name]) * 1e3,
            train_vs_lora=median_ratio(train[name], train[REFERENCE]),
            train_mem_mb=memory['bytes'] / 2**20,
            mem_vs_lora=memory_ratio(memory, group.memory[REFERENCE]),
            mem_vs_full=memory_ratio(memory, group.memory.get('full')),
            infer_ms=statistics.median(infer[name]) * 1e3,
            infer_vs_lora=median_ratio(infer[name], infer[REFERENCE]),
            model_mb=worker.info['model_bytes'] / 2**20,
            build_transient_mb=memory['transient'] / 2**20, mem_measure=memory['measure']))
    args.worker_threads = group.workers[REFERENCE].info['threads']
    return rows


def sweep_rows(model: str, methods: dict[str, Method], args: argparse.Namespace
               ) -> list[dict[str, Any]]:
    """Last-k rows: per method, k in ``args.last_k`` and all blocks, interleaved together."""
    count = sum(stage_depths(model, args.depth))
    ks = sorted({min(max(k, 1), count) for k in args.last_k} | {count})
    rows = []
    for name, method in methods.items():
        specs = {}
        for k in ks:
            last = tuple(range(count - k, count))
            full = not method.frozen and method.adapter is None
            # k = all blocks is the method itself (full: patch embedding included)
            specs[str(k)] = Spec(model, method, args.batch, tuple(args.size), args.device,
                                 args.threads, depth=args.depth,
                                 blocks=None if full or k == count else last,
                                 train_last=k if full and k < count else None)
        group = run_group(specs, args, infer=False)
        train, reference = group.times['train'], str(count)
        for k in ks:
            worker, memory = group.workers[str(k)], group.memory[str(k)]
            rows.append(dict(
                model=model, input=input_label(args), method=name, k=k,
                blocks=blocks_label(tuple(range(count - k, count)), count),
                trainable_params=worker.info['params'],
                train_ms=statistics.median(train[str(k)]) * 1e3,
                train_vs_all=median_ratio(train[str(k)], train[reference]),
                train_mem_mb=memory['bytes'] / 2**20,
                mem_vs_all=memory_ratio(memory, group.memory[reference]),
                model_mb=worker.info['model_bytes'] / 2**20,
                build_transient_mb=memory['transient'] / 2**20, mem_measure=memory['measure']))
    return rows


def fmt(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return '–'
        return f'{value:.3f}' if abs(value) < 10 else f'{value:,.0f}'
    if isinstance(value, int):
        return f'{value:,}'
    return str(value)


def markdown_table(rows: list[dict[str, Any]], columns: Sequence[str]) -> list[str]:
    lines = ['| ' + ' | '.join(columns) + ' |', '|' + '---|' * len(columns)]
    lines += ['| ' + ' | '.join(fmt(row[c]) for c in columns) + ' |' for row in rows]
    return lines


def markdown(header: str, main: list[dict[str, Any]], sweep: list[dict[str, Any]]) -> str:
    """The report: header line, the methods table, the sweep table (if any)."""
    shown = ('model', 'method', 'trainable_params', 'train_ms', 'train_vs_lora',
             'train_mem_mb', 'mem_vs_lora', 'mem_vs_full', 'infer_ms', 'infer_vs_lora')
    measures = sorted({row['mem_measure'] for row in main + sweep})
    lines = [header, '']
    if main:
        lines += ['Every method in every block; `*_vs_lora`: ratio to LoRA in the same run '
                  '(times: median over rounds of the per-round ratio).', '']
        lines += markdown_table(main, shown) + ['']
    if sweep:
        lines += [f'Last-k sweep on {sweep[0]["model"]}: adapters (full: training) only in the '
                  'last k blocks; `*_vs_all`: ratio to the same method in all blocks, same run.',
                  '']
        lines += markdown_table(sweep, ('model', 'method', 'k', 'blocks', 'trainable_params',
                                        'train_ms', 'train_vs_all', 'train_mem_mb',
                                        'mem_vs_all')) + ['']
    transient = max(row['build_transient_mb'] for row in main + sweep)
    lines.append(f'train_mem_mb: peak memory of training above the built model, measured as '
                 f'{" / ".join(measures)}; largest build transient {transient:.1f} MB.')
    return '\n'.join(lines) + '\n'


def write_csv(path: Path, rows: list[dict[str, Any]], columns: Sequence[str]) -> None:
    with open(path, 'w', newline='') as file:
        writer = csv.DictWriter(file, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)


# --------------------------------------------------------------------------------- main
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--models', nargs='+', default=list(MODELS), help='timm names')
    parser.add_argument('--methods', nargs='+', default=list(METHODS), choices=METHODS,
                        help=f'{REFERENCE} is always added: the ratios refer to it')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--size', type=int, nargs=2, default=None, metavar=('H', 'W'),
                        help='default 512 512 on a CPU, 1024 1024 on CUDA')
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--depth', type=int, default=None,
                        help='blocks of the ViT (Swin: at most this many per stage)')
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--threads', type=int, default=None, help='torch threads per worker')
    parser.add_argument('--last-k', type=int, nargs='*', default=[],
                        help='last-k sweep (none: no sweep)')
    parser.add_argument('--sweep-model', default=MODELS[0])
    parser.add_argument('--sweep-methods', nargs='+', default=[*ADAPTER_METHODS, 'full'],
                        choices=[*ADAPTER_METHODS, 'full'])
    parser.add_argument('--no-main', action='store_true', help='only the last-k sweep')
    parser.add_argument('--configs', type=Path, default=CONFIG_DIR,
                        help='directory of the method leaves <method>.py')
    parser.add_argument('--out', type=Path, default=None, help='directory for CSV + markdown')
    args = parser.parse_args(argv)
    if args.size is None:
        args.size = (1024, 1024) if args.device.startswith('cuda') else (512, 512)
    if REFERENCE not in args.methods:
        args.methods.append(REFERENCE)
    return args


def main(argv: Sequence[str] | None = None) -> tuple[list[dict], list[dict]]:
    """Runs the benchmark; returns the main rows and the sweep rows."""
    args = parse_args(argv)
    worker_context()  # start the forkserver's imports now
    args.worker_threads = args.threads or torch.get_num_threads()
    load_start = os.getloadavg()[0]
    main_rows: list[dict[str, Any]] = []
    if not args.no_main:
        methods = {name: load_method(name, args.configs) for name in args.methods}
        for model in args.models:
            main_rows += method_rows(model, methods, args)
    sweep: list[dict[str, Any]] = []
    if args.last_k:
        methods = {name: load_method(name, args.configs) for name in args.sweep_methods}
        sweep = sweep_rows(args.sweep_model, methods, args)
    header = (f'# {", ".join(args.models if main_rows else [args.sweep_model])} '
              f'depth={args.depth or "full"} on {args.device}, input {input_label(args)}, '
              f'torch {torch.__version__}, {args.worker_threads} threads, {os.cpu_count()} CPUs, '
              f'load average {load_start:.1f} at start / {os.getloadavg()[0]:.1f} at end, '
              f'{args.repeats} repeats after {args.warmup} warm-up, methods interleaved')
    report = markdown(header, main_rows, sweep)
    print(report)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / 'benchmark_train.md').write_text(report)
        if main_rows:
            write_csv(args.out / 'benchmark_train.csv', main_rows, MAIN_COLUMNS)
        if sweep:
            write_csv(args.out / 'benchmark_train_last_k.csv', sweep, SWEEP_COLUMNS)
    return main_rows, sweep


if __name__ == '__main__':
    main()
