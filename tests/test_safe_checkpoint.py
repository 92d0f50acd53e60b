"""moppa_det's checkpoint loader: MMEngine checkpoints load, anything else is refused."""
from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer, MessageHub
from mmengine.model import BaseModel
from mmengine.optim.scheduler.param_scheduler import OneCycleParamScheduler
from mmengine.runner import Runner
from mmengine.runner import checkpoint as mm_checkpoint
from torch import nn
from torch.utils.data import Dataset

from moppa_det.engine.checkpoint_files import CheckpointReadError
from moppa_det.engine.safe_checkpoint import (
    UntrustedCheckpointError,
    install_safe_checkpoint_loader,
    load_from_local_safe,
)

install_safe_checkpoint_loader()

RAN: list[str] = []  # what the payloads below managed to execute


class Pairs(Dataset):
    """Four fixed (x, y) pairs; ``metainfo`` ends up in the checkpoint's meta."""

    metainfo = dict(classes=('a', 'b'))

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return dict(x=torch.full((2,), float(index)), y=torch.tensor([float(index)]))


class Regressor(BaseModel):
    """Linear regressor with a BatchNorm (buffers in the state dict)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear, self.norm = nn.Linear(2, 1), nn.BatchNorm1d(1)

    def forward(self, x: torch.Tensor, y: torch.Tensor, mode: str = 'tensor'):
        out = self.norm(self.linear(x))
        return dict(loss=((out - y) ** 2).mean()) if mode == 'loss' else out


def train_two_iterations(work_dir: Path, param_scheduler: list[dict]) -> Path:
    """Trains ``Regressor`` for two iterations with a real Runner; returns its checkpoint."""
    runner = Runner(
        model=Regressor(), work_dir=str(work_dir),
        experiment_name=f'safe_checkpoint_{work_dir.name}',  # one logger and hub per run
        train_dataloader=dict(dataset=Pairs(), batch_size=2,
                              collate_fn=dict(type='default_collate'),
                              sampler=dict(type='DefaultSampler', shuffle=False)),
        train_cfg=dict(by_epoch=False, max_iters=2),
        optim_wrapper=dict(optimizer=dict(type='Adam', lr=0.01)),
        param_scheduler=param_scheduler,
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=False)))
    runner.train()
    return work_dir / 'iter_2.pth'


@pytest.fixture(scope='module')
def mmengine_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint written by a real Runner: Adam, two schedulers, message hub."""
    return train_two_iterations(
        tmp_path_factory.mktemp('runner'),
        [dict(type='LinearLR', start_factor=0.5, by_epoch=False, end=1),
         dict(type='MultiStepLR', milestones=[1], by_epoch=False)])


def save_payload(path: Path, payload: object) -> Path:
    """Saves a checkpoint-shaped dict with ``payload`` hidden in its meta."""
    torch.save(dict(state_dict={'w': torch.zeros(1)}, meta=dict(note=payload)), path)
    return path


def test_torch_alone_refuses_mmengine_checkpoints(mmengine_checkpoint: Path) -> None:
    # The failure this module fixes; if torch ever accepts these, the allow-list can go.
    with pytest.raises(pickle.UnpicklingError, match='HistoryBuffer|numpy'):
        torch.load(mmengine_checkpoint, weights_only=True)


def test_mmengine_checkpoint_loads_through_mmengine(mmengine_checkpoint: Path) -> None:
    checkpoint = mm_checkpoint._load_checkpoint(str(mmengine_checkpoint), map_location='cpu')

    assert checkpoint['meta']['iter'] == 2
    assert checkpoint['meta']['dataset_meta'] == Pairs.metainfo
    assert int(checkpoint['optimizer']['state'][0]['step']) == 2
    assert checkpoint['param_schedulers'][1]['milestones'] == {1: 1}
    assert isinstance(checkpoint['message_hub']['runtime_info']['eta'], np.floating)
    hub = MessageHub.get_instance('safe_checkpoint_test')
    hub.load_state_dict(checkpoint['message_hub'])
    loss = hub.get_scalar('train/loss')
    assert isinstance(loss, HistoryBuffer) and len(loss.data[0]) == 2
    assert loss.mean() == pytest.approx(np.mean(loss.data[0]))  # statistics methods restored

    model = Regressor()
    mm_checkpoint.load_checkpoint(model, str(mmengine_checkpoint), map_location='cpu')
    assert torch.equal(model.linear.weight, checkpoint['state_dict']['linear.weight'])


@pytest.mark.parametrize('strategy', ['cos', 'linear'])
def test_one_cycle_scheduler_checkpoint_loads(tmp_path: Path, strategy: str) -> None:
    path = train_two_iterations(tmp_path, [dict(type='OneCycleLR', eta_max=0.01, total_steps=4,
                                                anneal_strategy=strategy, by_epoch=False)])
    checkpoint = mm_checkpoint._load_checkpoint(str(path), map_location='cpu')
    anneal = checkpoint['param_schedulers'][0]['anneal_func']
    assert anneal is getattr(OneCycleParamScheduler, f'_annealing_{strategy}')


