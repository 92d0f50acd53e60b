"""Trains every method under one budget on the demo's toy set and compares their mAP.

Every method is a demo leaf (``configs/demo/<method>.py``: the frozen DINOv2 ViT-S/14 with
the same 4 blocks adapted, Mask R-CNN, AdamW); each run is ``tools/train.py`` on that leaf with
the same budget written over it: iterations, batch, image size, warm-up + cosine schedule,
learning rate and seed. Nothing differs between methods but ``model.backbone``.

Runs:
- ``val`` runs (the reported ones): train on the toy train set, evaluate on its val set.
- ``tune`` runs (``--lr-grid``): train on 80 % of the train images, evaluate on the other 20 %
  (the val set is never looked at); ``sensitivity.md`` tabulates their box mAP per method and
  learning rate, and ``--select-lr`` makes each method's ``val`` runs use its best rate there.

Resumable: each finished run leaves ``result.json`` in its directory and is not trained again
(rerunning the command only trains what is missing and rewrites the tables); a run stopped
half-way is trained again from the start. A finished run with another budget stops the tool
rather than being mixed in. Writes under ``--work-dir``: ``runs.csv`` (one row per run),
``summary.csv`` and ``summary.md`` (mean +- std over seeds), ``map_vs_params.png``.

Examples:
    # the default matrix: 7 methods x 3 seeds (README: its wall time on a 2-core CPU)
    python tools/analysis/compare_methods.py
    # learning-rate sensitivity on the tune split, then val runs at each method's best rate
    python tools/analysis/compare_methods.py --lr-grid 3e-4 1e-3 3e-3 --select-lr
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import random
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from moppa_det.engine.checkpoint_files import commit, partial_name, write_text_atomic  # noqa: E402
from tools.demo import DEFAULT_DATA_ROOT, DEMO_NUM_TRAIN, latest_scalars, prepare_data  # noqa: E402
from tools.progress import clock, run_with_progress  # noqa: E402

METHODS = ('moppa', 'moppa_paper', 'moppa_paper_recipe', 'lora', 'adaptformer', 'frozen', 'full')
METRICS = ('bbox_mAP', 'bbox_mAP_50', 'bbox_mAP_s', 'bbox_mAP_m', 'segm_mAP', 'segm_mAP_s',
           'segm_mAP_m')
TUNE_FRACTION = 0.2


@dataclass(frozen=True)
class Budget:
    """What every run of a comparison shares (besides its method, seed and learning rate)."""

    iters: int
    warmup_iters: int
    batch_size: int
    image_side: int


@dataclass(frozen=True)
class Run:
    """One training run: ``split`` is 'val' (reported) or 'tune' (learning-rate selection)."""

    method: str
    seed: int
    lr: float
    split: str

    @property
    def name(self) -> str:
        return f'{self.split}/{self.method}/lr{self.lr:g}_seed{self.seed}'


@dataclass(frozen=True)
class Split:
    """Annotation files and image folder of one split's training and evaluation sets."""

    train_ann: Path
    eval_ann: Path
    eval_images: str  # folder under the data root: 'val/' or, for the tune split, 'train/'


def make_splits(data_root: Path, work_dir: Path) -> dict[str, Split]:
    """The 'val' split of the toy set and a 'tune' split carved from its train images.

    The tune split holds out ``TUNE_FRACTION`` of the train images (a seeded shuffle of their
    ids), written once under ``work_dir/splits``; learning rates chosen on it never saw val.
    """
    annotations = data_root / 'annotations'
    splits = {'val': Split(annotations / 'instances_train.json',
                           annotations / 'instances_val.json', 'val/')}
    out = work_dir / 'splits'
    train_sub, tune = out / 'instances_train_sub.json', out / 'instances_tune.json'
    if not (train_sub.is_file() and tune.is_file()):
        coco = json.loads((annotations / 'instances_train.json').read_text())
        ids = sorted(image['id'] for image in coco['images'])
        random.Random(0).shuffle(ids)
        held_out = set(ids[:max(1, round(len(ids) * TUNE_FRACTION))])
        out.mkdir(parents=True, exist_ok=True)
        for path, keep in ((train_sub, lambda i: i not in held_out), (tune, held_out.__contains__)):
            subset = dict(coco, images=[im for im in coco['images'] if keep(im['id'])],
                          annotations=[a for a in coco['annotations'] if keep(a['image_id'])])
            write_text_atomic(str(path), json.dumps(subset))
    splits['tune'] = Split(train_sub, tune, 'train/')
    return splits


