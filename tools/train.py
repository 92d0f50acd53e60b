"""Train a detector: MMDetection 3.3's ``tools/train.py`` with moppa_det registered.

Same command line as MMDetection's. Runs from a clone without installing moppa_det, and also
under ``--launcher pytorch`` on CPU-only machines (over gloo). The helpers it shares with
``tools/test.py`` live in ``moppa_det/engine/launch.py``.
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import sys

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)  # so that ``import moppa_det`` finds this clone

from mmengine.config import Config  # noqa: E402

import moppa_det  # noqa: E402,F401  (registers moppa_det's modules in MMDetection's registries)
from moppa_det.engine.launch import (  # noqa: E402
    RUN_ERRORS,
    add_common_args,
    build_runner,
    check_before_build,
    die_with_launcher,
    load_config,
)


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
    die_with_launcher()
    cfg = load_config(args)
    apply_train_args(cfg, args)
    check_before_build(cfg, ('train', 'val'))
    runner = build_runner(cfg)
    try:
        runner.train()
    except RUN_ERRORS as error:  # they name the file, field or iteration: no traceback needed
        raise SystemExit(f'{type(error).__name__}: {error}') from None


if __name__ == '__main__':
    main()
