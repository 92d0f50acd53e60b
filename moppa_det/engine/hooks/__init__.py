"""Hooks: adapter host, parameter table, adapter-only and atomic checkpoints, random states,
loss checks."""
from .adapter_host_hook import AdapterHostHook
from .atomic_checkpoint_hook import AtomicCheckpointHook
from .non_finite_loss_hook import NonFiniteLossError, NonFiniteLossHook
from .parameter_report_hook import ParameterReportHook
from .random_state_hook import RandomStateHook
from .trainable_checkpoint_hook import TrainableCheckpointHook

__all__ = ['AdapterHostHook', 'AtomicCheckpointHook', 'NonFiniteLossError', 'NonFiniteLossHook',
           'ParameterReportHook', 'RandomStateHook', 'TrainableCheckpointHook']
