"""Generate a small, seeded COCO-format instance segmentation dataset ("toy COCO").

Each image shows a few shapes of the classes in :data:`CLASSES` on a textured, cluttered
background. Fill colours and textures are drawn per instance, independently of the class, so a
detector has to recognise the class by its shape. Objects are painted back to front and may
occlude each other; every annotation describes the *visible* part of its object only, and an
object that would be left mostly hidden is not painted at all (so the image holds no unlabelled
shapes).

Masks are stored as compressed COCO RLE (``{'size': [h, w], 'counts': str}``), which pycocotools
and MMDetection's ``LoadAnnotations`` (default ``poly2mask=True``) read directly. RLE rather than
polygons because an occluded mask can have holes, which COCO polygons (a union of rings) cannot
express, and because re-rasterised polygons would make touching visible masks overlap.

Layout (what MMDetection's ``CocoDataset`` reads)::

    OUT/annotations/instances_train.json   OUT/train/000000.jpg ...
    OUT/annotations/instances_val.json     OUT/val/000000.jpg ...

Usage::

    python tools/data/make_toy_coco.py --out data/toy_coco --num-train 200 --num-val 50
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pycocotools.mask as mask_utils
from PIL import Image, ImageDraw

CLASSES: tuple[str, ...] = ('disc', 'box', 'triangle', 'star')
SPLITS: tuple[str, ...] = ('train', 'val')


@dataclass(frozen=True)
class ToyConfig:
    """Knobs of the image generator.

    Attributes:
        img_size: Side of the square images in pixels.
        max_objects: Most objects painted into one image (at least one is kept).
        min_rel_size: Smallest object diameter as a fraction of the image side.
        max_rel_size: Largest object diameter as a fraction of the image side.
        min_visible_frac: Objects whose visible area falls below this fraction of their full
            area are not painted.
        min_visible_px: Objects with fewer visible pixels than this are not painted.
    """

    img_size: int = 256
    max_objects: int = 8
    min_rel_size: float = 0.05
    max_rel_size: float = 0.25
    min_visible_frac: float = 0.3
    min_visible_px: int = 10

    def validate(self) -> None:
        """Raises ValueError for settings that cannot produce a sensible dataset."""
        if self.img_size < 32:
            raise ValueError(f'img_size must be >= 32, got {self.img_size}')
        if self.max_objects < 1:
            raise ValueError(f'max_objects must be >= 1, got {self.max_objects}')
        if not 0 < self.min_rel_size <= self.max_rel_size <= 1:
            raise ValueError('need 0 < min_rel_size <= max_rel_size <= 1, got '
                             f'{self.min_rel_size}, {self.max_rel_size}')


# ----------------------------------------------------------------------------- shapes
def _ring(center: np.ndarray, radii: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """Vertices at the given polar coordinates around ``center``, shape (N, 2) as (x, y)."""
    return center + radii[:, None] * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _disc(rng: np.random.Generator, center: np.ndarray, radius: float) -> np.ndarray:
    """A rotated ellipse (aspect up to 2:1) as a 64-gon inscribed in a circle of ``radius``."""
    t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    a, b, rot = radius, radius * rng.uniform(0.5, 1.0), rng.uniform(0, np.pi)
    x, y = a * np.cos(t), b * np.sin(t)
    c, s = np.cos(rot), np.sin(rot)
    return center + np.stack([c * x - s * y, s * x + c * y], axis=1)


def _box(rng: np.random.Generator, center: np.ndarray, radius: float) -> np.ndarray:
    """A rotated rectangle (aspect up to ~1.7:1) whose half-diagonal is ``radius``."""
    half = rng.uniform(np.pi / 6, np.pi / 4)  # half the angle between adjacent corners
    rot = rng.uniform(0, np.pi)
    angles = rot + np.array([half, np.pi - half, np.pi + half, 2 * np.pi - half])
    return _ring(center, np.full(4, radius), angles)


def _triangle(rng: np.random.Generator, center: np.ndarray, radius: float) -> np.ndarray:
    """A jittered equilateral triangle inscribed in a circle of ``radius``.

    The jitter keeps every corner angle well above zero, so no triangle degenerates to a sliver.
    """
    angles = rng.uniform(0, 2 * np.pi) + np.array([0, 2, 4]) * np.pi / 3
    angles += rng.uniform(-0.35, 0.35, size=3)
    return _ring(center, np.full(3, radius), angles)


def _star(rng: np.random.Generator, center: np.ndarray, radius: float) -> np.ndarray:
    """A five- or six-pointed star with outer radius ``radius``."""
    points = int(rng.integers(5, 7))
    angles = rng.uniform(0, 2 * np.pi) + np.arange(2 * points) * np.pi / points
    radii = np.where(np.arange(2 * points) % 2 == 0, radius, radius * rng.uniform(0.4, 0.55))
    return _ring(center, radii, angles)


_SHAPES = (_disc, _box, _triangle, _star)  # indexed like CLASSES


def _polygon_mask(vertices: np.ndarray, size: int) -> np.ndarray:
    """Rasterises a polygon given as (N, 2) x/y vertices into a boolean (size, size) mask."""
    canvas = Image.new('L', (size, size), 0)
    ImageDraw.Draw(canvas).polygon([tuple(v) for v in vertices.tolist()], fill=1)
    return np.asarray(canvas, dtype=bool)


# ----------------------------------------------------------------------------- textures
def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """A smooth random field in [0, 1] of shape (size, size): a bicubically upsampled grid."""
    grid = rng.integers(0, 256, size=(cells, cells), dtype=np.uint8)
    field = Image.fromarray(grid).resize((size, size), Image.BICUBIC)
    return np.asarray(field, dtype=np.float32) / 255.0


def _mix_field(rng: np.random.Generator, size: int) -> np.ndarray:
    """A random blending field in [0, 1]: flat, linear gradient, stripes or smooth noise."""
    kind = rng.integers(4)
    if kind == 0:
        return np.zeros((size, size), np.float32)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    theta = rng.uniform(0, np.pi)
    proj = xx * np.cos(theta) + yy * np.sin(theta)
    if kind == 1:
        return (proj - proj.min()) / max(float(np.ptp(proj)), 1.0)
    if kind == 2:
        period = rng.uniform(4, 16)
        return 0.5 + 0.5 * np.sin(2 * np.pi * proj / period + rng.uniform(0, 2 * np.pi))
    return _smooth_noise(rng, size, int(rng.integers(3, 12)))


def _texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """A (size, size, 3) float texture blending two random colours through a mix field."""
    c1, c2 = rng.uniform(0, 255, size=(2, 3)).astype(np.float32)
    t = _mix_field(rng, size)[..., None]
    return c1 * (1 - t) + c2 * t


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A textured backdrop with class-free clutter (lines, scribbles, irregular blobs)."""
    img = 0.6 * _texture(rng, size) + 0.4 * _texture(rng, size)
    canvas = Image.fromarray(img.clip(0, 255).astype(np.uint8))
    _draw_clutter(ImageDraw.Draw(canvas), rng, size)
    return np.asarray(canvas, dtype=np.float32)


