"""End-to-end run of tools/analysis/benchmark_train.py on a shortened ViT-S (CPU, one thread)."""
import csv
import math

import pytest
import torch

from tools.analysis import benchmark_train

MAIN_COLUMNS = ['model', 'input', 'method', 'blocks', 'trainable_params', 'train_ms',
                'train_vs_lora', 'train_mem_mb', 'mem_vs_lora', 'mem_vs_full', 'infer_ms',
                'infer_vs_lora', 'model_mb', 'build_transient_mb', 'mem_measure']
SWEEP_COLUMNS = ['model', 'input', 'method', 'k', 'blocks', 'trainable_params', 'train_ms',
                 'train_vs_all', 'train_mem_mb', 'mem_vs_all', 'model_mb',
                 'build_transient_mb', 'mem_measure']
MIB = 2**20
WIDTH, DEPTH = 384, 2  # ViT-S, shortened to 2 blocks


pytestmark = pytest.mark.usefixtures('one_thread')


def read_csv(path):
    with open(path) as file:
        reader = csv.DictReader(file)
        return reader.fieldnames, {(row['method'], row.get('k')): row for row in reader}


def test_memory_meter_sees_a_known_allocation():
    """64 MiB allocated and freed after start: the peak growth is those 64 MiB, not less (a
    meter that missed it) and not much more (one that counted what was there before)."""
    meter = benchmark_train.MemoryMeter('cpu')
    meter.start()
    block = torch.ones(16 * MIB)  # 16 Mi float32, every page touched
    del block
    growth = meter.peak_growth() / MIB
    assert 63 <= growth <= 72, (growth, meter.measure)


def test_methods_come_from_the_demo_leaves():
    lora = benchmark_train.load_method('lora')
    assert (lora.adapter, lora.frozen) == (dict(type='LoRA', rank=8, targets=('qkv',)), True)
    full = benchmark_train.load_method('full')
    assert (full.adapter, full.frozen) == (None, False)
    recipe = benchmark_train.load_method('moppa_paper_recipe')
    assert [spec['type'] for spec in recipe.adapter] == ['MoPPAPaper', 'RLRR', 'SSF']


def test_benchmark_end_to_end(tmp_path, capsys):
    benchmark_train.main([
        '--models', 'vit_small_patch14_dinov2', '--depth', str(DEPTH), '--size', '64', '64',
        '--batch', '1', '--repeats', '1', '--warmup', '0', '--threads', '1',
        '--methods', 'moppa', 'frozen', 'full',  # lora is added as the reference
        '--last-k', '1', '--sweep-methods', 'lora', 'full', '--out', str(tmp_path)])
    printed = capsys.readouterr().out
    assert 'torch ' in printed and 'load average' in printed and '| moppa |' in printed
    assert printed == (tmp_path / 'benchmark_train.md').read_text() + '\n'

    columns, rows = read_csv(tmp_path / 'benchmark_train.csv')
    assert columns == MAIN_COLUMNS
    assert sorted(method for method, _ in rows) == ['frozen', 'full', 'lora', 'moppa']
    for (method, _), row in rows.items():
        for key in ('train_ms', 'train_vs_lora', 'infer_ms', 'infer_vs_lora', 'model_mb'):
            assert math.isfinite(float(row[key])) and float(row[key]) > 0, (method, key)
        assert float(row['train_mem_mb']) >= 0, method
    lora, full = rows['lora', None], rows['full', None]
    for key in ('train_vs_lora', 'mem_vs_lora', 'infer_vs_lora'):
        assert float(lora[key]) == 1.0, key
    assert float(full['mem_vs_full']) == 1.0
    params = {method: int(row['trainable_params']) for (method, _), row in rows.items()}
    # LoRA rank 8 on the fused qkv (D -> 3D) of each block: 8 * (D + 3D).
    assert params['lora'] == 8 * 4 * WIDTH * DEPTH
    assert params['frozen'] == 0 < params['moppa'] < params['lora'] < 50 * params['lora'] \
        < params['full']
    # Full fine-tuning keeps gradients and two AdamW states of every trainable parameter
    # (12 bytes each) beyond what LoRA keeps: the memory measure must see them.
    extra = float(full['train_mem_mb']) - float(lora['train_mem_mb'])
    assert extra >= 0.9 * 12 * (params['full'] - params['lora']) / MIB, extra

    columns, sweep = read_csv(tmp_path / 'benchmark_train_last_k.csv')
    assert columns == SWEEP_COLUMNS
    assert sorted(sweep) == [('full', '1'), ('full', '2'), ('lora', '1'), ('lora', '2')]
    for method in ('lora', 'full'):
        assert float(sweep[method, '2']['train_vs_all']) == 1.0
        assert float(sweep[method, '2']['mem_vs_all']) == 1.0
        assert math.isfinite(float(sweep[method, '1']['train_vs_all']))
    assert int(sweep['lora', '2']['trainable_params']) == params['lora']
    assert 2 * int(sweep['lora', '1']['trainable_params']) == params['lora']
    assert int(sweep['full', '2']['trainable_params']) == params['full']
    # The last block of two (and the final norm): less than half of full, with its AdamW
    # states and gradients gone from memory too.
    full_last = int(sweep['full', '1']['trainable_params'])
    assert params['lora'] < full_last < params['full'] / 2
    assert float(sweep['full', '1']['mem_vs_all']) < 0.8
