"""Train a detector: MMDetection 3.3's ``tools/train.py`` with moppa_det registered.

Same command line as MMDetection's. Runs from a clone without installing moppa_det, and also
under ``--launcher pytorch`` on CPU-only machines (over gloo). ``tools/test.py`` reuses the
helpers below.
"""
from __future__ import annotations

import argparse
import datetime
import os
import os.path as osp
import sys

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)  # so that ``import moppa_det`` finds this clone

import moppa_det  # noqa: E402  (registers moppa_det's modules in MMDetection's registries)
from moppa_det.engine.safe_checkpoint import install_safe_checkpoint_loader  # noqa: E402

import torch  # noqa: E402
from mmengine.config import Config, DictAction  # noqa: E402
from mmengine.registry import MODEL_WRAPPERS, RUNNERS  # noqa: E402
from mmengine.runner import Runner  # noqa: E402


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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parses the command line of ``tools/train.py``.

    Args:
        argv: Arguments without the program name; ``sys.argv[1:]`` when None.

    Returns:
        The parsed arguments.
    """
    parser = argparse.ArgumentParser(description='Train a detector')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--amp', action='store_true', default=False,
                        help='enable automatic-mixed-precision training')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='enable automatically scaling LR')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto',
        help='resume from this checkpoint, or without a path from the latest checkpoint '
        'in the work directory')
    add_common_args(parser)
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


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
    install_safe_checkpoint_loader()  # already done by ``import moppa_det``; idempotent
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
    """Builds the runner as MMDetection does: default Runner unless ``runner_type`` is set.

    Args:
        cfg: The full config.

    Returns:
        The runner.
    """
    from mmdet.utils import setup_cache_size_limit_of_dynamo

    # Fewer repeated compilations when the config enables torch.compile.
    setup_cache_size_limit_of_dynamo()
    setup_cpu_distributed(cfg)
    if 'runner_type' in cfg:
        return RUNNERS.build(cfg)
    return Runner.from_cfg(cfg)


def apply_train_args(cfg: Config, args: argparse.Namespace) -> None:
    """Applies ``--amp``, ``--auto-scale-lr`` and ``--resume`` to the config.

    Args:
        cfg: The config, updated in place.
        args: The parsed arguments.

    Raises:
        RuntimeError: If ``--auto-scale-lr`` is given but the config has no complete
            ``auto_scale_lr`` section.
    """
    if args.amp:
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.loss_scale = 'dynamic'
    if args.auto_scale_lr:
        scale_cfg = cfg.get('auto_scale_lr', {})
        if 'enable' not in scale_cfg or 'base_batch_size' not in scale_cfg:
            raise RuntimeError('Can not find "auto_scale_lr" or "auto_scale_lr.enable" or '
                               '"auto_scale_lr.base_batch_size" in your configuration file.')
        cfg.auto_scale_lr.enable = True
    # An explicit checkpoint path wins over auto-resume from the work directory.
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif args.resume is not None:
        cfg.resume, cfg.load_from = True, args.resume


def main(argv: list[str] | None = None) -> None:
    """Trains the model the config describes.

    Args:
        argv: Arguments without the program name; ``sys.argv[1:]`` when None.
    """
    args = parse_args(argv)
    cfg = load_config(args)
    apply_train_args(cfg, args)
    build_runner(cfg).train()


if __name__ == '__main__':
    main()
