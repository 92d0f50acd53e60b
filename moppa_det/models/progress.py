"""Where training stands, as the runner's MessageHub records it."""
from __future__ import annotations

from mmengine.logging import MessageHub


def training_progress() -> float:
    """Fraction of training done, from the runner's MessageHub (0 outside a training loop)."""
    hub = MessageHub.get_current_instance()
    max_iters = hub.get_info('max_iters')
    if not max_iters:
        return 0.0
    return min(1.0, hub.get_info('iter', 0) / max_iters)
