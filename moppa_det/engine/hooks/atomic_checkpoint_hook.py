"""MMEngine's CheckpointHook, with checkpoints that a kill can never leave half-written.

MMEngine 0.10.7's ``CheckpointHook`` (1) deletes the oldest checkpoint beyond
``max_keep_ckpts`` *before* saving the new one, (2) writes the new one in place and (3) then
rewrites ``last_checkpoint`` in place. A kill during (2) with ``max_keep_ckpts=1`` loses every
checkpoint of the run; a kill during (2) or (3) leaves a truncated file or an empty pointer.
"""
from __future__ import annotations

import os
import os.path as osp
import shutil

from mmdet.registry import HOOKS
from mmengine.dist import is_main_process
from mmengine.fileio import LocalBackend
from mmengine.hooks import CheckpointHook

from ..checkpoint_files import PARTIAL_SUFFIX, commit, partial_name, write_text_atomic


@HOOKS.register_module()
class AtomicCheckpointHook(CheckpointHook):
    """``CheckpointHook`` (same arguments) that saves to a temporary name, ``fsync``s, renames,
    then points ``last_checkpoint`` at the complete file (atomically too), and only then deletes
    the checkpoints beyond ``max_keep_ckpts``. Non-local ``out_dir`` backends keep MMEngine's
    behaviour.
    """

    def before_train(self, runner) -> None:
        """Sets up as MMEngine does, then removes temporary files a killed run left behind."""
        super().before_train(runner)
        if isinstance(self.file_backend, LocalBackend) and is_main_process() \
                and osp.isdir(self.out_dir):
            for name in os.listdir(self.out_dir):
                if name.startswith('.') and name.endswith(PARTIAL_SUFFIX):
                    runner.logger.info(f'removing {name}, left behind by an interrupted save')
                    os.remove(osp.join(self.out_dir, name))

    def _save_checkpoint_with_step(self, runner, step, meta) -> None:
        if not isinstance(self.file_backend, LocalBackend):
            return super()._save_checkpoint_with_step(runner, step, meta)
        outdated = self._keep(runner, step)
        filename = self.filename_tmpl.format(step)
        self.last_ckpt = osp.join(self.out_dir, filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)

        temporary = osp.join(self.out_dir, partial_name(filename))
        runner.save_checkpoint(
            self.out_dir, partial_name(filename), self.file_client_args,
            save_optimizer=self.save_optimizer, save_param_scheduler=self.save_param_scheduler,
            meta=meta, by_epoch=self.by_epoch, backend_args=self.backend_args, **self.args)
        if not is_main_process():
            return
        commit(temporary, self.last_ckpt)
        write_text_atomic(osp.join(runner.work_dir, 'last_checkpoint'), self.last_ckpt)
        for old in outdated:
            path = osp.join(self.out_dir, self.filename_tmpl.format(old))
            if osp.isdir(path):  # DeepSpeed saves directories
                shutil.rmtree(path)
            elif osp.exists(path):
                self.file_backend.remove(path)

    def _keep(self, runner, step: int) -> list[int]:
        """Records ``step`` among the kept checkpoints (as MMEngine does, in the message hub,
        so resumed runs know them) and returns the steps whose files are now outdated."""
        if self.max_keep_ckpts <= 0 or (self.keep_ckpt_ids and self.keep_ckpt_ids[-1] == step):
            return []
        outdated = []
        if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
            outdated.append(self.keep_ckpt_ids.popleft())
        self.keep_ckpt_ids.append(step)
        runner.message_hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))
        return outdated