def run_config(leaf: Path, run: Run, budget: Budget, split: Split, data_root: Path,
               run_dir: Path) -> Any:
    """The leaf config with the comparison's budget, data split, seed and rate written over it.

    Returns:
        The ``mmengine.Config`` of the run.
    """
    from mmengine.config import Config

    cfg = Config.fromfile(str(leaf))
    root = f'{data_root.resolve()}/'
    train, evaluate = cfg.train_dataloader, cfg.val_dataloader
    train.batch_size = budget.batch_size
    train.dataset.update(data_root=root, ann_file=str(split.train_ann.resolve()),
                         data_prefix=dict(img='train/'))
    evaluate.dataset.update(data_root=root, ann_file=str(split.eval_ann.resolve()),
                            data_prefix=dict(img=split.eval_images))
    for pipeline in (train.dataset.pipeline, evaluate.dataset.pipeline):
        for step in pipeline:
            if step['type'] == 'Resize':
                step['scale'] = (budget.image_side, budget.image_side)
    cfg.test_dataloader = evaluate
    cfg.val_evaluator.ann_file = str(split.eval_ann.resolve())
    cfg.test_evaluator = cfg.val_evaluator
    cfg.train_cfg.update(max_iters=budget.iters, val_interval=budget.iters)
    cfg.param_scheduler = [
        dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0,
             end=budget.warmup_iters),
        dict(type='CosineAnnealingLR', by_epoch=False, begin=budget.warmup_iters,
             end=budget.iters, eta_min_ratio=0.05)]
    cfg.optim_wrapper.optimizer.lr = run.lr
    cfg.randomness = dict(seed=run.seed)
    cfg.default_hooks.checkpoint.update(interval=budget.iters, max_keep_ckpts=1)
    log_every = min(10, budget.iters)  # at least one logged iteration time per run
    cfg.default_hooks.logger.interval = log_every
    cfg.log_processor.window_size = log_every
    cfg.work_dir = str(run_dir)
    return cfg


