"""Tests for the toy COCO generator in tools/data/make_toy_coco.py."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # makes ``tools`` importable

from tools.data import make_toy_coco  # noqa: E402
from tools.data.make_toy_coco import (  # noqa: E402
    CLASSES,
    MIXED_SHAPES,
    SPLITS,
    dataset_status,
    main,
    make_dataset,
    read_toy_info,
)

# pycocotools 2.0.11 trips a numpy 2 DeprecationWarning inside its own decode; not ours to fix.
pytestmark = pytest.mark.filterwarnings('ignore:__array__ implementation:DeprecationWarning')

SIDE, MAX_REL = 128, 0.25
KWARGS = dict(num_train=6, num_val=3, img_size=SIDE, seed=3, max_rel_size=MAX_REL)
MIXED = dict(KWARGS, num_train=10, num_val=4, mixed_sizes=True)
# (height, width) of the mixed images at SIDE = 128: landscape, portrait and square.
MIXED_HW = {(96, 128), (128, 96), (128, 128)}


@pytest.fixture(scope='module')
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny dataset shared by the read-only checks."""
    return make_dataset(tmp_path_factory.mktemp('toy') / 'toy_coco', **KWARGS)


@pytest.fixture(scope='module')
def cocos(root: Path) -> dict[str, COCO]:
    """The pycocotools view of each split."""
    return {split: COCO(str(root / 'annotations' / f'instances_{split}.json'))
            for split in SPLITS}


