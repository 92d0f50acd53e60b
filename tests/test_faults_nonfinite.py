"""A non-finite loss stops training before the step is applied, naming the iteration and the
terms, and leaves the last good checkpoint as the newest; ``action='skip'`` skips the step."""
from __future__ import annotations

import math
import subprocess
from pathlib import Path

import torch
from test_faults_resume import INTERVAL, MAX_ITERS, train, write_config
from test_resume import child_env, train_command

from moppa_det.engine.hooks.non_finite_loss_hook import non_finite_terms
from moppa_det.engine.safe_checkpoint import load_from_local_safe

NAN_AT = INTERVAL + 2  # 6: after the checkpoint at 4, before the one at 8


def test_non_finite_terms_are_named() -> None:
    losses = dict(loss_cls=torch.tensor(0.5), loss_bbox=[torch.tensor(1.0), torch.tensor(
        float('inf'))], loss_mask=torch.tensor([1.0, float('nan')]), acc=torch.tensor(float('nan')))
    bad = non_finite_terms(losses)
    assert list(bad) == ['loss_bbox', 'loss_mask']  # 'acc' is not summed into the loss
    assert bad['loss_bbox'] == float('inf') and math.isnan(bad['loss_mask'])


def test_training_stops_at_a_nan_loss_and_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    config = write_config(tmp_path / 'toy.py', num_workers=0,
                          extra=f"model = dict(type='NoisyToyRegressor', nan_at_iter={NAN_AT})")
    work_dir = tmp_path / 'work'
    result = subprocess.run(train_command(config, work_dir), env=child_env(),
                            capture_output=True, text=True, timeout=180)
    assert result.returncode != 0
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith(f'NonFiniteLossError: iteration {NAN_AT}: non-finite loss '
                                'terms: loss_aux=nan.'), last_line
    assert f'the last good checkpoint is {work_dir / f"iter_{INTERVAL}.pth"}' in last_line
    assert 'Traceback' not in result.stderr
    assert sorted(p.name for p in work_dir.glob('*.pth')) == [f'iter_{INTERVAL}.pth']
    assert (work_dir / 'last_checkpoint').read_text().endswith(f'iter_{INTERVAL}.pth')
    state = load_from_local_safe(str(work_dir / f'iter_{INTERVAL}.pth'))['state_dict']
    assert all(torch.isfinite(value).all() for value in state.values())


def test_skip_action_skips_the_step_and_trains_on(tmp_path: Path) -> None:
    config = write_config(tmp_path / 'toy.py', num_workers=0, extra=f"""
model = dict(type='NoisyToyRegressor', nan_at_iter={NAN_AT})
custom_hooks = [dict(type='NonFiniteLossHook', action='skip')]
""")
    work_dir = tmp_path / 'work'
    output = train(config, work_dir)
    assert f'iteration {NAN_AT}: non-finite loss terms: loss_aux=nan; step skipped' in output
    final = load_from_local_safe(str(work_dir / f'iter_{MAX_ITERS}.pth'))
    assert all(torch.isfinite(value).all() for value in final['state_dict'].values())
    # Adam counted every step but the skipped one.
    assert {int(s['step']) for s in final['optimizer']['state'].values()} == {MAX_ITERS - 1}
