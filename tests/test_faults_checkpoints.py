"""Checkpoints a kill cannot corrupt, a corrupt latest checkpoint skipped on resume, and files
that are not checkpoints refused with their name (``tools/train.py --resume``, ``tools/test.py``).
"""
from __future__ import annotations

import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch
from test_faults_resume import train, write_config
from test_resume import REPO_ROOT, child_env, train_command

from moppa_det.engine.checkpoint_files import (
    CheckpointReadError,
    check_checkpoint_file,
    latest_good_checkpoint,
)
from moppa_det.engine.safe_checkpoint import load_from_local_safe

TEST = REPO_ROOT / 'tools' / 'test.py'
HOOKS = """default_hooks = dict(
    checkpoint=dict(type='CheckpointHook', interval={interval}, by_epoch=False,
                    max_keep_ckpts={keep}),
    logger=dict(type='LoggerHook', interval=1))"""


def wait_for_text(process: subprocess.Popen, log: Path, text: str, count: int = 1,
                  timeout: float = 120) -> None:
    """Waits until the run's log shows ``text`` ``count`` times."""
    deadline = time.monotonic() + timeout
    while log.read_text().count(text) < count:
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f'no {text!r} in the log ({process.returncode}):\n{log.read_text()}')
        time.sleep(0.05)


def good_checkpoint(path: Path) -> Path:
    torch.save(dict(meta=dict(iter=1), state_dict=dict(w=torch.arange(1000.0))), path)
    return path


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])


def flip_a_byte_in_the_tensor_data(path: Path) -> None:
    with zipfile.ZipFile(path) as archive:
        info = next(i for i in archive.infolist() if '/data/' in i.filename)
    data = bytearray(path.read_bytes())
    header = info.header_offset  # local header: name and extra lengths at bytes 26-29
    name_length = int.from_bytes(data[header + 26:header + 28], 'little')
    extra_length = int.from_bytes(data[header + 28:header + 30], 'little')
    data[header + 30 + name_length + extra_length + 8] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize('damage, expected', [
    (truncate, 'is truncated or corrupt'),
    (flip_a_byte_in_the_tensor_data, 'CRC mismatch'),
    (lambda p: p.write_text('model: resnet50\nlr: 0.1\n'), 'is not a checkpoint'),
    (lambda p: p.write_bytes(b''), 'is empty'),
])
def test_damaged_files_are_named(tmp_path: Path, damage, expected: str) -> None:
    path = good_checkpoint(tmp_path / 'iter_4.pth')
    check_checkpoint_file(str(path), load_from_local_safe)
    damage(path)
    with pytest.raises(CheckpointReadError, match=expected) as caught:
        check_checkpoint_file(str(path), load_from_local_safe)
    assert str(path) in str(caught.value)
    assert 'weights_only' not in str(caught.value)


def test_latest_good_checkpoint_skips_damaged_ones(tmp_path: Path) -> None:
    for step in (2, 4, 6):
        good_checkpoint(tmp_path / f'iter_{step}.pth')
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'iter_6.pth'))
    truncate(tmp_path / 'iter_6.pth')
    (tmp_path / 'iter_4.pth').write_text('not a checkpoint')
    warnings: list[str] = []
    assert latest_good_checkpoint(str(tmp_path), warnings.append) == str(tmp_path / 'iter_2.pth')
    assert 'iter_6.pth' in warnings[0] and 'iter_4.pth' in warnings[1]

    truncate(tmp_path / 'iter_2.pth')
    with pytest.raises(CheckpointReadError, match='no readable checkpoint'):
        latest_good_checkpoint(str(tmp_path), warnings.append)
    assert latest_good_checkpoint(str(tmp_path / 'empty'), warnings.append) is None


