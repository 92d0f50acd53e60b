"""``python -m moppa_det.env``: versions, mmcv's compiled ops, exit status."""
from __future__ import annotations

import pytest

from moppa_det import env


@pytest.fixture(scope='module')
def report() -> dict:
    return env.collect_report()


def test_report_names_every_package(report: dict) -> None:
    assert set(report['packages']) == {'torch', 'torchvision', 'mmengine', 'mmcv', 'mmdet',
                                       'timm', 'pycocotools', 'numpy'}
    assert not report['import_errors'], f"run `make env`: {report['import_errors']}"
    assert all(version and version != 'unknown' for version in report['packages'].values())
    assert report['python'].startswith('3.')


def test_mmcv_ops_run(report: dict) -> None:
    assert report['ops_loaded'], report['ops_error']
    assert report['ops_error'] == ''


def test_cuda_section_is_consistent(report: dict) -> None:
    cuda = report['cuda']
    assert isinstance(cuda['available'], bool)
    assert bool(cuda['gpus']) == cuda['available']


def test_main_prints_report_and_succeeds(capsys: pytest.CaptureFixture) -> None:
    assert env.main() == 0
    out = capsys.readouterr().out
    for name in ('python', 'torch', 'mmcv', 'mmdet', 'pycocotools', 'mmcv ops', 'CUDA'):
        assert f'\n{name} ' in f'\n{out}'
    assert 'ok (RoIAlign, nms)' in out


def test_main_names_a_missing_package(monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture) -> None:
    real_import = env.import_package
    monkeypatch.setattr(env, 'import_package', lambda name: (
        (None, "ModuleNotFoundError: No module named 'mmcv'") if name == 'mmcv'
        else real_import(name)))

    assert env.main() == 1
    captured = capsys.readouterr()
    assert 'mmcv' in captured.out and 'MISSING' in captured.out
    assert "mmcv does not import (ModuleNotFoundError: No module named 'mmcv')" in captured.err
    assert 'make env' in captured.err


def test_main_names_broken_ops(monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(env, 'check_mmcv_ops',
                        lambda: (False, "ImportError: cannot import name 'RoIAlign'"))

    assert env.main() == 1
    err = capsys.readouterr().err
    assert "mmcv's compiled ops (RoIAlign, nms) do not work" in err
    assert 'MMCV_WITH_OPS=1' in err and 'make env' in err