def _draw_clutter(draw: ImageDraw.ImageDraw, rng: np.random.Generator, size: int) -> None:
    """Paints distractors that belong to no class onto ``draw``.

    Blobs get many noisy radii so they never look like a clean disc, box, triangle or star.
    """
    def colour() -> tuple[int, ...]:
        return tuple(int(c) for c in rng.integers(0, 256, size=3))

    for _ in range(rng.integers(3, 12)):  # straight lines
        end_points = rng.uniform(0, size, size=4).tolist()
        draw.line(end_points, fill=colour(), width=int(rng.integers(1, 4)))
    for _ in range(rng.integers(1, 5)):  # random-walk scribbles
        steps = rng.normal(0, size / 20, size=(int(rng.integers(4, 12)), 2))
        path = rng.uniform(0, size, size=2) + np.cumsum(steps, axis=0)
        draw.line([tuple(p) for p in path.tolist()], fill=colour(), width=int(rng.integers(1, 3)))
    for _ in range(rng.integers(0, 5)):  # irregular blobs
        n = int(rng.integers(9, 16))
        radius = size * rng.uniform(0.02, 0.06)
        radii = radius * rng.uniform(0.55, 1.0, size=n)
        angles = np.sort(rng.uniform(0, 2 * np.pi, size=n))
        blob = _ring(rng.uniform(0, size, size=2), radii, angles)
        draw.polygon([tuple(v) for v in blob.tolist()], fill=colour())


# ----------------------------------------------------------------------------- scenes
def _sample_shapes(rng: np.random.Generator, cfg: ToyConfig) -> list[tuple[int, np.ndarray]]:
    """Samples (class index, full mask) pairs in back-to-front order.

    Diameters are log-uniform between the relative bounds so small and large objects are
    equally common per octave; centres keep each shape fully inside the image.
    """
    size, shapes, center, radius = cfg.img_size, [], None, 0.0
    for _ in range(rng.integers(1, cfg.max_objects + 1)):
        label = int(rng.integers(len(CLASSES)))
        diameter = size * np.exp(rng.uniform(np.log(cfg.min_rel_size),
                                             np.log(cfg.max_rel_size)))
        # Vertices span [c - r, c + r]; the rasteriser covers up to one pixel beyond that.
        prev_center, prev_radius, radius = center, radius, diameter / 2 - 0.5
        center = _place(rng, size, radius, prev_center, prev_radius)
        shapes.append((label, _polygon_mask(_SHAPES[label](rng, center, radius), size)))
    return shapes


