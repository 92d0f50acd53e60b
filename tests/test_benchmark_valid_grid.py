"""Smoke run of tools/analysis/benchmark_valid_grid.py at tiny sizes (no timing assertions)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # makes ``tools`` importable

from tools.analysis import benchmark_valid_grid as bench  # noqa: E402

TINY = ['--dim', '16', '--sides', '64', '40', '--vit-sides', '64', '40', '--vit-depth', '1',
        '--vit-embed-dim', '32', '--repeats', '1', '--warmup', '0', '--threads', '1']


def test_sizes_and_coverage() -> None:
    sizes = bench.mixed_sizes(1216, 800)
    assert sizes == [(800, 1216), (1216, 800)]
    assert bench.grid_sizes(sizes, 16) == [(50, 76), (76, 50)]
    assert bench.covered([(50, 76), (76, 50)], (76, 76)) == pytest.approx(50 / 76)


def test_prints_both_cases_and_passes(capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip('mmdet')  # the backbone case builds a MoPPAViT
    assert bench.main(TINY) == 0
    lines = capsys.readouterr().out.splitlines()
    header = lines.index(next(line for line in lines if line.startswith('case')))
    assert lines[header].split() == list(bench.COLUMNS)
    rows = [line.rsplit(None, 5) for line in lines[header + 1:]]
    assert [row[1] for row in rows] == list(bench.PASSES) * 2
    assert rows[0][0].startswith('unit D=16, 4x4 tokens')
    assert rows[2][0].startswith('vit_small_patch16_224 x1 blocks D=32, 4x4 tokens')
    for _, _, valid_frac, padded_ms, valid_ms, ratio in rows:
        assert float(valid_frac) == pytest.approx(0.75)  # 3x4 of 4x4 tokens per image
        assert float(padded_ms) > 0 and float(valid_ms) > 0 and float(ratio) > 0


def test_unit_only(capsys: pytest.CaptureFixture) -> None:
    assert bench.main(TINY + ['--no-backbone']) == 0
    out = capsys.readouterr().out
    assert out.count('unit D=16') == 2 and 'vit_' not in out.split('case', 1)[1]