def train(run: Run, leaf: Path, budget: Budget, split: Split, data_root: Path,
          run_dir: Path) -> dict[str, Any]:
    """Trains and evaluates one run with tools/train.py; returns its result row.

    A run that fails (e.g. a non-finite loss) is a result too: its row says 'failed' and holds
    the end of its output, so the comparison goes on with the other runs.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    config = run_dir / 'config.py'
    run_config(leaf, run, budget, split, data_root, run_dir).dump(str(config))
    command = [sys.executable, 'tools/train.py', str(config), '--work-dir', str(run_dir)]
    row: dict[str, Any] = dict(asdict(run), **asdict(budget), status='finished', error='',
                            note='')
    try:
        row['wall_seconds'] = run_with_progress(command, run.name, run_dir / 'console.txt',
                                                cwd=ROOT)
    except SystemExit as failure:  # run_with_progress's failure, with the output's tail
        return dict(row, status='failed', error=str(failure)[-2000:])
    try:
        metrics = latest_scalars(run_dir, 'coco/bbox_mAP')
    except FileNotFoundError:
        # MMDetection's CocoMetric logs nothing when no box passes the test score threshold:
        # the run finished and detects nothing, which COCO scores as 0 (not a failure).
        metrics, row['note'] = {}, 'no detection above the score threshold: mAP 0'
    row.update({name: metrics.get(f'coco/{name}', 0.0 if not metrics else math.nan)
                for name in METRICS})
    row['iter_seconds'] = median_iteration_seconds(run_dir)
    return row


def median_iteration_seconds(run_dir: Path) -> float:
    """The median of the logged training iteration times (data loading included)."""
    records = []
    for scalars in run_dir.glob('*/vis_data/scalars.json'):
        records += [json.loads(line) for line in scalars.read_text().splitlines()]
    times = [r['time'] for r in records if 'time' in r and 'loss' in r]
    return statistics.median(times) if times else math.nan


def parameter_counts(leaf: Path) -> dict[str, int]:
    """Trainable parameters of a leaf's detector: its backbone's and all of them."""
    from tools.analysis.parameter_table import count_parameters
    counts = count_parameters(str(leaf))
    return dict(backbone_trainable=counts['backbone_trainable'], trainable=counts['trainable'])


def finished_result(run_dir: Path, budget: Budget) -> dict[str, Any] | None:
    """The result of a run already done with this budget, None when it has not finished.

    Raises:
        SystemExit: The run finished with another budget (its results would be mixed in).
    """
    result = run_dir / 'result.json'
    if not result.is_file():
        return None
    row = json.loads(result.read_text())
    trained_with = {key: row.get(key) for key in asdict(budget)}
    if trained_with != asdict(budget):
        raise SystemExit(f'{run_dir} was trained with another budget '
                         f'({trained_with}, now {asdict(budget)}): '
                         'pass another --work-dir, or remove that run to train it again')
    return row


def execute(runs: list[Run], args: argparse.Namespace, budget: Budget,
            splits: dict[str, Split]) -> list[dict[str, Any]]:
    """Trains the runs that have no result yet; returns every run's result row."""
    rows, trained_seconds, trained = [], 0.0, 0
    counts: dict[str, dict[str, int]] = {}  # built only for methods that still train
    for index, run in enumerate(runs):
        run_dir = args.work_dir / 'runs' / run.name
        row = finished_result(run_dir, budget)
        if row is None:
            start = time.time()
            row = train(run, args.config_dir / f'{run.method}.py', budget, splits[run.split],
                        args.data_root, run_dir)
            if run.method not in counts:
                counts[run.method] = parameter_counts(args.config_dir / f'{run.method}.py')
            row.update(counts[run.method])
            write_text_atomic(str(run_dir / 'result.json'), json.dumps(row, indent=1))
            trained_seconds, trained = trained_seconds + time.time() - start, trained + 1
            left = sum(1 for r in runs[index + 1:]
                       if not (args.work_dir / 'runs' / r.name / 'result.json').is_file())
            print(f'[{index + 1}/{len(runs)}] {run.name}: {row["status"]}, box mAP '
                  f'{row.get("bbox_mAP", math.nan):.3f}; about '
                  f'{clock(left * trained_seconds / trained)} left', flush=True)
        rows.append(row)
    return rows


def planned_runs(args: argparse.Namespace, lrs: dict[str, float], split: str,
                 seeds: Sequence[int]) -> list[Run]:
    """Runs ordered seed by seed, so that a partial comparison covers every method."""
    return [Run(method, seed, lrs[method], split) for seed in seeds for method in args.methods]


