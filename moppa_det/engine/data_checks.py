"""Checks of the annotation files and images a config names, before a run spends minutes
building.

A missing, empty or corrupt COCO annotation file otherwise fails deep inside pycocotools with an
error that does not name the file; a missing image fails only when the data loader reaches it,
possibly hours into training.
"""
from __future__ import annotations

import json
import os.path as osp
from typing import Any, Iterator

# Larger files (COCO train2017 is ~450 MB) are only checked for existence: pycocotools parses
# them anyway, and parsing twice would cost tens of seconds.
MAX_PARSED_BYTES = 64 * 2 ** 20
SHOWN_MISSING = 5  # missing images named in the message


def _datasets(cfg: Any) -> Iterator[tuple[str, dict]]:
    """(split, innermost dataset config) of each dataloader (dataset wrappers unwrapped)."""
    for split in ('train', 'val', 'test'):
        dataset = (cfg.get(f'{split}_dataloader') or {}).get('dataset')
        while isinstance(dataset, dict) and 'dataset' in dataset:
            dataset = dataset['dataset']
        if isinstance(dataset, dict):
            yield split, dataset


def annotation_files(cfg: Any) -> Iterator[tuple[str, str]]:
    """(config key, path) of every local COCO annotation file of the dataloaders and evaluators
    (files read through ``backend_args`` are left to their backend)."""
    for split, dataset in _datasets(cfg):
        if dataset.get('ann_file') and not dataset.get('backend_args'):
            root = dataset.get('data_root') or ''
            yield f'{split}_dataloader.dataset.ann_file', osp.join(root, dataset['ann_file'])
    for split in ('train', 'val', 'test'):
        evaluator = cfg.get(f'{split}_evaluator')
        if (isinstance(evaluator, dict) and evaluator.get('ann_file')
                and not evaluator.get('backend_args')):
            yield f'{split}_evaluator.ann_file', evaluator['ann_file']


def check_annotation_file(key: str, path: str) -> dict | None:
    """Raises ``SystemExit`` naming ``key`` and ``path`` if the file is missing, empty or not
    COCO JSON.

    Returns:
        The parsed content; None when it was not parsed (remote, or too large).
    """
    if '://' in path:
        return None
    if not osp.isfile(path):
        raise SystemExit(f'{key}: annotation file {path} does not exist')
    if osp.getsize(path) == 0:
        raise SystemExit(f'{key}: annotation file {path} is empty (0 bytes)')
    if osp.getsize(path) > MAX_PARSED_BYTES:
        return None
    try:
        with open(path) as file:
            content = json.load(file)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise SystemExit(f'{key}: {path} is not valid JSON ({error})') from None
    missing = [k for k in ('images', 'categories')
               if not isinstance(content, dict) or k not in content]
    if missing:
        raise SystemExit(f'{key}: {path} is not a COCO annotation file (no {", ".join(missing)})')
    if not content['categories']:
        raise SystemExit(f'{key}: {path} defines no categories')
    return content


def check_annotation_files(cfg: Any, splits: tuple[str, ...] = ('train', 'val', 'test')) -> None:
    """Checks every annotation file of the given splits, each distinct path once, and the images
    the datasets of those splits list.

    A split's dataset and evaluator usually name the same file; it is parsed only once.
    """
    parsed: dict[str, dict | None] = {}
    for key, path in annotation_files(cfg):
        if key.split('_')[0] in splits and osp.abspath(path) not in parsed:
            parsed[osp.abspath(path)] = check_annotation_file(key, path)
    for split, dataset in _datasets(cfg):
        root = dataset.get('data_root') or ''
        path = osp.abspath(osp.join(root, dataset.get('ann_file') or ''))
        if split in splits and parsed.get(path) is not None:
            check_images(f'{split}_dataloader.dataset', dataset, path, parsed[path],
                         training=split == 'train')


def check_images(key: str, dataset: dict, path: str, content: dict, training: bool) -> None:
    """Raises ``SystemExit`` if the annotation file lists no images (training split) or images
    missing on disk, naming the first few.

    Args:
        key: Config key of the dataset.
        dataset: The dataset config (``data_root``, ``data_prefix.img``).
        path: The annotation file.
        content: Its parsed content.
        training: Whether an empty image list is an error.
    """
    images = content['images']
    if training and not images:
        raise SystemExit(f'{key}: {path} lists no images')
    prefix = (dataset.get('data_prefix') or {}).get('img', '')
    if dataset.get('backend_args') or '://' in str(prefix):
        return
    directory = osp.join(dataset.get('data_root') or '', prefix)
    missing = [image['file_name'] for image in images
               if not osp.isfile(osp.join(directory, image['file_name']))]
    if missing:
        shown = ', '.join(missing[:SHOWN_MISSING]) + (', ...' if len(missing) > SHOWN_MISSING
                                                      else '')
        raise SystemExit(f'{key}: {len(missing)} of the {len(images)} images listed in {path} '
                         f'are missing under {osp.join(directory, "")}: {shown}')