@pytest.fixture(scope='module')
def mixed_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny mixed-size dataset shared by the read-only checks."""
    return make_dataset(tmp_path_factory.mktemp('toy_mixed') / 'toy_coco', **MIXED)


@pytest.fixture(scope='module')
def mixed_cocos(mixed_root: Path) -> dict[str, COCO]:
    """The pycocotools view of each mixed split."""
    return {split: COCO(str(mixed_root / 'annotations' / f'instances_{split}.json'))
            for split in SPLITS}


def _tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` by relative path, with its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob('*'))
            if p.is_file()}


def test_layout_and_images(root: Path, cocos: dict[str, COCO]) -> None:
    for split, count in zip(SPLITS, (KWARGS['num_train'], KWARGS['num_val'])):
        coco = cocos[split]
        assert len(coco.getImgIds()) == count
        assert [c['name'] for c in coco.loadCats(coco.getCatIds())] == list(CLASSES)
        assert min(coco.getCatIds()) == 1
        for img in coco.loadImgs(coco.getImgIds()):
            with Image.open(root / split / img['file_name']) as im:
                assert im.size == (img['width'], img['height']) == (SIDE, SIDE)
                assert im.mode == 'RGB'
            assert coco.getAnnIds(imgIds=img['id']), 'every image holds an instance'
    assert not list(root.parent.glob('.*')), 'no temporary siblings are left behind'


def test_annotations_match_masks(cocos: dict[str, COCO]) -> None:
    for coco in cocos.values():
        anns = coco.loadAnns(coco.getAnnIds())
        assert len({a['id'] for a in anns}) == len(anns)
        for ann in anns:
            mask = coco.annToMask(ann).astype(bool)
            assert mask.any() and ann['iscrowd'] == 0
            assert ann['area'] == mask.sum()
            ys, xs = np.nonzero(mask)
            x, y = xs.min(), ys.min()
            assert ann['bbox'] == [x, y, xs.max() - x + 1, ys.max() - y + 1]


def test_visible_masks_are_disjoint(cocos: dict[str, COCO]) -> None:
    for coco in cocos.values():
        for img_id in coco.getImgIds():
            anns = coco.loadAnns(coco.getAnnIds(imgIds=img_id))
            coverage = sum(coco.annToMask(a).astype(int) for a in anns)
            assert coverage.max() == 1


def test_classes_and_sizes(cocos: dict[str, COCO]) -> None:
    anns = [a for coco in cocos.values() for a in coco.loadAnns(coco.getAnnIds())]
    assert len({a['category_id'] for a in anns}) >= 3
    # A visible part can be smaller than its shape but never larger; 1 px covers rasterisation.
    assert max(max(a['bbox'][2:]) for a in anns) <= MAX_REL * SIDE + 1


def test_deterministic(root: Path, tmp_path: Path) -> None:
    assert _tree(make_dataset(tmp_path / 'again', **KWARGS)) == _tree(root)
    other = make_dataset(tmp_path / 'other', **{**KWARGS, 'seed': 4})
    assert _tree(other) != _tree(root)


def test_refuses_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / 'toy'
    args = ['--out', str(out), '--num-train', '1', '--num-val', '1', '--img-size', '64']
    assert main(args) == 0
    before = _tree(out)
    with pytest.raises(FileExistsError):
        make_dataset(out, 1, 1, 64)
    assert main(args + ['--seed', '1']) == 1
    assert 'overwrite' in capsys.readouterr().err
    assert _tree(out) == before
    assert main(args + ['--seed', '1', '--overwrite']) == 0
    assert _tree(out) != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ['toy']


def test_interrupted_run_leaves_no_trace(tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    out = make_dataset(tmp_path / 'toy', 1, 1, 64)
    before = _tree(out)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(make_toy_coco, '_write_split', crash)
    with pytest.raises(KeyboardInterrupt):
        make_dataset(out, 1, 1, 64, seed=1, overwrite=True)
    with pytest.raises(KeyboardInterrupt):
        make_dataset(tmp_path / 'fresh', 1, 1, 64)
    assert _tree(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ['toy']


def test_mmdet_coco_dataset_reads_it(root: Path, cocos: dict[str, COCO]) -> None:
    """The RLE masks decode through MMDetection's own loading path (needs mmcv)."""
    pytest.importorskip('mmcv')
    from mmcv.transforms import LoadImageFromFile
    from mmdet.datasets import CocoDataset
    from mmdet.datasets.transforms import LoadAnnotations

    dataset = CocoDataset(
        data_root=str(root), ann_file='annotations/instances_val.json',
        data_prefix=dict(img='val/'), metainfo=dict(classes=CLASSES),
        pipeline=[LoadImageFromFile(), LoadAnnotations(with_bbox=True, with_mask=True)])
    assert len(dataset) == KWARGS['num_val']
    sample = dataset[0]
    coco = cocos['val']
    anns = coco.loadAnns(coco.getAnnIds(imgIds=sample['img_id']))
    expected = np.stack([coco.annToMask(a) for a in anns])
    assert sample['img'].shape == (SIDE, SIDE, 3)
    assert not sample['gt_ignore_flags'].any()
    np.testing.assert_array_equal(sample['gt_masks'].masks, expected)


# ----------------------------------------------------------------------------- mixed sizes
def test_mixed_sizes_mix_orientations(mixed_root: Path, mixed_cocos: dict[str, COCO]) -> None:
    assert {(round(SIDE * h), round(SIDE * w)) for h, w in MIXED_SHAPES} == MIXED_HW
    for split, coco in mixed_cocos.items():
        images = coco.loadImgs(coco.getImgIds())
        for img in images:
            with Image.open(mixed_root / split / img['file_name']) as im:
                assert im.size == (img['width'], img['height'])
            assert coco.getAnnIds(imgIds=img['id']), 'every image holds an instance'
        assert {(img['height'], img['width']) for img in images} <= MIXED_HW
    train = mixed_cocos['train'].loadImgs(mixed_cocos['train'].getImgIds())
    assert {(img['height'], img['width']) for img in train} == MIXED_HW, 'all three shapes'


