"""Pictures a person can judge: ground truth and prediction side by side, hits and misses counted.

A prediction at or above the score threshold is a *hit* when it is the best-scoring match of a
ground-truth object of the same class with box IoU >= 0.5 (COCO's greedy matching); the other
predictions are *false positives* and the unmatched objects *misses*. The prediction panel shows
hits in green, false positives in red and misses as dashed orange boxes; masks keep their class
colour in both panels. Images are upscaled (2x for the demo's 256 px) before boxes and labels
are drawn, and labels are moved so that they do not cover each other.

Pure numpy + Pillow (the font is matplotlib's DejaVu Sans when matplotlib is there).
"""
from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

IOU_THR = 0.5
MIN_PANEL_SIDE = 512  # images are upscaled by an integer factor until their long side reaches it
PALETTE = ((31, 119, 180), (148, 103, 189), (23, 190, 207), (227, 119, 194), (188, 189, 34),
           (140, 86, 75), (127, 127, 127), (255, 187, 120))
HIT, FALSE_POSITIVE, MISS = (40, 180, 60), (220, 30, 30), (255, 140, 0)
TEXT, BACKGROUND, WARNING = (20, 20, 20), (255, 255, 255), (255, 236, 179)
LEGEND = (f'hit: same class and box IoU >= {IOU_THR} with a ground-truth object (green box); '
          'false positive: red box; missed object: dashed orange box. Mask colour = class.')


@dataclass
class Instances:
    """Objects of one image in original pixels: boxes (N, 4) as x1, y1, x2, y2; labels (N,);
    scores (N,) for predictions; masks (N, H, W) bool when known."""

    boxes: np.ndarray
    labels: np.ndarray
    scores: np.ndarray | None = None
    masks: np.ndarray | None = None

    def keep(self, index: np.ndarray) -> Instances:
        """The instances selected by a boolean or integer index."""
        pick = lambda a: None if a is None else a[index]  # noqa: E731
        return Instances(self.boxes[index], self.labels[index], pick(self.scores),
                         pick(self.masks))


@dataclass
class Matching:
    """Indices of hits and false positives (into predictions) and misses (into ground truth)."""

    hits: list[int]
    false_positives: list[int]
    misses: list[int]


