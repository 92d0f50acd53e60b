"""Tiny modules registered in MMDetection's registries, for tests that run the real tools.

Configs load them with ``custom_imports=dict(imports=['toy_modules'])`` and ``tests/`` on
``PYTHONPATH``.
"""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from mmdet.registry import DATASETS, MODELS
from mmengine.model import BaseModel
from torch import nn
from torch.utils.data import Dataset


@MODELS.register_module()
class ToyRegressor(BaseModel):
    """A linear regressor whose training steps take at least ``step_seconds``.

    The delay lets a test kill a run between two checkpoints.

    Args:
        in_features: Length of each input vector.
        step_seconds: Sleep added to every loss computation.
        data_preprocessor: MMEngine data preprocessor config.
    """

    def __init__(self, in_features: int = 4, step_seconds: float = 0.0,
                 data_preprocessor: dict | None = None) -> None:
        super().__init__(data_preprocessor=data_preprocessor)
        self.linear = nn.Linear(in_features, 1)
        self.step_seconds = step_seconds

    def forward(self, inputs: torch.Tensor, data_samples: torch.Tensor | None = None,
                mode: str = 'tensor') -> dict[str, torch.Tensor] | torch.Tensor:
        """Predicts (B, 1) values from (B, in_features) inputs; ``loss`` mode also sleeps."""
        prediction = self.linear(inputs)
        if mode != 'loss':
            return prediction
        time.sleep(self.step_seconds)
        return dict(loss=F.mse_loss(prediction, data_samples))


@DATASETS.register_module()
class ToyRegressionDataset(Dataset):
    """Fixed random pairs ``inputs`` (in_features,) -> ``data_samples`` (1,).

    Args:
        size: Number of samples.
        in_features: Length of each input vector.
    """

    metainfo = dict(classes=('toy',))

    def __init__(self, size: int = 8, in_features: int = 4) -> None:
        generator = torch.Generator().manual_seed(0)
        self.inputs = torch.randn(size, in_features, generator=generator)
        self.targets = self.inputs.sum(dim=1, keepdim=True)

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return dict(inputs=self.inputs[index], data_samples=self.targets[index])
