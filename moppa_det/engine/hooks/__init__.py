"""Hooks that observe and report: parameter table, adapter-only checkpoints."""
from .parameter_report_hook import ParameterReportHook
from .trainable_checkpoint_hook import TrainableCheckpointHook

__all__ = ['ParameterReportHook', 'TrainableCheckpointHook']
