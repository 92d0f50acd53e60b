"""Prints, per config, the method's trainable backbone parameters and all trainable parameters.

Builds each config's model with random weights (counts do not depend on them; nothing is
fetched) and prints a markdown table, the source of README's per-backbone tables.

Usage:
    python tools/analysis/parameter_table.py configs/mask_rcnn_vit_*.py
    python tools/analysis/parameter_table.py --group-by-backbone configs/mask_rcnn_*.py
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def describe_method(backbone_cfg: dict) -> str:
    """A short method name from a backbone config: adapter types, 'frozen' or 'full'."""
    adapters = backbone_cfg.get('adapter', 'MoPPA')
    if adapters is None:
        return 'frozen' if backbone_cfg.get('frozen', True) else 'full fine-tuning'
    if isinstance(adapters, (str, dict)):
        adapters = [adapters]
    return ' + '.join(a if isinstance(a, str) else a['type'] for a in adapters)


def count_parameters(config: str) -> dict[str, object]:
    """Builds a config's model and returns its method and parameter counts."""
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config

    import moppa_det  # noqa: F401
    from moppa_det.engine.parameter_report import count, trainable_backbone_parameters

    register_all_modules()
    cfg = Config.fromfile(config)
    cfg.model.backbone.update(pretrained=False, checkpoint=None)
    model = MODELS.build(cfg.model)
    params = list(model.parameters())
    return dict(config=Path(config).name, backbone=cfg.model.backbone.model_name,
                detector=cfg.model.type, method=describe_method(cfg.model.backbone),
                backbone_trainable=trainable_backbone_parameters(model),
                trainable=count(params, trainable_only=True), total=count(params))


def markdown(rows: list[dict[str, object]]) -> str:
    lines = ['| method | config | trainable backbone params | all trainable params |',
             '|---|---|---:|---:|']
    lines += [f'| {r["method"]} | `{r["config"]}` | {r["backbone_trainable"]:,} | '
              f'{r["trainable"]:,} |' for r in rows]
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('configs', nargs='+', help='config files')
    parser.add_argument('--group-by-backbone', action='store_true',
                        help='one table per backbone and detector')
    args = parser.parse_args(argv)
    rows = [count_parameters(config) for config in args.configs]
    if not args.group_by_backbone:
        print(markdown(rows))
        return
    for key in dict.fromkeys((r['backbone'], r['detector']) for r in rows):
        print(f'\n{key[1]} on `{key[0]}`:\n')
        print(markdown([r for r in rows if (r['backbone'], r['detector']) == key]))


if __name__ == '__main__':
    main()
