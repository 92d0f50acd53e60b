"""Logs the trainable/total parameter table when training starts."""
from __future__ import annotations

from mmdet.registry import HOOKS
from mmengine.hooks import Hook

from ..parameter_report import parameter_table


@HOOKS.register_module()
class ParameterReportHook(Hook):
    """Logs, per group (frozen backbone, MoPPA units, neck, heads), total and trainable
    parameters, and the line 'trainable params: N || all params: M || trainable%: P'."""

    priority = 'VERY_LOW'

    def before_train(self, runner) -> None:
        runner.logger.info('parameters:\n' + parameter_table(runner.model))
