"""Smoke runs of tools/analysis (unit benchmark, adaptation analysis) at tiny sizes."""
import csv
import math

import pytest
import torch

from moppa_det.ops import dct2
from tools.analysis import adaptation_analysis, benchmark_backbone_dtype, benchmark_unit


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny workloads: extra threads only add contention (and flakiness) on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_benchmark_rows_ratios_and_matched_budgets(capsys):
    rows = benchmark_unit.run_benchmark(dims=(32,), grids=(4, 5), batch=1, warmup=1,
                                        repeats=2, prefix_tokens=1)
    assert [(r['dim'], r['grid']) for r in rows] == [(32, 4), (32, 5)]
    for row in rows:
        for key in ('time_vs_lora', 'time_vs_adaptformer', 'saved_vs_lora',
                    'saved_vs_adaptformer'):
            assert math.isfinite(row[key]) and row[key] > 0, key
        # Documented tolerance: half a rank's (bottleneck's) worth of parameters.
        assert abs(row['lora_params'] - row['moppa_params']) <= 2 * 32
        assert abs(row['adaptformer_params'] - row['moppa_params']) <= 32 + 1
        assert row['qkv_params'] == 0
    benchmark_unit.main(['--dims', '16', '--grids', '3', '--repeats', '1', '--warmup', '1'])
    printed = capsys.readouterr().out
    assert 'MoPPA/LoRA' in printed and 'Saved activations' in printed


def test_backbone_dtype_benchmark_prints_both_times_and_their_ratio(capsys):
    benchmark_backbone_dtype.main(['--batch', '1', '--side', '64', '--repeats', '1'])
    out = capsys.readouterr().out
    times = [float(line.split()[1]) for line in out.splitlines() if line.endswith(' ms')]
    ratio = float(out.split('time ratio:')[1].strip().rstrip('x'))
    assert len(times) == 2 and all(t > 0 for t in times)
    assert ratio == pytest.approx(times[0] / times[1], rel=0.05)  # printed rounded


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
        assert tuple(reader.fieldnames) == adaptation_analysis.CSV_COLUMNS
        rows = list(reader)
    assert len(rows) == 2 * 2 * 2  # methods x budgets x seeds
    for row in rows:
        assert 0 < float(row['train_rel_mse']) < 10 and math.isfinite(float(row['test_rel_mse']))
    moppa = {r['size']: int(r['params']) for r in rows if r['method'] == 'moppa'}
    lora = [r for r in rows if r['method'] == 'lora']
    for row in lora:  # each LoRA budget is within D of a MoPPA budget
        assert min(abs(int(row['params']) - p) for p in moppa.values()) <= 16
    assert (tmp_path / 'adaptation_analysis.png').stat().st_size > 0
    assert 'MoPPA train' in capsys.readouterr().out
