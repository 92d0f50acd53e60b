"""Smoke runs of tools/analysis (unit benchmark, adaptation analysis) at tiny sizes."""
import csv
import math

import pytest
import torch

from moppa_det.ops import dct2
from tools.analysis import adaptation_analysis, benchmark_backbone_dtype, benchmark_unit

pytestmark = pytest.mark.usefixtures('one_thread')


def test_benchmark_rows_ratios_and_matched_budgets(capsys):
    rows = benchmark_unit.run_benchmark(dims=(32,), grids=(4, 5), batch=1, warmup=1,
                                        repeats=2, prefix_tokens=1)
    assert [(r['dim'], r['grid']) for r in rows] == [(32, 4), (32, 5)]
    for row in rows:
        for key in ('time_vs_lora', 'time_vs_adaptformer', 'saved_vs_lora',
                    'saved_vs_adaptformer'):
            assert math.isfinite(row[key]) and row[key] > 0, key
        # Budgets worked out by hand at D = 32. MoPPA (r = 8): down 32*8+8, up 8*32+32, router
        # 32*3+3, k/c/t 3*8, source 14*14 = 871. LoRA on qkv, rank round(871 / 128) = 7:
        # 7 * (32 + 96) = 896. AdaptFormer, bottleneck round((871 - 32) / 65) = 13:
        # 2*32*13 + 13 + 32 = 877.
        assert (row['moppa_params'], row['lora_params'], row['adaptformer_params'],
                row['qkv_params']) == (871, 896, 877, 0)
        assert (row['lora_size'], row['adaptformer_size']) == ('r=7', 'r=13')
    benchmark_unit.main(['--dims', '16', '--grids', '3', '--repeats', '1', '--warmup', '1'])
    printed = capsys.readouterr().out
    assert 'MoPPA/LoRA' in printed and 'Saved activations' in printed


def test_backbone_dtype_benchmark_prints_both_times_and_their_ratio(capsys, monkeypatch):
    """Each backbone really runs; its time is replaced by a known one (bfloat16: 12 ms per step,
    float32: 30 ms), so the medians, their labels and the ratio's direction can be checked."""
    measured = benchmark_backbone_dtype.step_seconds
    steps = {'bfloat16': 0, None: 0}

    def known_seconds(backbone, images):
        measured(backbone, images)
        steps[backbone.autocast_dtype] += 1
        return 0.012 if backbone.autocast_dtype == 'bfloat16' else 0.030

    monkeypatch.setattr(benchmark_backbone_dtype, 'step_seconds', known_seconds)
    benchmark_backbone_dtype.main(['--batch', '1', '--side', '64', '--repeats', '1'])
    out = capsys.readouterr().out
    times = {line.split()[0]: float(line.split()[1]) for line in out.splitlines()
             if line.endswith(' ms')}
    assert times == {'float32': 30.0, 'bfloat16': 12.0}
    assert 'float32 / bfloat16 time ratio: 2.50x' in out
    assert steps == {'bfloat16': 2, None: 2}  # warm-up and one repeat each


def test_target_is_high_frequency_and_normalised():
    generator = torch.Generator().manual_seed(0)
    target = adaptation_analysis.make_target(32, (16, 16), components=8, generator=generator)
    x = torch.randn(4, 256, 32, generator=generator)
    residual = target(x)
    assert 0.7 < float(residual.square().mean() / x.square().mean()) < 1.3
    spectrum = dct2(residual.transpose(1, 2).reshape(4, 32, 16, 16)).square().sum(dim=(0, 1))
    low = adaptation_analysis.radial_frequency(16, 16) < 0.15
    assert float(spectrum[low].sum() / spectrum.sum()) < 0.05


def test_adaptation_analysis_writes_csv_and_png(tmp_path, capsys):
    adaptation_analysis.main([
        '--out-dir', str(tmp_path), '--dim', '16', '--grid', '4', '--bottlenecks', '1', '2',
        '--samples', '2', '--components', '4', '--steps', '3', '--lrs', '0.01', '--seeds', '0',
        '1', '--map-bottleneck', '2'])
    with open(tmp_path / 'results.csv') as file:
        reader = csv.DictReader(file)
        assert reader.fieldnames == ['method', 'size', 'params', 'seed', 'lr',
                                     'train_rel_mse', 'test_rel_mse']
        rows = list(reader)
    assert len(rows) == 2 * 2 * 2  # methods x budgets x seeds
    for row in rows:
        assert 0 < float(row['train_rel_mse']) < 10 and math.isfinite(float(row['test_rel_mse']))
    # Budgets worked out by hand at D = 16. MoPPA of bottleneck r: down 16r + r, up 16r + 16,
    # router 16*3 + 3, k/c/t 3r, source 14*14: 299 (r = 1), 335 (r = 2). LoRA on a D x D map,
    # 2 * 16 per rank, rank round(params / 32): 9 -> 288, 10 -> 320 (each within D).
    budgets = {(r['method'], r['size'], r['params']) for r in rows}
    assert budgets == {('moppa', '1', '299'), ('moppa', '2', '335'),
                       ('lora', '9', '288'), ('lora', '10', '320')}
    assert (tmp_path / 'adaptation_analysis.png').stat().st_size > 0
    assert 'MoPPA train' in capsys.readouterr().out