def count(n: int, singular: str, plural: str | None = None) -> str:
    """``'1 hit'``, ``'2 hits'``."""
    return f'{n} {singular if n == 1 else plural or singular + "s"}'


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` (N, 4) with every box in ``b`` (M, 4): an (N, M) array."""
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(bottom_right - top_left, 0, None).prod(axis=2)
    area = lambda boxes: np.clip(boxes[:, 2:] - boxes[:, :2], 0, None).prod(axis=1)  # noqa: E731
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def match(gt: Instances, pred: Instances, iou_thr: float = IOU_THR) -> Matching:
    """Matches predictions to ground truth greedily by descending score, class by class.

    Each prediction takes the unmatched same-class object it overlaps most, if that IoU is at
    least ``iou_thr``; so a second box on an already found object is a false positive.
    """
    ious = box_iou(pred.boxes, gt.boxes) if len(pred.boxes) and len(gt.boxes) else \
        np.zeros((len(pred.boxes), len(gt.boxes)))
    scores = pred.scores if pred.scores is not None else np.ones(len(pred.boxes))
    taken = np.zeros(len(gt.boxes), dtype=bool)
    hits, false_positives = [], []
    for p in np.argsort(-scores, kind='stable'):
        candidates = np.where((gt.labels == pred.labels[p]) & ~taken, ious[p], -1.0)
        best = int(candidates.argmax()) if len(candidates) else -1
        if best >= 0 and candidates[best] >= iou_thr:
            taken[best] = True
            hits.append(int(p))
        else:
            false_positives.append(int(p))
    return Matching(sorted(hits), sorted(false_positives), np.flatnonzero(~taken).tolist())


def font(size: int) -> ImageFont.ImageFont:
    """DejaVu Sans at ``size`` px (matplotlib ships it); Pillow's own font otherwise."""
    try:
        from matplotlib import font_manager
        return ImageFont.truetype(font_manager.findfont('DejaVu Sans'), size)
    except (ImportError, OSError, ValueError):
        return ImageFont.load_default()


def upscale_factor(width: int, height: int, min_side: int = MIN_PANEL_SIDE) -> int:
    """Smallest integer factor that brings the long side to at least ``min_side`` (>= 1)."""
    return max(1, math.ceil(min_side / max(width, height)))


def overlay_masks(image: np.ndarray, instances: Instances, alpha: float = 0.45) -> np.ndarray:
    """The image (H, W, 3) uint8 with every mask blended in its class colour."""
    out = image.astype(np.float32)
    if instances.masks is not None:
        for mask, label in zip(instances.masks, instances.labels):
            colour = np.array(PALETTE[int(label) % len(PALETTE)], dtype=np.float32)
            out[mask] = (1 - alpha) * out[mask] + alpha * colour
    return out.clip(0, 255).astype(np.uint8)


def overlaps(a: tuple, b: tuple) -> bool:
    """Whether two (x1, y1, x2, y2) rectangles overlap."""
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def place_label(box: tuple, size: tuple[int, int], taken: list[tuple],
                bounds: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """Where a label of ``size`` (w, h) goes: above, inside or below ``box``, kept inside
    ``bounds`` (W, H) and clear of the labels in ``taken``; None when no place is clear (the box
    is then drawn without a label rather than with one covering another)."""
    x1, y1, _, y2 = box
    w, h = size
    for top in (y1 - h, y1, y2, y2 - h):
        left = min(max(0, x1), bounds[0] - w)
        top = min(max(0, top), bounds[1] - h)
        rect = (left, top, left + w, top + h)
        if not any(overlaps(rect, t) for t in taken):
            return rect
    return None


def draw_box(draw: ImageDraw.ImageDraw, box: tuple, colour: tuple, dashed: bool = False,
             width: int = 3) -> None:
    """A rectangle outline; dashed ones are drawn as 8 px segments."""
    if not dashed:
        draw.rectangle(box, outline=colour, width=width)
        return
    x1, y1, x2, y2 = box
    for a, b in (((x1, y1), (x2, y1)), ((x2, y1), (x2, y2)), ((x2, y2), (x1, y2)),
                 ((x1, y2), (x1, y1))):
        length = max(abs(b[0] - a[0]), abs(b[1] - a[1]), 1)
        for start in range(0, int(length), 16):
            t0, t1 = start / length, min(start + 8, length) / length
            draw.line([(a[0] + (b[0] - a[0]) * t0, a[1] + (b[1] - a[1]) * t0),
                       (a[0] + (b[0] - a[0]) * t1, a[1] + (b[1] - a[1]) * t1)],
                      fill=colour, width=width)


def render_panel(image: np.ndarray, boxes: list[tuple[np.ndarray, str, tuple, bool]],
                 masks: Instances, scale: int) -> Image.Image:
    """One upscaled panel: masks blended, then boxes ``(xyxy, label, colour, dashed)`` with
    labels that avoid each other."""
    height, width = image.shape[:2]
    panel = Image.fromarray(overlay_masks(image, masks)).resize(
        (width * scale, height * scale), Image.LANCZOS)
    draw, label_font, taken = ImageDraw.Draw(panel), font(15), []
    for xyxy, _, colour, dashed in boxes:
        draw_box(draw, tuple(float(v) * scale for v in xyxy), colour, dashed)
    for xyxy, text, colour, _ in boxes:  # labels after all boxes: no box line crosses a label
        left, top, right, bottom = draw.textbbox((0, 0), text, font=label_font)
        size = (int(right - left) + 6, int(bottom - top) + 6)
        rect = place_label(tuple(int(float(v) * scale) for v in xyxy), size, taken, panel.size)
        if rect is None:
            continue
        taken.append(rect)
        draw.rectangle(rect, fill=colour)
        draw.text((rect[0] + 3 - left, rect[1] + 3 - top), text, font=label_font,
                  fill=(255, 255, 255) if sum(colour) < 500 else TEXT)
    return panel


def text_band(lines: list[str], width: int, fill: tuple = BACKGROUND,
              size: int = 16) -> Image.Image:
    """A band of ``width`` px holding ``lines``, each wrapped to fit."""
    band_font = font(size)
    measure = ImageDraw.Draw(Image.new('RGB', (1, 1)))
    char_width = max(1.0, measure.textlength('abcdefghij', font=band_font) / 10)
    wrapped = [part for line in lines
               for part in textwrap.wrap(line, max(20, int((width - 16) / char_width)))]
    band = Image.new('RGB', (width, 8 + (size + 6) * len(wrapped)), fill)
    draw = ImageDraw.Draw(band)
    for index, line in enumerate(wrapped):
        draw.text((8, 4 + (size + 6) * index), line, font=band_font, fill=TEXT)
    return band


def stack(parts: list[Image.Image]) -> Image.Image:
    """Images stacked vertically on white, left-aligned."""
    out = Image.new('RGB', (max(p.width for p in parts), sum(p.height for p in parts)), BACKGROUND)
    top = 0
    for part in parts:
        out.paste(part, (0, top))
        top += part.height
    return out


def side_by_side(image: np.ndarray, gt: Instances, pred: Instances, classes: list[str],
                 score_thr: float, title: str) -> tuple[Image.Image, Matching]:
    """Ground truth (left) and the predictions at or above ``score_thr`` (right).

    Args:
        image: (H, W, 3) uint8 RGB.
        gt: The image's ground-truth objects (scores unused).
        pred: All predictions; those under ``score_thr`` are left out.
        classes: Class names, indexed by label.
        score_thr: Score threshold, stated on the picture.
        title: First line of the picture (e.g. the file name).

    Returns:
        The picture and the matching it shows.
    """
    pred = pred.keep(pred.scores >= score_thr)
    result = match(gt, pred)
    scale = upscale_factor(image.shape[1], image.shape[0])
    gt_boxes = [(b, classes[int(c)], PALETTE[int(c) % len(PALETTE)], False)
                for b, c in zip(gt.boxes, gt.labels)]
    # Labels are placed in this order, so misses and hits keep theirs in a crowd.
    pred_boxes = [(gt.boxes[i], f'missed {classes[int(gt.labels[i])]}', MISS, True)
                  for i in result.misses]
    pred_boxes += [(pred.boxes[i], f'{classes[int(pred.labels[i])]} {pred.scores[i]:.2f}',
                    HIT if i in result.hits else FALSE_POSITIVE, False)
                   for i in result.hits + result.false_positives]
    left = render_panel(image, gt_boxes, gt, scale)
    right = render_panel(image, pred_boxes, pred, scale)
    gap = 16
    heads = [text_band([f'ground truth: {count(len(gt.boxes), "object")}'], left.width),
             text_band([f'prediction, score >= {score_thr:.2f}: {count(len(result.hits), "hit")}, '
                        f'{count(len(result.misses), "miss", "misses")}, '
                        f'{count(len(result.false_positives), "false positive")}'], right.width)]
    top = max(head.height for head in heads)
    panels = Image.new('RGB', (left.width + gap + right.width, top + left.height), BACKGROUND)
    for x, head, panel in ((0, heads[0], left), (left.width + gap, heads[1], right)):
        panels.paste(head, (x, 0))
        panels.paste(panel, (x, top))
    return stack([text_band([title], panels.width), panels,
                  text_band([LEGEND], panels.width, size=14)]), result


def prediction_only(image: np.ndarray, pred: Instances, classes: list[str], score_thr: float,
                    title: str, warning: str | None = None) -> Image.Image:
    """The predictions at or above ``score_thr`` on an image without ground truth; ``warning``
    is printed on a coloured band under the title."""
    pred = pred.keep(pred.scores >= score_thr)
    scale = upscale_factor(image.shape[1], image.shape[0])
    boxes = [(b, f'{classes[int(c)]} {s:.2f}', PALETTE[int(c) % len(PALETTE)], False)
             for b, c, s in zip(pred.boxes, pred.labels, pred.scores)]
    panel = render_panel(image, boxes, pred, scale)
    parts = [text_band([title], panel.width)]
    if warning:
        parts.append(text_band([warning], panel.width, fill=WARNING))
    parts.append(text_band([f'prediction, score >= {score_thr:.2f}: '
                            f'{count(len(boxes), "detection")} (no ground truth to compare with)'],
                           panel.width))
    return stack(parts + [panel])
