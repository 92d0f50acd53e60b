"""Strict loading of what was trained (issue 12), and backbone weight files that are no weights.

Through the runner's load path (``load_from``, ``--resume``, ``tools/test.py``): an adapter-only
checkpoint loads (the backbone fills in its frozen weights), while a checkpoint that lacks
trained weights, or holds them in other shapes, is refused naming the keys (and both shapes).
"""
from __future__ import annotations

import itertools
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY_VIT
from mmengine.model import BaseModel
from test_faults_resume import write_config
from test_resume import child_env
from torch import nn

from moppa_det.engine import FaultTolerantRunner, strip_frozen_weights
from moppa_det.engine.strict_load import CheckpointMismatchError
from moppa_det.models.backbones import MoPPAViT
from moppa_det.models.backbones.timm_factory import BackboneBuildError

REPO_ROOT = Path(__file__).resolve().parents[1]
UP = 'backbone.adapters.moppa.units.{}.up.weight'
RUNS = itertools.count()  # runner instance names must differ within a second


class TinyDetector(BaseModel):
    """A frozen MoPPA ViT with a 'neck' and a 'head' whose width is the number of classes."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        torch.manual_seed(0)  # the same frozen weights every time: adapter-only checkpoints
        self.backbone = MoPPAViT(**TINY_VIT)
        self.neck = nn.Linear(32, 16)
        self.head = nn.Linear(16, num_classes)

    def forward(self, inputs: torch.Tensor, data_samples=None, mode: str = 'tensor'):
        return self.head(self.neck(self.backbone(inputs)[-1].mean((2, 3))))


def trained(model: TinyDetector) -> TinyDetector:
    """Gives every trained weight a value no fresh model has."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.requires_grad:
                param.normal_(generator=torch.Generator().manual_seed(len(name)))
    return model


def save(tmp_path: Path, model: nn.Module, drop: tuple[str, ...] = (),
         adapter_only: bool = True) -> Path:
    """An MMEngine checkpoint of ``model``, frozen weights stripped, ``drop`` keys removed."""
    checkpoint = dict(meta=dict(epoch=0, iter=2), state_dict=model.state_dict())
    if adapter_only:
        strip_frozen_weights(checkpoint)
    for key in drop:
        del checkpoint['state_dict'][key]
    path = tmp_path / 'model.pth'
    torch.save(checkpoint, path)
    return path


class Recorder(logging.Handler):
    """Keeps the messages of the records it handles."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def load(tmp_path: Path, path: Path, model: nn.Module | None = None, resume: bool = False,
         warnings: Recorder | None = None, **cfg) -> FaultTolerantRunner:
    """A runner that loads ``path`` as ``load_from`` (or ``--resume PATH``) into ``model``."""
    runner = FaultTolerantRunner(
        model=model or TinyDetector(), work_dir=str(tmp_path / 'work'), load_from=str(path),
        resume=resume, cfg=dict(cfg), experiment_name=f'strict_{next(RUNS)}')
    if warnings is not None:
        runner.logger.addHandler(warnings)
    runner.load_or_resume()
    return runner


def test_adapter_only_and_full_checkpoints_load_every_trained_weight(tmp_path: Path) -> None:
    source = trained(TinyDetector())
    for adapter_only in (True, False):
        runner = load(tmp_path, save(tmp_path, source, adapter_only=adapter_only))
        for key, value in source.state_dict().items():
            assert torch.equal(runner.model.state_dict()[key], value), key


@pytest.mark.parametrize('resume', [False, True], ids=['load_from', 'resume'])
def test_missing_trained_weights_are_named(tmp_path: Path, resume: bool) -> None:
    dropped = (UP.format(0), UP.format(1), 'neck.bias', 'head.weight', 'head.bias',
               'backbone.adapters.moppa.units.1.priors.source')
    path = save(tmp_path, trained(TinyDetector()), drop=dropped)
    with pytest.raises(CheckpointMismatchError) as error:
        load(tmp_path, path, resume=resume)
    message = str(error.value)
    assert f'checkpoint {path} does not fit the model: 6 weights of the model missing' in message
    named = [key for key in dropped if key in message]
    assert len(named) == 5 and '(and 1 more)' in message, message
    assert ('load_partial=True' in message) is not resume  # never partial on resume


def test_head_of_another_shape_is_named_with_both_shapes(tmp_path: Path) -> None:
    path = save(tmp_path, trained(TinyDetector(num_classes=5)))
    with pytest.raises(CheckpointMismatchError) as error:
        load(tmp_path, path, TinyDetector(num_classes=3))
    message = str(error.value)
    assert '2 weights of another shape' in message
    assert 'head.weight (5, 16) in the checkpoint, (3, 16) in the model' in message
    assert 'head.bias (5,) in the checkpoint, (3,) in the model' in message
    assert 'missing' not in message  # the keys are all there


def test_load_partial_loads_what_fits_on_purpose_but_never_on_resume(tmp_path: Path) -> None:
    source = trained(TinyDetector(num_classes=5))
    path = save(tmp_path, source, drop=('neck.bias',))
    fresh = TinyDetector(num_classes=3)
    head_before = fresh.head.weight.clone()
    warnings = Recorder()
    runner = load(tmp_path, path, fresh, warnings=warnings, load_partial=True)
    warned = ' '.join(warnings.messages)
    assert 'neck.bias' in warned and 'head.weight (5, 16) in the checkpoint' in warned
    assert torch.equal(runner.model.neck.weight, source.neck.weight)  # what fits is loaded
    assert torch.equal(runner.model.head.weight, head_before)
    with pytest.raises(CheckpointMismatchError, match='neck.bias'):
        load(tmp_path, path, TinyDetector(num_classes=3), resume=True, load_partial=True)


def test_extra_checkpoint_keys_are_a_warning_naming_them(tmp_path: Path) -> None:
    model = trained(TinyDetector())
    model.extra = nn.Linear(2, 2)
    path = save(tmp_path, model)
    warnings = Recorder()
    load(tmp_path, path, TinyDetector(), warnings=warnings)
    assert any('2 weights the model does not have: extra.weight, extra.bias (ignored)' in m
               for m in warnings.messages), warnings.messages


def demo_detector(num_classes: int = 3) -> nn.Module:
    """The demo config's MoPPA Mask R-CNN on the tiny ViT (the same frozen weights each time)."""
    from mmdet.registry import MODELS
    from mmengine.config import Config

    cfg = Config.fromfile(str(REPO_ROOT / 'configs/demo/mask_rcnn_vits14_moppa_toy.py'))
    cfg.model.backbone = dict(cfg.model.backbone, **TINY_VIT, checkpoint=None,
                              adapter_blocks=None)
    cfg.model.neck.in_channels = 32
    cfg.model.roi_head.bbox_head.num_classes = num_classes
    cfg.model.roi_head.mask_head.num_classes = num_classes
    torch.manual_seed(0)
    return MODELS.build(cfg.model)