def _place(rng: np.random.Generator, size: int, radius: float,
           prev_center: np.ndarray | None, prev_radius: float) -> np.ndarray:
    """Centre for a shape of ``radius`` that keeps it inside the image.

    Half of the time the shape is put next to the previous one, so that occlusions are common
    rather than a rare accident of uniform placement.
    """
    lo, hi = radius, size - 1 - radius
    if prev_center is None or rng.random() < 0.5:
        return rng.uniform(lo, hi, size=2)
    angle = rng.uniform(0, 2 * np.pi)
    offset = (prev_radius + radius) * rng.uniform(0.3, 1.0)
    return np.clip(prev_center + offset * np.array([np.cos(angle), np.sin(angle)]), lo, hi)


def _visible_masks(full: list[np.ndarray]) -> list[np.ndarray]:
    """Visible part of each back-to-front mask: its pixels not covered by any later mask."""
    if not full:
        return []
    covered, visible = np.zeros_like(full[0]), []
    for mask in reversed(full):
        visible.append(mask & ~covered)
        covered |= mask
    return visible[::-1]


def _keep_visible(shapes: list[tuple[int, np.ndarray]],
                  cfg: ToyConfig) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """Drops shapes left mostly hidden; returns (label, full mask, visible mask) triples.

    Dropping a shape only uncovers the shapes behind it, so one filtering pass suffices:
    every survivor was visible enough before and is at least as visible afterwards.
    """
    visible = _visible_masks([mask for _, mask in shapes])
    kept = [(label, mask) for (label, mask), vis in zip(shapes, visible)
            if vis.sum() >= max(cfg.min_visible_px, cfg.min_visible_frac * mask.sum())]
    visible = _visible_masks([mask for _, mask in kept])
    return [(label, mask, vis) for (label, mask), vis in zip(kept, visible)]


def render_image(rng: np.random.Generator,
                 cfg: ToyConfig) -> tuple[np.ndarray, list[tuple[int, np.ndarray]]]:
    """Renders one scene.

    Args:
        rng: Source of randomness; the scene is a pure function of its state.
        cfg: Generator settings.

    Returns:
        The (H, W, 3) uint8 image and a non-empty list of (class index, visible bool mask).
    """
    objects: list = []
    while not objects:  # the frontmost shape of a draw can still be too small for min_visible_px
        objects = _keep_visible(_sample_shapes(rng, cfg), cfg)
    img = _background(rng, cfg.img_size)
    for _, full, _ in objects:  # back to front, so later shapes occlude earlier ones
        img[full] = _texture(rng, cfg.img_size)[full]
    # Global sensor noise keeps flat fills from being trivially separable from the backdrop.
    img += rng.normal(0, rng.uniform(2, 8), size=img.shape)
    return img.clip(0, 255).astype(np.uint8), [(label, vis) for label, _, vis in objects]


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
    """The arguments that determine a split, stored in its annotation file's ``info``."""
    return {'split': split, 'num_images': num_images, 'seed': seed, **asdict(cfg)}


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
                   img_size: int = ToyConfig.img_size, seed: int = 0) -> str:
    """What ``root`` holds, compared with what ``make_dataset`` would write with these arguments.

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
    cfg = ToyConfig(img_size=img_size)
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

    Each image draws from its own generator seeded by (seed, split, index), so a split does not
    change when the other split's size does.
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
                       'height': cfg.img_size, 'width': cfg.img_size})
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
                 overwrite: bool = False) -> Path:
    """Generates the toy dataset into ``out_dir`` atomically.

    Args:
        out_dir: Dataset root to create.
        num_train: Number of training images.
        num_val: Number of validation images.
        img_size: Side of the square images in pixels.
        seed: Non-negative seed; equal arguments give byte-identical output.
        max_objects: Most objects per image.
        min_rel_size: Smallest object diameter as a fraction of ``img_size``.
        max_rel_size: Largest object diameter as a fraction of ``img_size``.
        overwrite: Replace an existing non-empty ``out_dir`` instead of refusing.

    Returns:
        The dataset root as a Path.

    Raises:
        FileExistsError: ``out_dir`` exists, is not empty and ``overwrite`` is False.
        ValueError: Invalid sizes, counts or seed.
    """
    cfg = ToyConfig(img_size=img_size, max_objects=max_objects,
                    min_rel_size=min_rel_size, max_rel_size=max_rel_size)
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
    parser.add_argument('--img-size', type=int, default=256, help='side of the square images')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--max-objects', type=int, default=8)
    parser.add_argument('--min-rel-size', type=float, default=0.05,
                        help='smallest object diameter / image side')
    parser.add_argument('--max-rel-size', type=float, default=0.25,
                        help='largest object diameter / image side')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace an existing non-empty output directory')
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the process exit status."""
    args = parse_args(argv)
    try:
        out = make_dataset(args.out, args.num_train, args.num_val, args.img_size, args.seed,
                           max_objects=args.max_objects, min_rel_size=args.min_rel_size,
                           max_rel_size=args.max_rel_size, overwrite=args.overwrite)
    except (FileExistsError, ValueError) as error:
        print(f'make_toy_coco: error: {error}', file=sys.stderr)
        return 1
    print(f'wrote {args.num_train} train + {args.num_val} val images to {out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
