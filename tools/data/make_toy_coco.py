"""Generate a small, seeded COCO-format instance segmentation dataset ("toy COCO").

The scenes (tools/data/toy_shapes.py): a few shapes of the classes in :data:`CLASSES` on a
textured, cluttered background, with occlusions; every annotation describes the *visible* part
of its object only, and no shape in an image is left unlabelled. Images are square, or with
``--mixed-sizes`` a seeded mix of landscape, portrait and square images whose long side is
``--img-size`` (256x192 / 192x256 / 256x256 for 256, like COCO's 640x480 / 480x640 mix), so
that detection batches get padded.

Masks are stored as compressed COCO RLE (``{'size': [h, w], 'counts': str}``), which pycocotools
and MMDetection's ``LoadAnnotations`` (default ``poly2mask=True``) read directly. RLE rather than
polygons because an occluded mask can have holes, which COCO polygons (a union of rings) cannot
express, and because re-rasterised polygons would make touching visible masks overlap.

Layout (what MMDetection's ``CocoDataset`` reads)::

    OUT/annotations/instances_train.json   OUT/train/000000.jpg ...
    OUT/annotations/instances_val.json     OUT/val/000000.jpg ...

Usage::

    python tools/data/make_toy_coco.py --out data/toy_coco --num-train 200 --num-val 50
    python tools/data/make_toy_coco.py --out data/toy_coco_mixed --mixed-sizes
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import numpy as np
import pycocotools.mask as mask_utils
from PIL import Image

if not __package__:  # run as a script: make the repository's ``tools`` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tools.data.toy_shapes import CLASSES, MIXED_SHAPES, ToyConfig, render_image

SPLITS: tuple[str, ...] = ('train', 'val')
__all__ = ['CLASSES', 'MIXED_SHAPES', 'SPLITS', 'ToyConfig', 'annotation_path', 'dataset_status',
           'generator_record', 'main', 'make_dataset', 'read_toy_info', 'render_image']


# ----------------------------------------------------------------------------- COCO files
def _annotation(mask: np.ndarray, label: int, image_id: int, ann_id: int) -> dict:
    """COCO annotation for one visible mask, with bbox and area taken from its RLE."""
    rle = mask_utils.encode(np.asfortranarray(mask, dtype=np.uint8))
    rle['counts'] = rle['counts'].decode('ascii')  # JSON needs str, pycocotools accepts it
    return {
        'id': ann_id,
        'image_id': image_id,
        'category_id': label + 1,
        'segmentation': rle,
        'area': int(mask_utils.area(rle)),
        'bbox': [float(v) for v in mask_utils.toBbox(rle)],
        'iscrowd': 0,
    }


def generator_record(split: str, num_images: int, cfg: ToyConfig, seed: int) -> dict:
    """The arguments that determine a split, stored in its annotation file's ``info``.

    ``mixed_sizes`` is recorded only when set: square sets made before the option existed hold
    the same images and keep the same record, so ``dataset_status`` still calls them current.
    """
    record = {'split': split, 'num_images': num_images, 'seed': seed, **asdict(cfg)}
    if not cfg.mixed_sizes:
        del record['mixed_sizes']
    return record


def annotation_path(root: str | os.PathLike, split: str) -> Path:
    """Where the annotation file of ``split`` lives under ``root``."""
    return Path(root) / 'annotations' / f'instances_{split}.json'


def read_toy_info(root: str | os.PathLike, split: str) -> dict | None:
    """The ``info`` of ``root``'s ``split`` annotation file if this script wrote it, else None.

    Its ``generator`` entry (absent in sets made before it was recorded) holds the arguments.
    """
    try:
        with open(annotation_path(root, split)) as f:
            info = json.load(f).get('info')
    except (OSError, ValueError, AttributeError):
        return None
    if isinstance(info, dict) and str(info.get('description', '')).startswith('toy_coco '):
        return info
    return None


def dataset_status(root: str | os.PathLike, num_train: int, num_val: int,
                   img_size: int = ToyConfig.img_size, seed: int = 0, *,
                   mixed_sizes: bool = False) -> str:
    """What ``root`` holds, compared with what ``make_dataset`` would write with these arguments.

    A mixed-size set is never current for ``mixed_sizes=False`` and vice versa.

    Returns:
        'current': a complete toy set made with these arguments (and default knobs);
        'absent': nothing (no directory, or an empty one);
        'replaceable': only files this script writes, from other arguments or incomplete;
        'foreign': anything else, which must not be overwritten.
    """
    root = Path(root)
    if not root.is_dir() or not any(root.iterdir()):
        return 'absent'
    infos = {split: read_toy_info(root, split) for split in SPLITS}
    if not any(infos.values()) or not _holds_only_own_files(root):
        return 'foreign'
    cfg = ToyConfig(img_size=img_size, mixed_sizes=mixed_sizes)
    for split, count in zip(SPLITS, (num_train, num_val)):
        images = root / split
        if ((infos[split] or {}).get('generator') != generator_record(split, count, cfg, seed)
                or not images.is_dir() or sum(1 for _ in images.iterdir()) != count):
            return 'replaceable'
    return 'current'


def _holds_only_own_files(root: Path) -> bool:
    """True if ``root``'s top level and ``annotations/`` hold only names this script writes."""
    annotations = root / 'annotations'
    own_annotations = {annotation_path(root, split).name for split in SPLITS}
    if not {p.name for p in root.iterdir()} <= {annotations.name, *SPLITS}:
        return False
    return not annotations.is_dir() or {p.name for p in annotations.iterdir()} <= own_annotations


