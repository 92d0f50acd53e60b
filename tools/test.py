"""Test (and evaluate) a detector: MMDetection 3.3's ``tools/test.py`` with moppa_det registered.

Same command line as MMDetection's. The checkpoint goes through moppa_det's safe loader, so
full and adapter-only MMEngine checkpoints load with ``weights_only=True`` on torch >= 2.6.
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import sys
import warnings
from copy import deepcopy

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)  # so that ``import moppa_det`` finds this clone

from mmengine.config import Config, ConfigDict

import moppa_det  # noqa: E402,F401  (registrations, safe checkpoint loading)
from moppa_det.engine.launch import (  # noqa: E402
    RUN_ERRORS,
    add_common_args,
    build_runner,
    check_before_build,
    die_with_launcher,
    load_config,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parses the command line of ``tools/test.py``.

    Args:
        argv: Arguments without the program name; ``sys.argv[1:]`` when None.

    Returns:
        The parsed arguments.
    """
    parser = argparse.ArgumentParser(description='MMDet test (and eval) a model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--out', type=str,
                        help='dump predictions to a pickle file for offline evaluation')
    parser.add_argument('--show', action='store_true', help='show prediction results')
    parser.add_argument(
        '--show-dir', help='directory where painted images will be saved; it is relative '
        'to work_dir/timestamp/')
    parser.add_argument('--wait-time', type=float, default=2,
                        help='the interval of show (s)')
    parser.add_argument('--tta', action='store_true', help='test-time augmentation')
    add_common_args(parser)
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    if args.out is not None and not args.out.endswith(('.pkl', '.pickle')):
        parser.error('--out must be a .pkl or .pickle file')
    return args


def enable_tta(cfg: Config) -> None:
    """Wraps the model in ``tta_model`` and swaps in ``tta_pipeline`` (MMDetection's defaults).

    Args:
        cfg: The config, updated in place.
    """
    if 'tta_model' not in cfg:
        warnings.warn('Cannot find ``tta_model`` in config, we will set it as default.',
                      stacklevel=2)
        cfg.tta_model = dict(type='DetTTAModel',
                             tta_cfg=dict(nms=dict(type='nms', iou_threshold=0.5),
                                          max_per_img=100))
    if 'tta_pipeline' not in cfg:
        warnings.warn('Cannot find ``tta_pipeline`` in config, we will set it as default.',
                      stacklevel=2)
        data_cfg = cfg.test_dataloader.dataset
        while 'dataset' in data_cfg:  # dataset wrappers
            data_cfg = data_cfg['dataset']
        cfg.tta_pipeline = deepcopy(data_cfg.pipeline)
        cfg.tta_pipeline[-1] = dict(
            type='TestTimeAug',
            transforms=[[dict(type='RandomFlip', prob=1.), dict(type='RandomFlip', prob=0.)],
                        [dict(type='PackDetInputs',
                              meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                                         'scale_factor', 'flip', 'flip_direction'))]])
    cfg.model = ConfigDict(**cfg.tta_model, module=cfg.model)
    cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline


def main(argv: list[str] | None = None) -> None:
    """Runs the test loop of the config on the given checkpoint.

    Args:
        argv: Arguments without the program name; ``sys.argv[1:]`` when None.
    """
    from mmdet.engine.hooks.utils import trigger_visualization_hook
    from mmdet.evaluation import DumpDetResults

    args = parse_args(argv)
    die_with_launcher()
    cfg = load_config(args)
    if '://' not in args.checkpoint and not os.path.isfile(os.path.expanduser(args.checkpoint)):
        raise SystemExit(f'Checkpoint file not found: {args.checkpoint}')
    check_before_build(cfg, ('test',))
    cfg.load_from = args.checkpoint
    if args.show or args.show_dir:
        cfg = trigger_visualization_hook(cfg, args)
    if args.tta:
        enable_tta(cfg)
    runner = build_runner(cfg)
    if args.out is not None:
        # A metric that only writes the predictions out.
        runner.test_evaluator.metrics.append(DumpDetResults(out_file_path=args.out))
    try:
        runner.test()
    except RUN_ERRORS as error:  # they name the file, field or iteration: no traceback needed
        raise SystemExit(f'{type(error).__name__}: {error}') from None


if __name__ == '__main__':
    main()
