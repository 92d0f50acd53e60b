"""Tests for the data step of tools/demo.py: reuse, regeneration and refusal."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # makes ``tools`` importable

from tools.demo import prepare_data  # noqa: E402
from tools.data.make_toy_coco import read_toy_info  # noqa: E402


def _num_images(root: Path, split: str) -> int:
    return len(json.loads((root / 'annotations' / f'instances_{split}.json').read_text())['images'])


def test_reuses_a_matching_set_and_regenerates_another(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / 'toy_coco'
    prepare_data(root, num_train=3, num_val=2)
    assert (_num_images(root, 'train'), _num_images(root, 'val')) == (3, 2)
    assert read_toy_info(root, 'train')['generator']['num_images'] == 3
    first = (root / 'train').stat().st_ino  # a regenerated set is a new directory

    prepare_data(root, num_train=3, num_val=2)
    assert 'using the toy dataset' in capsys.readouterr().out
    assert (root / 'train').stat().st_ino == first

    (root / 'val' / '000001.jpg').unlink()  # an incomplete set is made again
    prepare_data(root, num_train=3, num_val=2)
    assert 'regenerating' in capsys.readouterr().out
    assert (root / 'val' / '000001.jpg').is_file()

    prepare_data(root, num_train=4, num_val=2)
    assert 'made with other arguments; regenerating' in capsys.readouterr().out
    assert (_num_images(root, 'train'), _num_images(root, 'val')) == (4, 2)


def test_regenerates_a_set_made_before_the_generator_was_recorded(tmp_path: Path) -> None:
    root = tmp_path / 'toy_coco'
    prepare_data(root, num_train=3, num_val=2)
    ann_file = root / 'annotations' / 'instances_train.json'
    coco = json.loads(ann_file.read_text())
    del coco['info']['generator']
    ann_file.write_text(json.dumps(coco))
    prepare_data(root, num_train=3, num_val=2)
    assert read_toy_info(root, 'train')['generator']['num_images'] == 3


def test_refuses_a_toy_set_mixed_with_other_files(tmp_path: Path) -> None:
    root = tmp_path / 'toy_coco'
    prepare_data(root, num_train=3, num_val=2)
    notes = root / 'my_notes.txt'
    notes.write_text('keep me')
    with pytest.raises(SystemExit, match='did not write'):
        prepare_data(root, num_train=4, num_val=2)
    assert notes.read_text() == 'keep me'
    assert _num_images(root, 'train') == 3


def test_refuses_to_overwrite_foreign_data(tmp_path: Path) -> None:
    root = tmp_path / 'coco'
    (root / 'annotations').mkdir(parents=True)
    foreign = root / 'annotations' / 'instances_train.json'
    foreign.write_text(json.dumps({'info': {'description': 'my own data'}, 'images': []}))
    with pytest.raises(SystemExit, match='did not write'):
        prepare_data(root, num_train=3, num_val=2)
    assert json.loads(foreign.read_text())['info']['description'] == 'my own data'
    assert sorted(p.name for p in root.rglob('*')) == ['annotations', 'instances_train.json']