def _write_split(root: Path, split: str, num_images: int, cfg: ToyConfig, seed: int) -> None:
    """Renders ``num_images`` images into ``root/split`` and writes their annotation file.

    Each image, its size included, draws from its own generator seeded by (seed, split,
    index), so an image does not change when its split's or the other split's size does.
    """
    (root / split).mkdir(parents=True)
    images, annotations = [], []
    for index in range(num_images):
        rng = np.random.default_rng([seed, SPLITS.index(split), index])
        img, objects = render_image(rng, cfg)
        file_name = f'{index:06d}.jpg'
        Image.fromarray(img).save(root / split / file_name, quality=92)
        image_id = index + 1
        images.append({'id': image_id, 'file_name': file_name,
                       'height': img.shape[0], 'width': img.shape[1]})
        for label, mask in objects:
            annotations.append(_annotation(mask, label, image_id, len(annotations) + 1))
    coco = {
        'info': {'description': f'toy_coco {split} split, seed {seed}', 'version': '1.0',
                 'generator': generator_record(split, num_images, cfg, seed)},
        'licenses': [],
        'images': images,
        'annotations': annotations,
        'categories': [{'id': i + 1, 'name': name, 'supercategory': 'shape'}
                       for i, name in enumerate(CLASSES)],
    }
    with open(annotation_path(root, split), 'w') as f:
        json.dump(coco, f)


def _publish(tmp: Path, out: Path) -> None:
    """Moves the finished ``tmp`` tree to ``out``, replacing whatever ``out`` held.

    Each step is a rename on one filesystem, so ``out`` is at every moment either the old or the
    new dataset (or briefly absent), never a half-written one.
    """
    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f'.{out.name}.old-', dir=out.parent))
        os.rename(out, old / out.name)
        os.rename(tmp, out)
        shutil.rmtree(old)
    else:
        os.rename(tmp, out)


def make_dataset(out_dir: str | os.PathLike,
                 num_train: int = 200,
                 num_val: int = 50,
                 img_size: int = 256,
                 seed: int = 0,
                 *,
                 max_objects: int = ToyConfig.max_objects,
                 min_rel_size: float = ToyConfig.min_rel_size,
                 max_rel_size: float = ToyConfig.max_rel_size,
                 mixed_sizes: bool = False,
                 overwrite: bool = False) -> Path:
    """Generates the toy dataset into ``out_dir`` atomically.

    Args:
        out_dir: Dataset root to create.
        num_train: Number of training images.
        num_val: Number of validation images.
        img_size: Side of the square images in pixels (the long side with ``mixed_sizes``).
        seed: Non-negative seed; equal arguments give byte-identical output.
        max_objects: Most objects per image.
        min_rel_size: Smallest object diameter as a fraction of ``img_size``.
        max_rel_size: Largest object diameter as a fraction of ``img_size``.
        mixed_sizes: A seeded mix of landscape, portrait and square images (the shapes in
            :data:`MIXED_SHAPES`) instead of square ones.
        overwrite: Replace an existing non-empty ``out_dir`` instead of refusing.

    Returns:
        The dataset root as a Path.

    Raises:
        FileExistsError: ``out_dir`` exists, is not empty and ``overwrite`` is False.
        ValueError: Invalid sizes, counts or seed.
    """
    cfg = ToyConfig(img_size=img_size, max_objects=max_objects,
                    min_rel_size=min_rel_size, max_rel_size=max_rel_size,
                    mixed_sizes=mixed_sizes)
    cfg.validate()
    if min(num_train, num_val, seed) < 0:
        raise ValueError('num_train, num_val and seed must be non-negative')
    out = Path(out_dir)
    if out.exists() and not (out.is_dir() and not any(out.iterdir())) and not overwrite:
        raise FileExistsError(f'{out} exists and is not empty; pass overwrite=True '
                              '(--overwrite) to replace it')
    out.parent.mkdir(parents=True, exist_ok=True)
    # A sibling temp dir shares the filesystem with ``out``, which makes the final rename atomic.
    tmp = Path(tempfile.mkdtemp(prefix=f'.{out.name}.tmp-', dir=out.parent))
    try:
        (tmp / 'annotations').mkdir()
        for split, count in zip(SPLITS, (num_train, num_val)):
            _write_split(tmp, split, count, cfg, seed)
        tmp.chmod(0o755)  # mkdtemp creates 0700; give the dataset ordinary permissions
        _publish(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # no-op after a successful publish
    return out


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parses the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--out', default='data/toy_coco', help='dataset root to create')
    parser.add_argument('--num-train', type=int, default=200)
    parser.add_argument('--num-val', type=int, default=50)
    parser.add_argument('--img-size', type=int, default=256,
                        help='side of the square images (long side with --mixed-sizes)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--max-objects', type=int, default=8)
    parser.add_argument('--min-rel-size', type=float, default=0.05,
                        help='smallest object diameter / image side')
    parser.add_argument('--max-rel-size', type=float, default=0.25,
                        help='largest object diameter / image side')
    parser.add_argument('--mixed-sizes', action='store_true',
                        help='a seeded mix of landscape, portrait and square images '
                             '(e.g. 256x192, 192x256, 256x256 for --img-size 256)')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace an existing non-empty output directory')
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the process exit status."""
    args = parse_args(argv)
    try:
        out = make_dataset(args.out, args.num_train, args.num_val, args.img_size, args.seed,
                           max_objects=args.max_objects, min_rel_size=args.min_rel_size,
                           max_rel_size=args.max_rel_size, mixed_sizes=args.mixed_sizes,
                           overwrite=args.overwrite)
    except (FileExistsError, ValueError) as error:
        print(f'make_toy_coco: error: {error}', file=sys.stderr)
        return 1
    print(f'wrote {args.num_train} train + {args.num_val} val images to {out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
