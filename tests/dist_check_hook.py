"""A test-only hook: every rank saves its trainable parameters when training ends, so a test can
check that DDP kept the ranks identical."""
import torch
from mmdet.registry import HOOKS
from mmengine.dist import get_rank
from mmengine.hooks import Hook


@HOOKS.register_module()
class DumpTrainableParamsHook(Hook):

    def after_run(self, runner) -> None:
        model = getattr(runner.model, 'module', runner.model)
        trainable = {name: param.detach().cpu().clone()
                     for name, param in model.named_parameters() if param.requires_grad}
        torch.save(trainable, f'{runner.work_dir}/trainable_rank{get_rank()}.pt')
