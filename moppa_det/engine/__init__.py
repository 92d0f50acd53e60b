"""Training-time machinery: safe checkpoint loading, optimizer constructor, hooks, and the
fault-tolerant runner the tools build."""
from . import hooks  # noqa: F401  (registration)
from .checkpoint_files import CheckpointReadError
from .optim_constructor import TrainableOptimWrapperConstructor
from .parameter_report import parameter_table, trainable_summary
from .runner import FaultTolerantRunner
from .safe_checkpoint import install_safe_checkpoint_loader
from .trainable_state import strip_frozen_weights

install_safe_checkpoint_loader()

__all__ = ['install_safe_checkpoint_loader', 'TrainableOptimWrapperConstructor',
           'parameter_table', 'trainable_summary', 'strip_frozen_weights',
           'FaultTolerantRunner', 'CheckpointReadError']