def test_mask_rcnn_adapter_only_checkpoint_loads_and_one_with_other_heads_is_refused(tmp_path):
    """On the real detector: after the backbone's pre-hook nothing else is missing, and a
    checkpoint from a detector with other heads is refused naming them."""
    from mmdet.models.test_time_augs import DetTTAModel

    source = trained(demo_detector())
    path = save(tmp_path, source)
    runner = load(tmp_path, path, DetTTAModel(module=demo_detector()))  # tools/test.py --tta
    loaded = runner.model.module.state_dict()
    assert all(torch.equal(loaded[key], value) for key, value in source.state_dict().items())

    with pytest.raises(CheckpointMismatchError) as error:
        load(tmp_path, path, demo_detector(num_classes=5))
    message = str(error.value)
    assert message.startswith(f'checkpoint {path} does not fit the model: 4 weights of another '
                              'shape: roi_head.bbox_head.fc_cls.weight (4, 256) in the '
                              'checkpoint, (6, 256) in the model;'), message
    assert 'roi_head.mask_head.conv_logits.bias (3,) in the checkpoint, (5,) in the model' \
        in message


def test_tools_test_refuses_a_checkpoint_of_another_head(tmp_path: Path) -> None:
    """``tools/test.py CONFIG CKPT`` with a checkpoint of another head configuration."""
    config = write_config(tmp_path / 'toy.py', num_workers=0, extra="""
model = dict(type='NoisyToyRegressor', in_features=4)
test_dataloader = val_dataloader
test_evaluator = val_evaluator
test_cfg = dict(type='TestLoop')
""")
    checkpoint = tmp_path / 'other_head.pth'
    torch.save(dict(meta=dict(iter=1), state_dict={'linear.weight': torch.zeros(1, 6),
                                                   'ballast': torch.zeros(0)}), checkpoint)
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / 'tools' / 'test.py'), str(config), str(checkpoint),
         '--work-dir', str(tmp_path / 'test')],
        env=child_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    message = result.stderr.strip().splitlines()[-1]
    assert 'CheckpointMismatchError' in message and str(checkpoint) in message, message
    assert '1 weight of the model missing from it: linear.bias' in message
    assert 'linear.weight (1, 6) in the checkpoint, (1, 4) in the model' in message
    assert 'toy/mse' not in result.stdout + result.stderr  # nothing was evaluated


@pytest.mark.parametrize('name, content, expected', [
    ('notes.pth', b'model: vit\nlr: 0.1\n', "starts with b'model: v'"),
    ('empty.pth', b'', 'is empty'),
    ('weights.safetensors', b'hello\n', 'as a safetensors file'),
    ('cut.pth', None, 'is not a readable weights file (truncated or corrupt)'),
])
def test_backbone_weights_that_are_not_weights_are_named(tmp_path: Path, name: str,
                                                         content: bytes | None,
                                                         expected: str) -> None:
    """``MoPPAViT(checkpoint=FILE)`` built directly (the tools check the file beforehand)."""
    path = tmp_path / name
    if content is None:  # a real checkpoint cut in half
        torch.save(MoPPAViT(**TINY_VIT, adapter=None).model.state_dict(), path)
        path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])
    else:
        path.write_bytes(content)
    with pytest.raises(BackboneBuildError) as error:
        MoPPAViT(**TINY_VIT, checkpoint=str(path))
    assert f"backbone checkpoint '{path}'" in str(error.value)
    assert expected in str(error.value)
