"""Toy modules that draw random numbers where a detector does, for the fault-tolerance tests.

``NoisyToyRegressor`` draws from torch's generator in every training step (as the RPN and RoI
samplers do); ``AugmentedToyDataset`` from Python's, NumPy's and torch's in ``__getitem__`` (as
``RandomFlip`` and friends do, in the workers or, with ``num_workers=0``, in the main process);
``ToyMSEMetric`` gives the validation a metric. Configs load them with
``custom_imports=dict(imports=['fault_toy_modules'])`` and ``tests/`` on ``PYTHONPATH``.
"""
from __future__ import annotations

import random
import time

import numpy as np
import torch
import torch.nn.functional as F
from mmdet.registry import DATASETS, METRICS, MODELS
from mmengine.evaluator import BaseMetric
from mmengine.model import BaseModel
from torch import nn
from torch.utils.data import Dataset


@MODELS.register_module()
class NoisyToyRegressor(BaseModel):
    """Linear regressor with input dropout and a random loss weight per step.

    Args:
        in_features: Length of each input vector.
        step_seconds: Sleep added to every training step (so a test can kill between two).
        nan_at_iter: 1-based training step whose loss is NaN (none when 0).
        ballast_mib: Size of a buffer that makes checkpoints big (slow to write).
        data_preprocessor: MMEngine data preprocessor config.
    """

    def __init__(self, in_features: int = 4, step_seconds: float = 0.0, nan_at_iter: int = 0,
                 ballast_mib: int = 0, data_preprocessor: dict | None = None) -> None:
        super().__init__(data_preprocessor=data_preprocessor)
        self.linear = nn.Linear(in_features, 1)
        self.dropout = nn.Dropout(0.3)
        self.step_seconds, self.nan_at_iter = step_seconds, nan_at_iter
        self.steps = 0
        self.register_buffer('ballast', torch.zeros(ballast_mib * 2 ** 18))

    def forward(self, inputs: torch.Tensor, data_samples: torch.Tensor | None = None,
                mode: str = 'tensor'):
        """(B, in_features) -> (B, 1) predictions; ``loss`` mode returns two loss terms."""
        if mode != 'loss':
            return self.linear(inputs) if mode == 'tensor' else [
                dict(pred=p, target=t) for p, t in zip(self.linear(inputs), data_samples)]
        self.steps += 1
        time.sleep(self.step_seconds)
        prediction = self.linear(self.dropout(inputs))
        weight = 0.5 + torch.rand(())  # like a sampler: a draw from torch's generator each step
        loss_aux = prediction.abs().mean() * 0.01
        if self.steps == self.nan_at_iter:
            loss_aux = loss_aux * float('nan')
        return dict(loss_mse=weight * F.mse_loss(prediction, data_samples), loss_aux=loss_aux)


@DATASETS.register_module()
class AugmentedToyDataset(Dataset):
    """Random pairs ``inputs`` (in_features,) -> ``data_samples`` (1,), augmented at random.

    Args:
        size: Number of samples.
        in_features: Length of each input vector.
        augment: Whether ``__getitem__`` adds noise from Python's, NumPy's and torch's
            generators (training); validation data stays fixed.
        item_seconds: Sleep in every ``__getitem__`` (keeps the workers busy).
    """

    metainfo = dict(classes=('toy',))

    def __init__(self, size: int = 16, in_features: int = 4, augment: bool = True,
                 item_seconds: float = 0.0) -> None:
        generator = torch.Generator().manual_seed(0)
        self.inputs = torch.randn(size, in_features, generator=generator)
        self.targets = self.inputs.sum(dim=1, keepdim=True)
        self.augment, self.item_seconds = augment, item_seconds

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        time.sleep(self.item_seconds)
        inputs = self.inputs[index]
        if self.augment:
            noise = random.gauss(0, 0.1) + float(np.random.normal(0, 0.1))
            inputs = inputs + noise + 0.1 * torch.randn(inputs.shape)
        return dict(inputs=inputs, data_samples=self.targets[index])


@METRICS.register_module()
class ToyMSEMetric(BaseMetric):
    """Mean squared error of the predictions, as ``toy/mse``."""

    default_prefix = 'toy'

    def process(self, data_batch, data_samples) -> None:
        for sample in data_samples:
            self.results.append(float((sample['pred'] - sample['target']).pow(2).sum()))

    def compute_metrics(self, results: list) -> dict[str, float]:
        return dict(mse=sum(results) / len(results))
