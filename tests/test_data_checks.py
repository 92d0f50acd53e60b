"""Bad annotation files and missing images are named before a run starts."""
import json
import subprocess
import sys

import pytest
from conftest import REPO_ROOT
from mmengine.config import Config

from moppa_det.engine.data_checks import check_annotation_files

DEMO_CONFIG = REPO_ROOT / 'configs/demo/mask_rcnn_vits14_moppa_toy.py'


def config_with_root(root):
    cfg = Config.fromfile(str(DEMO_CONFIG))
    for split in ('train', 'val', 'test'):
        cfg[f'{split}_dataloader'].dataset.data_root = f'{root}/'
    for split in ('val', 'test'):
        cfg[f'{split}_evaluator'].ann_file = f'{root}/annotations/instances_val.json'
    return cfg


def test_missing_and_corrupt_annotation_files_are_named(tmp_path):
    (tmp_path / 'annotations').mkdir()
    cfg = config_with_root(tmp_path)
    with pytest.raises(SystemExit, match='train_dataloader.dataset.ann_file: .*instances_train.json'
                                         ' does not exist'):
        check_annotation_files(cfg)
    (tmp_path / 'annotations/instances_train.json').write_text('{"images": [')
    with pytest.raises(SystemExit, match='instances_train.json is not valid JSON'):
        check_annotation_files(cfg)
    (tmp_path / 'annotations/instances_train.json').write_text('{"annotations": []}')
    with pytest.raises(SystemExit, match='not a COCO annotation file .no images, categories'):
        check_annotation_files(cfg)
    check_annotation_files(cfg, ('nothing',))  # only the requested splits are checked


def test_train_tool_stops_on_a_missing_annotation_file(tmp_path):
    result = subprocess.run(
        [sys.executable, 'tools/train.py', str(DEMO_CONFIG), '--work-dir', str(tmp_path / 'w'),
         '--cfg-options', f'train_dataloader.dataset.data_root={tmp_path}/'],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert 'instances_train.json does not exist' in result.stderr
    assert not (tmp_path / 'w').exists(), 'nothing may be written before the check'


def write_annotations(root, images, categories=({'id': 1, 'name': 'disc'},)):
    (root / 'annotations').mkdir(exist_ok=True)
    content = dict(images=images, annotations=[], categories=list(categories))
    for split in ('train', 'val'):
        (root / f'annotations/instances_{split}.json').write_text(json.dumps(content))


def test_empty_annotation_file_is_named(tmp_path):
    (tmp_path / 'annotations').mkdir()
    (tmp_path / 'annotations/instances_train.json').write_text('')
    with pytest.raises(SystemExit, match=r'train_dataloader\.dataset\.ann_file: .*'
                                         r'instances_train\.json is empty \(0 bytes\)'):
        check_annotation_files(config_with_root(tmp_path), ('train',))


def test_no_images_and_no_categories_are_named(tmp_path):
    write_annotations(tmp_path, images=[])
    with pytest.raises(SystemExit, match='instances_train.json lists no images'):
        check_annotation_files(config_with_root(tmp_path), ('train',))
    write_annotations(tmp_path, images=[], categories=())
    with pytest.raises(SystemExit, match='instances_train.json defines no categories'):
        check_annotation_files(config_with_root(tmp_path), ('train',))


def test_missing_images_are_named_before_training(tmp_path):
    images = [dict(id=i, file_name=f'img_{i}.png', width=8, height=8) for i in range(8)]
    write_annotations(tmp_path, images)
    (tmp_path / 'train').mkdir()
    (tmp_path / 'train/img_0.png').write_bytes(b'x')
    (tmp_path / 'train/img_3.png').write_bytes(b'x')
    with pytest.raises(SystemExit) as caught:
        check_annotation_files(config_with_root(tmp_path), ('train',))
    message = str(caught.value)
    assert message.startswith('train_dataloader.dataset: 6 of the 8 images listed in ')
    assert f'missing under {tmp_path}/train/: img_1.png, img_2.png, img_4.png, img_5.png, ' \
           'img_6.png, ...' in message
    for name in ('img_1.png', 'img_2.png', 'img_4.png', 'img_5.png', 'img_6.png', 'img_7.png'):
        (tmp_path / 'train' / name).write_bytes(b'x')
    check_annotation_files(config_with_root(tmp_path), ('train',))
