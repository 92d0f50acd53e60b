"""tools/analysis/compare_methods.py end to end on a tiny ViT: two methods, one seed, 2
iterations each through the real tools/train.py; then its resumability, its refusal to mix
budgets, the tune split and the learning-rate selection."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
from conftest import REPO_ROOT, TINY_VIT
from mmengine.config import Config

from moppa_det.models.backbones import MoPPAViT
from tools.analysis import compare_methods


def write_leaf(config_dir: Path, method: str, weights: Path) -> None:
    """A tiny version of the demo leaf of ``method``: same adapter, tiny backbone."""
    backbone = dict(TINY_VIT, checkpoint=str(weights), adapter_blocks=None)
    (config_dir / f'{method}.py').write_text(f"""
_base_ = ['{REPO_ROOT / 'configs/demo' / f'{method}.py'}']
# score_thr 0: two iterations in, scores are low; CocoMetric skips an empty result set.
model = dict(backbone={backbone!r}, neck=dict(in_channels=32),
             test_cfg=dict(rcnn=dict(score_thr=0.0)))
train_dataloader = dict(num_workers=0, persistent_workers=False)
val_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False)
""")


@pytest.fixture(scope='module')
def comparison(tmp_path_factory):
    root = tmp_path_factory.mktemp('compare')
    weights = root / 'tiny_vit.pth'
    torch.manual_seed(0)
    torch.save(MoPPAViT(**TINY_VIT, moppa=None).model.state_dict(), weights)
    config_dir = root / 'leaves'
    config_dir.mkdir()
    for method in ('lora', 'moppa'):
        write_leaf(config_dir, method, weights)
    argv = ['--methods', 'lora', 'moppa', '--seeds', '0', '--iters', '2', '--warmup-iters', '1',
            '--image-side', '64', '--config-dir', str(config_dir), '--data-root',
            str(root / 'toy'), '--num-train', '10', '--num-val', '4', '--work-dir',
            str(root / 'work')]
    summary = compare_methods.main(argv)
    return root / 'work', argv, summary


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


def test_runs_csv_has_one_finished_row_per_run_with_metrics_and_budget(comparison):
    work_dir, _, _ = comparison
    rows = read_csv(work_dir / 'runs.csv')
    assert [(r['method'], r['seed'], r['split']) for r in rows] == [
        ('lora', '0', 'val'), ('moppa', '0', 'val')]
    for row in rows:
        assert row['status'] == 'finished', row['error']
        for name in ('bbox_mAP', 'segm_mAP', 'bbox_mAP_s', 'bbox_mAP_m'):
            value = float(row[name])
            assert value == -1.0 or 0.0 <= value <= 1.0, (name, value)  # COCO: -1 = no object
        assert 0.0 <= float(row['bbox_mAP']) <= 1.0
        assert float(row['wall_seconds']) > 0 and float(row['iter_seconds']) > 0
        assert (row['iters'], row['batch_size'], row['image_side']) == ('2', '2', '64')
        assert float(row['lr']) == 1e-3
        # The written config carries the budget, not the demo's 700 iterations at 320 px.
        config = Config.fromfile(work_dir / 'runs/val' / row['method'] / 'lr0.001_seed0/config.py')
        assert config.train_cfg.max_iters == 2 and config.train_dataloader.batch_size == 2
        for loader in (config.train_dataloader, config.val_dataloader):
            resize = [s for s in loader.dataset.pipeline if s['type'] == 'Resize']
            assert [tuple(s['scale']) for s in resize] == [(64, 64)]
    lora, moppa = rows
    # Different adapters, different budgets; the heads are the same, so the gap is the units'.
    assert 0 < int(lora['backbone_trainable']) != int(moppa['backbone_trainable']) > 0
    assert (int(moppa['trainable']) - int(moppa['backbone_trainable'])
            == int(lora['trainable']) - int(lora['backbone_trainable']))


def test_summary_markdown_and_plot(comparison):
    work_dir, _, summary = comparison
    rows = read_csv(work_dir / 'summary.csv')
    assert [r['method'] for r in rows] == ['lora', 'moppa']
    assert all(r['seeds'] == '1' and float(r['bbox_mAP_std']) == 0.0 for r in rows)
    assert math.isfinite(summary[0]['bbox_mAP_mean'])
    table = (work_dir / 'summary.md').read_text()
    lines = table.splitlines()  # header, separator, one row per method
    assert len(lines) == 4 and lines[2].startswith('| lora | ') and '± 0.000' in lines[3]
    assert (work_dir / 'map_vs_params.png').stat().st_size > 10_000


def test_finished_runs_are_not_trained_again(comparison, monkeypatch):
    work_dir, argv, summary = comparison

    def no_training(*args, **kwargs):
        raise AssertionError('a finished run was trained again')

    monkeypatch.setattr(compare_methods, 'train', no_training)
    again = compare_methods.main(argv)
    assert [e['bbox_mAP_mean'] for e in again] == [e['bbox_mAP_mean'] for e in summary]


def test_a_finished_run_with_another_budget_stops_the_tool(comparison, monkeypatch):
    work_dir, argv, _ = comparison
    monkeypatch.setattr(compare_methods, 'train', lambda *a, **k: pytest.fail('trained'))
    changed = [value if value != '2' or argv[i - 1] != '--iters' else '3'
               for i, value in enumerate(argv)]
    with pytest.raises(SystemExit, match='trained with another budget'):
        compare_methods.main(changed)


def test_tune_split_holds_out_train_images_and_never_val(tmp_path):
    from tools.data.make_toy_coco import make_dataset
    data_root = Path(make_dataset(tmp_path / 'toy', num_train=10, num_val=3, img_size=64))
    splits = compare_methods.make_splits(data_root, tmp_path / 'work')
    train = json.loads(splits['tune'].train_ann.read_text())
    tune = json.loads(splits['tune'].eval_ann.read_text())
    train_ids = {im['id'] for im in train['images']}
    tune_ids = {im['id'] for im in tune['images']}
    all_train = json.loads((data_root / 'annotations/instances_train.json').read_text())
    assert len(tune_ids) == 2 and not train_ids & tune_ids
    assert train_ids | tune_ids == {im['id'] for im in all_train['images']}
    assert all(a['image_id'] in tune_ids for a in tune['annotations'])
    assert splits['tune'].eval_images == 'train/' and splits['val'].eval_images == 'val/'


def test_best_rates_pick_the_highest_mean_and_count_failures_as_zero():
    def row(method, lr, value, status='finished'):
        return dict(method=method, lr=lr, bbox_mAP=value, status=status)

    rows = [row('lora', 1e-3, 0.20), row('lora', 3e-3, 0.25),
            row('full', 1e-3, math.nan, 'failed'), row('full', 1e-4, 0.05)]
    assert compare_methods.best_rates(rows) == {'lora': 3e-3, 'full': 1e-4}
    table = compare_methods.sensitivity_markdown(rows, ['lora', 'full'])
    assert '| lora | – | 0.200 | 0.250 |' in table
    assert '| full | 0.050 | failed | – |' in table


def test_missing_leaf_and_bad_options_are_named(tmp_path, capsys):
    with pytest.raises(SystemExit):
        compare_methods.parse_args(['--methods', 'prompt_tuning'])
    assert "no leaf config for ['prompt_tuning']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        compare_methods.parse_args(['--select-lr'])
    assert '--select-lr needs --lr-grid' in capsys.readouterr().err


def test_a_run_that_detects_nothing_scores_zero_with_a_note(comparison, monkeypatch, tmp_path):
    """CocoMetric logs no metric when no box passes the score threshold (seen with full
    fine-tuning at lr 1e-3): the run is scored 0, not reported as failed or missing."""
    work_dir, _, _ = comparison
    leaves = work_dir.parent / 'leaves'
    monkeypatch.setattr(compare_methods, 'run_with_progress', lambda *a, **k: 12.0)
    run = compare_methods.Run('lora', 0, 1e-3, 'val')
    budget = compare_methods.Budget(2, 1, 2, 64)
    split = compare_methods.make_splits(work_dir.parent / 'toy', work_dir)['val']
    row = compare_methods.train(run, leaves / 'lora.py', budget, split, work_dir.parent / 'toy',
                                tmp_path / 'run')
    assert row['status'] == 'finished' and row['wall_seconds'] == 12.0
    assert row['bbox_mAP'] == row['segm_mAP'] == 0.0 and 'no detection' in row['note']
    summary = compare_methods.summarize([dict(row, backbone_trainable=1, trainable=2)], ['lora'])
    assert '1 (1 detected nothing)' in compare_methods.summary_markdown(summary)