def test_mixed_annotations_inside_and_match_masks(mixed_cocos: dict[str, COCO]) -> None:
    for coco in mixed_cocos.values():
        for img_id in coco.getImgIds():
            img = coco.loadImgs(img_id)[0]
            anns = coco.loadAnns(coco.getAnnIds(imgIds=img_id))
            coverage = np.zeros((img['height'], img['width']), int)
            for ann in anns:
                assert ann['segmentation']['size'] == [img['height'], img['width']]
                mask = coco.annToMask(ann).astype(bool)
                assert mask.shape == (img['height'], img['width'])
                ys, xs = np.nonzero(mask)
                x, y = xs.min(), ys.min()
                assert ann['bbox'] == [x, y, xs.max() - x + 1, ys.max() - y + 1]
                assert ann['area'] == mask.sum()
                bx, by, bw, bh = ann['bbox']
                assert bx >= 0 and by >= 0
                assert bx + bw <= img['width'] and by + bh <= img['height']
                # Object sizes are relative to the long side, the same in every orientation.
                assert max(bw, bh) <= MAX_REL * SIDE + 1
                coverage += mask
            assert coverage.max() == 1, 'visible masks are disjoint'


def test_mixed_record_differs_from_square(root: Path, mixed_root: Path) -> None:
    square = {split: read_toy_info(root, split)['generator'] for split in SPLITS}
    mixed = {split: read_toy_info(mixed_root, split)['generator'] for split in SPLITS}
    assert all(record['mixed_sizes'] is True for record in mixed.values())
    # Square sets keep the record they had before the option existed.
    assert all('mixed_sizes' not in record for record in square.values())
    counts = (MIXED['num_train'], MIXED['num_val'])
    args = (MIXED['img_size'], MIXED['seed'])
    assert dataset_status(mixed_root, *counts, *args, mixed_sizes=True) == 'current'
    assert dataset_status(mixed_root, *counts, *args) == 'replaceable'
    square_counts = (KWARGS['num_train'], KWARGS['num_val'])
    assert dataset_status(root, *square_counts, *args) == 'current'
    assert dataset_status(root, *square_counts, *args, mixed_sizes=True) == 'replaceable'


def test_mixed_images_seeded_by_index(mixed_root: Path, tmp_path: Path) -> None:
    """An image, its size included, depends on its own index only, not on the split sizes."""
    again = _tree(make_dataset(tmp_path / 'again', **MIXED))
    assert again == _tree(mixed_root)
    fewer = _tree(make_dataset(tmp_path / 'fewer', **{**MIXED, 'num_train': 4, 'num_val': 6}))
    for split, count in (('train', 4), ('val', MIXED['num_val'])):
        for index in range(count):
            name = f'{split}/{index:06d}.jpg'
            assert fewer[name] == again[name], name


def test_mixed_sizes_cli(tmp_path: Path) -> None:
    out = tmp_path / 'mixed'
    assert main(['--out', str(out), '--num-train', '6', '--num-val', '1', '--img-size', '64',
                 '--mixed-sizes']) == 0
    assert read_toy_info(out, 'train')['generator']['mixed_sizes'] is True
    with Image.open(out / 'train' / '000000.jpg') as im:
        assert max(im.size) == 64


def test_mmdet_coco_dataset_reads_mixed(mixed_root: Path, mixed_cocos: dict[str, COCO]) -> None:
    """Non-square images and their RLE masks through MMDetection's loading path (needs mmcv)."""
    pytest.importorskip('mmcv')
    from mmcv.transforms import LoadImageFromFile
    from mmdet.datasets import CocoDataset
    from mmdet.datasets.transforms import LoadAnnotations

    dataset = CocoDataset(
        data_root=str(mixed_root), ann_file='annotations/instances_train.json',
        data_prefix=dict(img='train/'), metainfo=dict(classes=CLASSES),
        pipeline=[LoadImageFromFile(), LoadAnnotations(with_bbox=True, with_mask=True)])
    coco = mixed_cocos['train']
    shapes = set()
    for sample in dataset:
        img = coco.loadImgs(sample['img_id'])[0]
        assert sample['img'].shape == (img['height'], img['width'], 3)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=sample['img_id']))
        expected = np.stack([coco.annToMask(a) for a in anns])
        np.testing.assert_array_equal(sample['gt_masks'].masks, expected)
        shapes.add(sample['img'].shape[:2])
    assert shapes == MIXED_HW
