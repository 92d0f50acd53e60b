"""Checks of the annotation files a config names, before a run spends minutes building.

A missing or corrupt COCO annotation file otherwise fails deep inside pycocotools with an error
that does not name the file.
"""
from __future__ import annotations

import json
import os.path as osp
from typing import Any, Iterator

# Larger files (COCO train2017 is ~450 MB) are only checked for existence: pycocotools parses
# them anyway, and parsing twice would cost tens of seconds.
MAX_PARSED_BYTES = 64 * 2 ** 20


def annotation_files(cfg: Any) -> Iterator[tuple[str, str]]:
    """(config key, path) of every local COCO annotation file of the dataloaders and evaluators
    (files read through ``backend_args`` are left to their backend)."""
    for split in ('train', 'val', 'test'):
        dataset = (cfg.get(f'{split}_dataloader') or {}).get('dataset')
        while isinstance(dataset, dict) and 'dataset' in dataset:  # dataset wrappers
            dataset = dataset['dataset']
        if isinstance(dataset, dict) and dataset.get('ann_file') and not dataset.get('backend_args'):
            root = dataset.get('data_root') or ''
            yield f'{split}_dataloader.dataset.ann_file', osp.join(root, dataset['ann_file'])
        evaluator = cfg.get(f'{split}_evaluator')
        if (isinstance(evaluator, dict) and evaluator.get('ann_file')
                and not evaluator.get('backend_args')):
            yield f'{split}_evaluator.ann_file', evaluator['ann_file']


def check_annotation_file(key: str, path: str) -> None:
    """Raises ``SystemExit`` naming ``key`` and ``path`` if the file is missing or not COCO JSON.

    Remote paths (``s3://`` and the like) are left to the storage backend.
    """
    if '://' in path:
        return
    if not osp.isfile(path):
        raise SystemExit(f'{key}: annotation file {path} does not exist')
    if osp.getsize(path) > MAX_PARSED_BYTES:
        return
    try:
        with open(path) as file:
            content = json.load(file)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise SystemExit(f'{key}: {path} is not valid JSON ({error})') from None
    missing = [k for k in ('images', 'categories') if not isinstance(content, dict) or k not in content]
    if missing:
        raise SystemExit(f'{key}: {path} is not a COCO annotation file (no {", ".join(missing)})')


def check_annotation_files(cfg: Any, splits: tuple[str, ...] = ('train', 'val', 'test')) -> None:
    """Checks every annotation file of the given splits, each distinct path once.

    A split's dataset and evaluator usually name the same file; it is parsed only once.
    """
    checked = set()
    for key, path in annotation_files(cfg):
        if key.split('_')[0] in splits and osp.abspath(path) not in checked:
            check_annotation_file(key, path)
            checked.add(osp.abspath(path))