def best_rates(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Each method's learning rate with the highest mean tune box mAP (failed runs: 0)."""
    scores: dict[tuple[str, float], list[float]] = {}
    for row in rows:
        finished = row['status'] == 'finished' and not math.isnan(row['bbox_mAP'])
        scores.setdefault((row['method'], row['lr']), []).append(
            row['bbox_mAP'] if finished else 0.0)
    best: dict[str, tuple[float, float]] = {}
    for (method, lr), values in scores.items():
        mean = statistics.fmean(values)
        if method not in best or mean > best[method][0]:
            best[method] = (mean, lr)
    return {method: lr for method, (_, lr) in best.items()}


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value) of the finite values."""
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarize(rows: list[dict[str, Any]], methods: Sequence[str]) -> list[dict[str, Any]]:
    """One row per method: parameters, mean and std of each metric over its finished seeds."""
    summary = []
    for method in methods:
        mine = [r for r in rows if r['method'] == method]
        if not mine:
            continue
        done = [r for r in mine if r['status'] == 'finished']
        entry: dict[str, Any] = dict(method=method, lr=mine[0]['lr'],
                                     backbone_trainable=mine[0]['backbone_trainable'],
                                     trainable=mine[0]['trainable'], seeds=len(done),
                                     failed=len(mine) - len(done),
                                     no_detections=sum(1 for r in done if r.get('note')))
        for name in METRICS + ('wall_seconds', 'iter_seconds'):
            entry[f'{name}_mean'], entry[f'{name}_std'] = mean_std(
                [float(r.get(name, math.nan)) for r in done])
        summary.append(entry)
    return summary


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """Rows as CSV (columns: the union of the rows' keys, in first-seen order)."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    text = io.StringIO(newline='')
    writer = csv.DictWriter(text, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(str(path), text.getvalue())


def summary_markdown(summary: list[dict[str, Any]]) -> str:
    """The comparison table: mean +- std over seeds."""
    def cell(entry: dict[str, Any], name: str) -> str:
        mean, std = entry[f'{name}_mean'], entry[f'{name}_std']
        return 'failed' if math.isnan(mean) else f'{mean:.3f} ± {std:.3f}'

    lines = ['| method | trainable backbone params | all trainable params | box mAP | mask mAP | '
             'box mAP_s | box mAP_m | s/iter | seeds |', '|---|---:|---:|---|---|---|---|---:|---|']
    for e in summary:
        seeds = f'{e["seeds"]}' + (f' ({e["failed"]} failed)' if e['failed'] else '') + (
            f' ({e["no_detections"]} detected nothing)' if e['no_detections'] else '')
        lines.append(f'| {e["method"]} | {e["backbone_trainable"]:,} | {e["trainable"]:,} | '
                     f'{cell(e, "bbox_mAP")} | {cell(e, "segm_mAP")} | {cell(e, "bbox_mAP_s")} | '
                     f'{cell(e, "bbox_mAP_m")} | {e["iter_seconds_mean"]:.2f} | {seeds} |')
    return '\n'.join(lines)


def sensitivity_markdown(rows: list[dict[str, Any]], methods: Sequence[str]) -> str:
    """Tune-split box mAP per method (rows) and learning rate (columns)."""
    rates = sorted({row['lr'] for row in rows})
    lines = ['| method | ' + ' | '.join(f'lr {lr:g}' for lr in rates) + ' |',
             '|---|' + '---|' * len(rates)]
    for method in methods:
        cells = []
        for lr in rates:
            values = [r['bbox_mAP'] if r['status'] == 'finished' else math.nan
                      for r in rows if r['method'] == method and r['lr'] == lr]
            mean, _ = mean_std(values)
            cells.append('–' if not values else 'failed' if math.isnan(mean) else f'{mean:.3f}')
        lines.append(f'| {method} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def plot(summary: list[dict[str, Any]], path: Path, title: str) -> None:
    """Box and mask mAP (mean, std error bars) against trainable backbone parameters."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharex=True)
    for axis, metric, label in zip(axes, ('bbox_mAP', 'segm_mAP'), ('box mAP', 'mask mAP')):
        for entry in summary:
            if math.isnan(entry[f'{metric}_mean']):
                continue
            axis.errorbar(entry['backbone_trainable'], entry[f'{metric}_mean'],
                          yerr=entry[f'{metric}_std'], fmt='o', capsize=4)
            axis.annotate(entry['method'], (entry['backbone_trainable'],
                                            entry[f'{metric}_mean']),
                          textcoords='offset points', xytext=(6, 4), fontsize=8)
        # symlog: the frozen backbone's 0 trainable parameters stay on the axis.
        axis.set_xscale('symlog', linthresh=1e4)
        axis.set_xlabel('trainable backbone parameters')
        axis.set_ylabel(f'{label} (mean ± std over seeds)')
        axis.grid(alpha=0.3)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    temporary = path.with_name(partial_name(path.name))
    figure.savefig(temporary, dpi=120, format='png')
    plt.close(figure)
    commit(str(temporary), str(path))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    class Formatter(argparse.RawDescriptionHelpFormatter,
                    argparse.ArgumentDefaultsHelpFormatter):
        """The module docstring as written, and every option's default."""

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=Formatter)
    parser.add_argument('--methods', nargs='+', default=list(METHODS),
                        help='leaves of --config-dir to compare')
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2],
                        help='one val run per method and seed')
    parser.add_argument('--iters', type=int, default=300, help='training iterations per run')
    parser.add_argument('--warmup-iters', type=int, default=30,
                        help='linear warm-up, then cosine decay to 5 %% of the rate')
    parser.add_argument('--batch-size', type=int, default=2, help='training images per step')
    parser.add_argument('--image-side', type=int, default=256,
                        help='images resized to fit this square (keeping their ratio)')
    parser.add_argument('--lr', type=float, default=1e-3,
                        help="every method's learning rate (the demo's)")
    parser.add_argument('--lr-grid', type=float, nargs='+', default=[],
                        help='learning rates of the tune-split sensitivity runs (first seed)')
    parser.add_argument('--select-lr', action='store_true',
                        help="val runs at each method's best --lr-grid rate on the tune split")
    parser.add_argument('--config-dir', type=Path, default=ROOT / 'configs/demo',
                        help='where the method leaves <method>.py are')
    parser.add_argument('--data-root', type=Path, default=DEFAULT_DATA_ROOT,
                        help='the toy set, made there when missing (as make demo makes it)')
    parser.add_argument('--num-train', type=int, default=DEMO_NUM_TRAIN,
                        help='toy training images (when the toy set is made)')
    parser.add_argument('--num-val', type=int, default=50,
                        help='toy val images (when the toy set is made)')
    parser.add_argument('--work-dir', type=Path, default=ROOT / 'work_dirs/compare',
                        help='runs, tables and the plot')
    args = parser.parse_args(argv)
    missing = [m for m in args.methods if not (args.config_dir / f'{m}.py').is_file()]
    if missing:
        parser.error(f'no leaf config for {missing} in {args.config_dir} '
                     f'(has: {sorted(p.stem for p in args.config_dir.glob("*.py"))})')
    if args.select_lr and not args.lr_grid:
        parser.error('--select-lr needs --lr-grid')
    if not 0 < args.warmup_iters < args.iters:
        parser.error(f'--warmup-iters must be in (0, --iters={args.iters})')
    return args


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Runs the comparison; returns the summary rows."""
    args = parse_args(argv)
    budget = Budget(args.iters, args.warmup_iters, args.batch_size, args.image_side)
    prepare_data(args.data_root, args.num_train, args.num_val)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    splits = make_splits(args.data_root, args.work_dir)
    rates = {method: args.lr for method in args.methods}
    if args.lr_grid:
        tune_runs = [Run(method, args.seeds[0], lr, 'tune')
                     for lr in args.lr_grid for method in args.methods]
        tune_rows = execute(tune_runs, args, budget, splits)
        write_csv(args.work_dir / 'sensitivity.csv', tune_rows)
        table = sensitivity_markdown(tune_rows, args.methods)
        write_text_atomic(str(args.work_dir / 'sensitivity.md'), table + '\n')
        print('\ntune-split box mAP (learning-rate sensitivity):\n' + table)
        if args.select_lr:
            rates = best_rates(tune_rows)
    rows = execute(planned_runs(args, rates, 'val', args.seeds), args, budget, splits)
    write_csv(args.work_dir / 'runs.csv', rows)
    summary = summarize(rows, args.methods)
    write_csv(args.work_dir / 'summary.csv', summary)
    table = summary_markdown(summary)
    write_text_atomic(str(args.work_dir / 'summary.md'), table + '\n')
    plot(summary, args.work_dir / 'map_vs_params.png',
         f'{len(args.seeds)} seeds, {budget.iters} iterations, batch {budget.batch_size}, '
         f'{budget.image_side} px, ' + ('each method at its tune-split learning rate'
                                        if args.select_lr else f'lr {args.lr:g} for all'))
    print('\n' + table + f'\n\nwritten: {args.work_dir}/{{runs,summary}}.csv, summary.md, '
          'map_vs_params.png')
    return summary


if __name__ == '__main__':
    main()