def test_numpy_1_spelling_loads(mmengine_checkpoint: Path, tmp_path: Path) -> None:
    # numpy < 2 pickled its arrays and scalars as numpy.core.multiarray.*
    renamed = tmp_path / 'numpy1.pth'
    with zipfile.ZipFile(mmengine_checkpoint) as src, zipfile.ZipFile(renamed, 'w') as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith('data.pkl'):
                assert b'numpy._core.multiarray' in data
                data = data.replace(b'numpy._core.multiarray', b'numpy.core.multiarray')
            dst.writestr(info, data)

    checkpoint = load_from_local_safe(str(renamed), map_location='cpu')
    assert checkpoint['message_hub']['log_scalars']['train/loss'].data[0].dtype == np.float64


class SetsAFlag:
    """An ordinary class instance: unpickling it would run ``__setstate__``."""

    def __setstate__(self, state: dict) -> None:
        RAN.append('SetsAFlag.__setstate__')


class RunsAShellCommand:
    """The classic payload: unpickling calls ``os.system``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f'touch {self.marker}',)


class ReachesAnAllowedClassAttribute:
    """Abuses the ``getattr`` that HistoryBuffer's and one-cycle schedulers' pickles need."""

    def __init__(self, owner: type, name: object) -> None:
        self.owner, self.name = owner, name

    def __reduce__(self):
        return getattr, (self.owner, self.name)


@pytest.mark.parametrize('make_payload, offender', [
    (lambda marker: RunsAShellCommand(marker), f'{os.system.__module__}.system'),
    (lambda marker: SetsAFlag(), f'{__name__}.SetsAFlag'),
    (lambda marker: ReachesAnAllowedClassAttribute(HistoryBuffer, 'update'), "'update'"),
    (lambda marker: ReachesAnAllowedClassAttribute(OneCycleParamScheduler, '__init__'),
     "'__init__'"),
    (lambda marker: ReachesAnAllowedClassAttribute(HistoryBuffer, '_annealing_cos'),
     "'_annealing_cos'"),
    (lambda marker: ReachesAnAllowedClassAttribute(OneCycleParamScheduler, ['mean']),
     "['mean']"),
    (lambda marker: np.zeros(2, dtype=np.float32), 'Float32DType'),
])
def test_untrusted_objects_are_refused(tmp_path: Path, make_payload, offender: str) -> None:
    marker = tmp_path / 'payload_ran'
    path = save_payload(tmp_path / 'untrusted.pth', make_payload(marker))

    with pytest.raises(UntrustedCheckpointError) as caught:
        mm_checkpoint._load_checkpoint(str(path), map_location='cpu')

    message = str(caught.value)
    assert str(path) in message and offender in message
    assert "not on moppa_det's allow-list" in message and 'trust' in message
    assert not marker.exists() and not RAN


def test_allow_list_is_scoped_to_each_load(mmengine_checkpoint: Path) -> None:
    before = torch.serialization.get_safe_globals()
    load_from_local_safe(str(mmengine_checkpoint))
    assert set(torch.serialization.get_safe_globals()) == set(before)  # a set: order varies

    # A global the user allowed process-wide survives our temporary additions.
    torch.serialization.add_safe_globals([np.dtype])
    try:
        load_from_local_safe(str(mmengine_checkpoint))
        assert np.dtype in torch.serialization.get_safe_globals()
    finally:
        torch.serialization.clear_safe_globals()
        torch.serialization.add_safe_globals(before)


def test_install_is_idempotent_and_leaves_remote_schemes() -> None:
    install_safe_checkpoint_loader()
    install_safe_checkpoint_loader()
    schemes = mm_checkpoint.CheckpointLoader._schemes
    assert schemes[''] is load_from_local_safe
    assert schemes['https://'] is mm_checkpoint.load_from_http
    assert list(schemes).count('') == 1


def test_missing_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match='nothing.pth'):
        load_from_local_safe(str(tmp_path / 'nothing.pth'))


@pytest.mark.parametrize('content', [b'garbage', b'', b'PK\x03\x04 cut short',
                                     b'\x80\x02 cut short'])
def test_corrupt_file_is_not_blamed_on_the_allow_list(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / 'corrupt.pth'
    path.write_bytes(content)
    with pytest.raises(CheckpointReadError) as caught:
        load_from_local_safe(str(path))
    message = str(caught.value)
    assert str(path) in message and 'not a' in message
    assert 'weights_only' not in message  # never advise switching safe loading off


def test_truncated_checkpoint_is_named(mmengine_checkpoint: Path, tmp_path: Path) -> None:
    path = tmp_path / 'truncated.pth'
    path.write_bytes(mmengine_checkpoint.read_bytes()[:2000])
    with pytest.raises(CheckpointReadError, match='truncated.pth is not a readable checkpoint'):
        mm_checkpoint._load_checkpoint(str(path), map_location='cpu')
