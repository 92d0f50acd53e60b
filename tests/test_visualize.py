"""Tests for tools/visualize.py: hit/miss matching, label placement and the pictures."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # makes ``tools`` importable

from tools import visualize  # noqa: E402
from tools.visualize import Instances, match  # noqa: E402

CLASSES = ['disc', 'box', 'triangle', 'star']


def _boxes(*boxes: tuple) -> np.ndarray:
    return np.array(boxes, dtype=np.float32).reshape(-1, 4)


def _gt() -> Instances:
    return Instances(_boxes((10, 10, 50, 50), (100, 100, 140, 140), (200, 10, 240, 50)),
                     np.array([0, 1, 3]))


def test_box_iou() -> None:
    iou = visualize.box_iou(_boxes((0, 0, 10, 10)), _boxes((0, 0, 10, 10), (5, 0, 15, 10),
                                                           (20, 20, 30, 30)))
    np.testing.assert_allclose(iou, [[1.0, 50 / 150, 0.0]])


def test_hits_misses_and_false_positives() -> None:
    pred = Instances(
        _boxes((11, 11, 50, 50),      # disc, on the disc: hit
               (12, 10, 52, 50),      # disc again, lower score: a duplicate, false positive
               (100, 100, 140, 140),  # right place, wrong class (disc on the box): false positive
               (200, 10, 229, 50)),   # star, IoU 29/40 = 0.725: hit
        np.array([0, 0, 0, 3]), scores=np.array([0.9, 0.8, 0.7, 0.6]))
    found = match(_gt(), pred)
    assert found.hits == [0, 3]
    assert found.false_positives == [1, 2]
    assert found.misses == [1]  # the box was never found with its own class


def test_iou_just_under_the_threshold_is_a_miss() -> None:
    gt = Instances(_boxes((0, 0, 100, 100)), np.array([2]))
    # IoU = 49/100 with the ground truth, then 50/100.
    pred = lambda side: Instances(_boxes((0, 0, side, 100)), np.array([2]), np.array([0.9]))  # noqa: E731
    assert match(gt, pred(49)).misses == [0]
    assert match(gt, pred(50)).hits == [0]


def test_the_higher_score_takes_the_object() -> None:
    gt = Instances(_boxes((0, 0, 100, 100)), np.array([1]))
    pred = Instances(_boxes((0, 0, 90, 100), (0, 0, 100, 100)), np.array([1, 1]),
                     np.array([0.4, 0.95]))
    found = match(gt, pred)
    assert (found.hits, found.false_positives) == ([1], [0])


def test_empty_sides() -> None:
    none = Instances(_boxes(), np.zeros(0, dtype=int), np.zeros(0))
    assert match(_gt(), none).misses == [0, 1, 2]
    one = Instances(_boxes((0, 0, 5, 5)), np.array([0]), np.array([0.9]))
    assert match(none, one).false_positives == [0]


def test_labels_of_overlapping_boxes_do_not_cover_each_other() -> None:
    taken: list = []
    for _ in range(4):  # boxes at the same place, as overlapping low-score detections are
        taken.append(visualize.place_label((100, 100, 160, 160), (50, 18), taken, (512, 512)))
    assert None not in taken and len(set(taken)) == 4
    assert not any(visualize.overlaps(a, b) for i, a in enumerate(taken) for b in taken[i + 1:])
    # No clear place left: no label rather than one on top of another.
    assert visualize.place_label((100, 100, 160, 160), (50, 18), taken, (512, 512)) is None
    # Kept inside the picture at its edge.
    x1, y1, x2, y2 = visualize.place_label((0, 0, 30, 30), (50, 18), [], (512, 512))
    assert visualize.count(1, 'miss', 'misses') == '1 miss'
    assert visualize.count(2, 'hit') == '2 hits'
    assert x1 >= 0 and y1 >= 0 and x2 <= 512 and y2 <= 512


def test_upscale_factor() -> None:
    assert visualize.upscale_factor(256, 256) == 2
    assert visualize.upscale_factor(500, 375) == 2
    assert visualize.upscale_factor(640, 480) == 1


def _image() -> np.ndarray:
    return np.full((256, 256, 3), 90, dtype=np.uint8)


def test_side_by_side_is_twice_as_large_and_shows_the_misses() -> None:
    gt = _gt()
    gt.masks = np.zeros((3, 256, 256), dtype=bool)
    gt.masks[0, 15:45, 15:45] = True
    pred = Instances(_boxes((11, 11, 50, 50), (60, 60, 90, 90)), np.array([0, 2]),
                     np.array([0.9, 0.2]))  # the second is under the threshold
    picture, found = visualize.side_by_side(_image(), gt, pred, CLASSES, 0.5, 'val 000000.jpg')
    assert (found.hits, found.misses, found.false_positives) == ([0], [1, 2], [])
    assert picture.width >= 2 * 2 * 256 and picture.height > 2 * 256
    pixels = np.asarray(picture)
    assert (np.abs(pixels.astype(int) - visualize.MISS).sum(axis=2) == 0).any()
    assert (np.abs(pixels.astype(int) - visualize.HIT).sum(axis=2) == 0).any()
    assert not (np.abs(pixels.astype(int) - visualize.FALSE_POSITIVE).sum(axis=2) == 0).any()


def test_prediction_only_carries_the_warning() -> None:
    pred = Instances(_boxes((11, 11, 50, 50)), np.array([0]), np.array([0.9]))
    plain = visualize.prediction_only(_image(), pred, CLASSES, 0.5, 'photo.jpg')
    warned = visualize.prediction_only(_image(), pred, CLASSES, 0.5, 'photo.jpg',
                                       warning='This model knows only the 4 toy classes.')
    assert warned.height > plain.height
    assert (np.abs(np.asarray(warned).astype(int) - visualize.WARNING).sum(axis=2) == 0).any()


def test_ground_truth_of_a_toy_set(tmp_path: Path) -> None:
    import json

    import pytest

    from tools.data.make_toy_coco import make_dataset
    from tools.infer_images import load_ground_truth
    make_dataset(tmp_path, num_train=1, num_val=2, img_size=64, seed=0, overwrite=True)
    ann_file = tmp_path / 'annotations' / 'instances_val.json'
    coco = json.loads(ann_file.read_text())
    truth = load_ground_truth(ann_file, CLASSES)
    assert sorted(truth) == sorted(Path(image['file_name']).name for image in coco['images'])
    first = coco['images'][0]
    gt = truth[Path(first['file_name']).name]
    anns = [a for a in coco['annotations'] if a['image_id'] == first['id']]
    names = {c['id']: c['name'] for c in coco['categories']}
    assert [CLASSES[int(c)] for c in gt.labels] == [names[a['category_id']] for a in anns]
    assert gt.masks.shape == (len(anns), first['height'], first['width']) and gt.masks.any()
    x, y, w, h = anns[0]['bbox']
    np.testing.assert_allclose(gt.boxes[0], [x, y, x + w, y + h])
    with pytest.raises(ValueError, match='does not know'):
        load_ground_truth(ann_file, CLASSES[:2])
