"""The scene renderer of the toy COCO set (tools/data/make_toy_coco.py writes the files).

Each image shows a few shapes of the classes in :data:`CLASSES` on a textured, cluttered
background. Fill colours and textures are drawn per instance, independently of the class, so a
detector has to recognise the class by its shape. Objects are painted back to front and may
occlude each other; the renderer returns the *visible* part of each object only, and an object
that would be left mostly hidden is not painted at all (so the image holds no unlabelled shapes).

Images are square (``img_size`` x ``img_size``) or, with ``mixed_sizes``, a seeded mix of
landscape, portrait and square images whose long side is ``img_size`` (like COCO's 640x480 /
480x640 mix), so that detection batches get padded. An image's size is drawn from the image's
own generator, so it stays a pure function of that generator's state. Object sizes are relative
to ``img_size`` (the long side), so objects have the same pixel sizes in every orientation.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

CLASSES: tuple[str, ...] = ('disc', 'box', 'triangle', 'star')
# (height, width) of the mixed-size images as fractions of img_size: landscape 4:3, portrait
# 3:4 and square, each drawn with probability 1/3 (COCO: 640x480, 480x640, some square).
MIXED_SHAPES: tuple[tuple[float, float], ...] = ((0.75, 1.0), (1.0, 0.75), (1.0, 1.0))

Shape = tuple[int, int]  # (height, width) in pixels


@dataclass(frozen=True)
class ToyConfig:
    """Knobs of the image generator.

    Attributes:
        img_size: Side of the square images, or the long side of the mixed-size images.
        max_objects: Most objects painted into one image (at least one is kept).
        min_rel_size: Smallest object diameter as a fraction of ``img_size``.
        max_rel_size: Largest object diameter as a fraction of ``img_size`` (capped at the
            image's short side).
        min_visible_frac: Objects whose visible area falls below this fraction of their full
            area are not painted.
        min_visible_px: Objects with fewer visible pixels than this are not painted.
        mixed_sizes: Draw each image's shape from :data:`MIXED_SHAPES` instead of square.
    """

    img_size: int = 256
    max_objects: int = 8
    min_rel_size: float = 0.05
    max_rel_size: float = 0.25
    min_visible_frac: float = 0.3
    min_visible_px: int = 10
    mixed_sizes: bool = False

    def validate(self) -> None:
        """Raises ValueError for settings that cannot produce a sensible dataset."""
        if self.img_size < 32:
            raise ValueError(f'img_size must be >= 32, got {self.img_size}')
        if self.max_objects < 1:
            raise ValueError(f'max_objects must be >= 1, got {self.max_objects}')
        if not 0 < self.min_rel_size <= self.max_rel_size <= 1:
            raise ValueError('need 0 < min_rel_size <= max_rel_size <= 1, got '
                             f'{self.min_rel_size}, {self.max_rel_size}')


def image_shape(rng: np.random.Generator, cfg: ToyConfig) -> Shape:
    """(height, width) of the next image; draws from ``rng`` only when ``cfg.mixed_sizes``.

    Square sets draw nothing here, so their images are the same as before the option existed.
    """
    if not cfg.mixed_sizes:
        return cfg.img_size, cfg.img_size
    rel_h, rel_w = MIXED_SHAPES[int(rng.integers(len(MIXED_SHAPES)))]
    return round(cfg.img_size * rel_h), round(cfg.img_size * rel_w)


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


def _polygon_mask(vertices: np.ndarray, shape: Shape) -> np.ndarray:
    """Rasterises a polygon given as (N, 2) x/y vertices into a boolean (h, w) mask."""
    canvas = Image.new('L', (shape[1], shape[0]), 0)
    ImageDraw.Draw(canvas).polygon([tuple(v) for v in vertices.tolist()], fill=1)
    return np.asarray(canvas, dtype=bool)


def _xy_extent(shape: Shape) -> np.ndarray:
    """(width, height) of an image: the upper bounds of (x, y) coordinates."""
    return np.array([shape[1], shape[0]], dtype=np.float64)


# ----------------------------------------------------------------------------- textures
def _smooth_noise(rng: np.random.Generator, shape: Shape, cells: int) -> np.ndarray:
    """A smooth random field in [0, 1] of ``shape``: a bicubically upsampled grid."""
    grid = rng.integers(0, 256, size=(cells, cells), dtype=np.uint8)
    field = Image.fromarray(grid).resize((shape[1], shape[0]), Image.BICUBIC)
    return np.asarray(field, dtype=np.float32) / 255.0


def _mix_field(rng: np.random.Generator, shape: Shape) -> np.ndarray:
    """A random blending field in [0, 1]: flat, linear gradient, stripes or smooth noise."""
    kind = rng.integers(4)
    if kind == 0:
        return np.zeros(shape, np.float32)
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float32)
    theta = rng.uniform(0, np.pi)
    proj = xx * np.cos(theta) + yy * np.sin(theta)
    if kind == 1:
        return (proj - proj.min()) / max(float(np.ptp(proj)), 1.0)
    if kind == 2:
        period = rng.uniform(4, 16)
        return 0.5 + 0.5 * np.sin(2 * np.pi * proj / period + rng.uniform(0, 2 * np.pi))
    return _smooth_noise(rng, shape, int(rng.integers(3, 12)))


def _texture(rng: np.random.Generator, shape: Shape) -> np.ndarray:
    """An (h, w, 3) float texture blending two random colours through a mix field."""
    c1, c2 = rng.uniform(0, 255, size=(2, 3)).astype(np.float32)
    t = _mix_field(rng, shape)[..., None]
    return c1 * (1 - t) + c2 * t


def _background(rng: np.random.Generator, shape: Shape) -> np.ndarray:
    """A textured backdrop with class-free clutter (lines, scribbles, irregular blobs)."""
    img = 0.6 * _texture(rng, shape) + 0.4 * _texture(rng, shape)
    canvas = Image.fromarray(img.clip(0, 255).astype(np.uint8))
    _draw_clutter(ImageDraw.Draw(canvas), rng, shape)
    return np.asarray(canvas, dtype=np.float32)


def _draw_clutter(draw: ImageDraw.ImageDraw, rng: np.random.Generator, shape: Shape) -> None:
    """Paints distractors that belong to no class onto ``draw``.

    Blobs get many noisy radii so they never look like a clean disc, box, triangle or star.
    Lengths scale with the long side; positions are uniform over (width, height).
    """
    extent, side = _xy_extent(shape), max(shape)

    def colour() -> tuple[int, ...]:
        return tuple(int(c) for c in rng.integers(0, 256, size=3))

    for _ in range(rng.integers(3, 12)):  # straight lines
        end_points = rng.uniform(0, np.tile(extent, 2)).tolist()
        draw.line(end_points, fill=colour(), width=int(rng.integers(1, 4)))
    for _ in range(rng.integers(1, 5)):  # random-walk scribbles
        steps = rng.normal(0, side / 20, size=(int(rng.integers(4, 12)), 2))
        path = rng.uniform(0, extent) + np.cumsum(steps, axis=0)
        draw.line([tuple(p) for p in path.tolist()], fill=colour(), width=int(rng.integers(1, 3)))
    for _ in range(rng.integers(0, 5)):  # irregular blobs
        n = int(rng.integers(9, 16))
        radius = side * rng.uniform(0.02, 0.06)
        radii = radius * rng.uniform(0.55, 1.0, size=n)
        angles = np.sort(rng.uniform(0, 2 * np.pi, size=n))
        blob = _ring(rng.uniform(0, extent), radii, angles)
        draw.polygon([tuple(v) for v in blob.tolist()], fill=colour())


# ----------------------------------------------------------------------------- scenes
def _sample_shapes(rng: np.random.Generator, cfg: ToyConfig,
                   shape: Shape) -> list[tuple[int, np.ndarray]]:
    """Samples (class index, full mask) pairs in back-to-front order.

    Diameters are log-uniform between the relative bounds (of ``img_size``) so small and large
    objects are equally common per octave; capped at the short side, and centres keep each
    shape fully inside the image.
    """
    shapes, center, radius = [], None, 0.0
    for _ in range(rng.integers(1, cfg.max_objects + 1)):
        label = int(rng.integers(len(CLASSES)))
        diameter = cfg.img_size * np.exp(rng.uniform(np.log(cfg.min_rel_size),
                                                     np.log(cfg.max_rel_size)))
        diameter = min(diameter, min(shape))
        # Vertices span [c - r, c + r]; the rasteriser covers up to one pixel beyond that.
        prev_center, prev_radius, radius = center, radius, diameter / 2 - 0.5
        center = _place(rng, shape, radius, prev_center, prev_radius)
        shapes.append((label, _polygon_mask(_SHAPES[label](rng, center, radius), shape)))
    return shapes


def _place(rng: np.random.Generator, shape: Shape, radius: float,
           prev_center: np.ndarray | None, prev_radius: float) -> np.ndarray:
    """Centre (x, y) for a shape of ``radius`` that keeps it inside the image.

    Half of the time the shape is put next to the previous one, so that occlusions are common
    rather than a rare accident of uniform placement.
    """
    lo, hi = radius, _xy_extent(shape) - 1 - radius
    if prev_center is None or rng.random() < 0.5:
        return rng.uniform(lo, hi)
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
    """Renders one scene, its size included (:func:`image_shape`).

    Args:
        rng: Source of randomness; the scene is a pure function of its state.
        cfg: Generator settings.

    Returns:
        The (H, W, 3) uint8 image and a non-empty list of (class index, visible (H, W) bool
        mask).
    """
    shape = image_shape(rng, cfg)
    objects: list = []
    while not objects:  # the frontmost shape of a draw can still be too small for min_visible_px
        objects = _keep_visible(_sample_shapes(rng, cfg, shape), cfg)
    img = _background(rng, shape)
    for _, full, _ in objects:  # back to front, so later shapes occlude earlier ones
        img[full] = _texture(rng, shape)[full]
    # Global sensor noise keeps flat fills from being trivially separable from the backdrop.
    img += rng.normal(0, rng.uniform(2, 8), size=img.shape)
    return img.clip(0, 255).astype(np.uint8), [(label, vis) for label, _, vis in objects]
