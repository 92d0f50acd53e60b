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
from tools.data.make_toy_coco import CLASSES, SPLITS, main, make_dataset  # noqa: E402

# pycocotools 2.0.11 trips a numpy 2 DeprecationWarning inside its own decode; not ours to fix.
pytestmark = pytest.mark.filterwarnings('ignore:__array__ implementation:DeprecationWarning')

SIDE, MAX_REL = 128, 0.25
KWARGS = dict(num_train=6, num_val=3, img_size=SIDE, seed=3, max_rel_size=MAX_REL)


@pytest.fixture(scope='module')
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny dataset shared by the read-only checks."""
    return make_dataset(tmp_path_factory.mktemp('toy') / 'toy_coco', **KWARGS)


@pytest.fixture(scope='module')
def cocos(root: Path) -> dict[str, COCO]:
    """The pycocotools view of each split."""
    return {split: COCO(str(root / 'annotations' / f'instances_{split}.json'))
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