def test_kills_during_saves_leave_a_complete_checkpoint(tmp_path: Path) -> None:
    """SIGKILL while a 64 MiB checkpoint is half written, with ``max_keep_ckpts=1``:
    MMEngine's own hook deletes the previous checkpoint first and would leave nothing whole."""
    config = write_config(tmp_path / 'big.py', num_workers=0, max_iters=1000, extra=f"""
model = dict(type='NoisyToyRegressor', ballast_mib=64)
{HOOKS.format(interval=1, keep=1)}
""")
    work_dir, log = tmp_path / 'work', tmp_path / 'train.log'
    with log.open('w') as stream:
        process = subprocess.Popen(train_command(config, work_dir, '--resume'),
                                   env=child_env(), stdout=stream,
                                   stderr=subprocess.STDOUT)
        # The second save starts once the first is complete; kill it while it writes.
        wait_for_text(process, log, 'Saving checkpoint', count=2)
        deadline = time.monotonic() + 60
        while not any(work_dir.glob('.*.partial')) and time.monotonic() < deadline:
            time.sleep(0.001)
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert any(work_dir.glob('.*.partial')), 'the kill did not land inside a save'
    named = Path((work_dir / 'last_checkpoint').read_text().strip())
    check_checkpoint_file(str(named), load_from_local_safe)  # complete and readable
    for path in work_dir.glob('iter_*.pth'):
        check_checkpoint_file(str(path), load_from_local_safe)
    output = train(config, work_dir, '--resume', '--cfg-options', 'train_cfg.max_iters=4')
    assert 'left behind by an interrupted save' in output
    assert not any(work_dir.glob('.*.partial'))


def test_resume_skips_a_truncated_latest_checkpoint(tmp_path: Path) -> None:
    config = write_config(tmp_path / 'toy.py', num_workers=0, extra=f"""
model = dict(type='NoisyToyRegressor')
{HOOKS.format(interval=2, keep=4)}
""")
    work_dir = tmp_path / 'work'
    train(config, work_dir, '--cfg-options', 'train_cfg.max_iters=6')
    truncate(work_dir / 'iter_6.pth')
    output = train(config, work_dir, '--resume')
    assert f'{work_dir / "iter_6.pth"} is truncated or corrupt' in output
    assert f'Auto resumed from the latest checkpoint {work_dir / "iter_4.pth"}' in output
    assert 'resumed epoch: 0, iter: 4' in output
    assert (work_dir / 'iter_8.pth').is_file()


def test_only_checkpoint_unreadable_stops_resume(tmp_path: Path) -> None:
    config = write_config(tmp_path / 'toy.py', num_workers=0,
                          extra="model = dict(type='NoisyToyRegressor')")
    work_dir = tmp_path / 'work'
    work_dir.mkdir()
    (work_dir / 'iter_4.pth').write_text('oops')
    (work_dir / 'last_checkpoint').write_text(str(work_dir / 'iter_4.pth'))
    result = subprocess.run(train_command(config, work_dir, '--resume'), env=child_env(),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert f'{work_dir / "iter_4.pth"} is not a checkpoint' in result.stderr
    assert 'Traceback' not in result.stderr


@pytest.mark.parametrize('tool, content', [('test', b'hello\n'), ('resume', b'PK\x03\x04 cut'),
                                           ('test', b'')])
def test_tools_name_a_file_that_is_not_a_checkpoint(tmp_path: Path, tool: str,
                                                    content: bytes) -> None:
    """``tools/test.py CONFIG FILE`` and ``tools/train.py CONFIG --resume FILE``."""
    config = write_config(tmp_path / 'toy.py', num_workers=0, extra="""
test_dataloader = val_dataloader
test_evaluator = val_evaluator
test_cfg = dict(type='TestLoop')
""")
    bad = tmp_path / 'model.pth'
    bad.write_bytes(content)
    command = ([sys.executable, str(TEST), str(config), str(bad), '--work-dir',
                str(tmp_path / 'test')] if tool == 'test'
               else train_command(config, tmp_path / 'work', '--resume', str(bad)))
    result = subprocess.run(command, env=child_env(), capture_output=True, text=True,
                            timeout=120)
    assert result.returncode != 0
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith('CheckpointReadError: ') and str(bad) in last_line, last_line
    assert 'weights_only' not in result.stderr and 'Traceback' not in result.stderr
