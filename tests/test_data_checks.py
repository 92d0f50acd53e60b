"""Bad annotation files are named before a run starts."""
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
