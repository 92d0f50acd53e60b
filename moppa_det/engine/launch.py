"""What tools/train.py and tools/test.py share: common arguments, config loading, and building
the runner (with CPU-only distributed runs over gloo)."""
from __future__ import annotations

import argparse
import datetime
import os
import os.path as osp

import torch
from mmengine.config import Config, DictAction
from mmengine.registry import MODEL_WRAPPERS, RUNNERS
from mmengine.runner import Runner

import moppa_det

from .checkpoint_files import CheckpointReadError
from .hooks import NonFiniteLossError
from .safe_checkpoint import UntrustedCheckpointError
from .strict_load import CheckpointMismatchError
from .worker_init import die_with_parent

# Errors whose message already says what is wrong and where: the tools print it without a
# traceback.
RUN_ERRORS = (CheckpointReadError, UntrustedCheckpointError, NonFiniteLossError,
              CheckpointMismatchError)


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """Adds the arguments ``train.py`` and ``test.py`` share, after their positionals.

    Args:
        parser: The parser to extend.
    """
    parser.add_argument('--work-dir', help='the directory to save logs, models and metrics')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override settings of the config, as key=value pairs merged into it; a list '
        'is key="[a,b]" or key=a,b, nested lists/tuples key="[(a,b),(c,d)]" (quotes needed, '
        'no white space)')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    # torchrun / torch >= 2.0 pass --local-rank, older launchers --local_rank.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)

def die_with_launcher() -> None:
    """Under torchrun, makes this rank die when the torchrun agent dies.

    A ``kill -9`` of the agent would otherwise leave every rank running on its own, writing
    checkpoints into the work directory of a run that is believed dead.
    """
    if 'TORCHELASTIC_RUN_ID' in os.environ:  # set by torchrun for the processes it starts
        die_with_parent(os.getppid())

def load_config(args: argparse.Namespace) -> Config:
    """Reads the config and applies the arguments both tools share.

    Args:
        args: Parsed arguments with ``config``, ``launcher``, ``cfg_options``, ``work_dir``.

    Returns:
        The config.

    Raises:
        SystemExit: If MMDetection cannot be imported or the config file does not exist.
    """
    if moppa_det.MMDET_IMPORT_ERROR is not None:
        raise SystemExit(f'MMDetection cannot be imported ({moppa_det.MMDET_IMPORT_ERROR}). '
                         'Run `python -m moppa_det.env` to see what is missing, `make env` '
                         'to set the environment up.')
    if not osp.isfile(args.config):
        raise SystemExit(f'Config file not found: {args.config}')
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    # work_dir priority: command line > config > ./work_dirs/<config name>
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    return cfg

def check_before_build(cfg: Config, splits: tuple[str, ...]) -> None:
    """The checks of :mod:`.config_checks` and :mod:`.data_checks`, before anything is built.

    Args:
        cfg: The full config.
        splits: The splits whose annotation files and images the run reads.

    Raises:
        SystemExit: Naming the config key, file or images at fault.
    """
    from .config_checks import ConfigKeyError, check_backbone_weights, check_config
    from .data_checks import check_annotation_files

    try:
        check_config(cfg)
        check_annotation_files(cfg, splits)
        check_backbone_weights(cfg)
    except ConfigKeyError as error:
        raise SystemExit(f'ConfigKeyError: {error}') from None

def setup_cpu_distributed(cfg: Config) -> None:
    """Lets ``--launcher pytorch`` run on machines without CUDA, over gloo.

    MMEngine's ``init_dist`` calls ``torch.cuda.set_device`` and its default DDP wrapper
    passes ``device_ids=[LOCAL_RANK]``; both fail without CUDA. So the process group is
    initialised here (the runner then skips ``init_dist``) and DDP gets ``device_ids=None``.

    Args:
        cfg: The config; its ``env_cfg`` and ``model_wrapper_cfg`` are updated in place.

    Raises:
        SystemExit: For the slurm or mpi launcher without CUDA.
    """
    if cfg.launcher == 'none' or torch.cuda.is_available():
        return
    if cfg.launcher != 'pytorch':
        raise SystemExit(f'--launcher {cfg.launcher} needs CUDA here; on CPU-only machines use '
                         '--launcher pytorch (tools/dist_train.sh, tools/dist_test.sh).')
    dist_cfg = cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})
    dist_cfg['backend'] = 'gloo'  # nccl needs GPUs
    if not torch.distributed.is_initialized():
        timeout = datetime.timedelta(seconds=dist_cfg.get('timeout', 1800))
        torch.distributed.init_process_group(backend='gloo', timeout=timeout)
    wrapper_cfg = cfg.get('model_wrapper_cfg') or dict(
        type='MMDistributedDataParallel', broadcast_buffers=False,
        find_unused_parameters=cfg.get('find_unused_parameters', False))
    wrapper = MODEL_WRAPPERS.get(wrapper_cfg.get('type', 'MMDistributedDataParallel'))
    if issubclass(wrapper, torch.nn.parallel.DistributedDataParallel):
        wrapper_cfg['device_ids'] = None  # DDP's only valid choice for CPU modules
    cfg.model_wrapper_cfg = wrapper_cfg

def build_runner(cfg: Config) -> Runner:
    """Builds the runner: :class:`FaultTolerantRunner` unless the config sets ``runner_type``.

    Args:
        cfg: The full config.

    Returns:
        The runner.
    """
    from mmdet.utils import setup_cache_size_limit_of_dynamo

    from .runner import FaultTolerantRunner

    # Fewer repeated compilations when the config enables torch.compile.
    setup_cache_size_limit_of_dynamo()
    setup_cpu_distributed(cfg)
    if 'runner_type' not in cfg:
        return FaultTolerantRunner.from_cfg(cfg)
    runner = RUNNERS.build(cfg)
    if not isinstance(runner, FaultTolerantRunner):
        runner.logger.warning(
            f'runner_type={cfg.runner_type!r} is not a FaultTolerantRunner: checkpoints are '
            'not written atomically, resume does not restore the random states, data-loader '
            'workers outlive a killed run and non-finite losses are not caught')
    return runner
