"""Checks of a config before the runner builds anything, each error naming the config key.

What MMEngine reports by itself: a key the class does not take raises ``TypeError: class `X`
in ...: __init__() got an unexpected keyword argument 'k'`` when that part is built, which names
the class but not the config key, and comes late for parts built lazily (the train loop, the
optimizer, the checkpoint hook's extra arguments only at the first save). It reports nothing
for keys a class swallows through ``**kwargs``, or for heads whose ``num_classes`` disagree
(a bbox head of 7 classes with a mask head of 3 ends in an IndexError inside the mask loss).

Checked here, before anything is built:

* every key of a registered part (model and its sub-modules, loops, hooks, optimizer wrapper
  and optimizer, schedulers, datasets, transforms, samplers, metrics) against what the class
  takes, following ``**kwargs`` up the class hierarchy; ``randomness`` and the data loaders'
  own keys; the message names the config key and the closest accepted names;
* the ``num_classes`` of the box and mask heads against each other and the dataset's classes;
* the backbone weights file (``model.backbone.checkpoint``): exists, and is a torch or
  safetensors file.
"""
from __future__ import annotations

import difflib
import inspect
import json
import os.path as osp
import struct
from typing import Any, Callable, Iterator

from mmengine.runner import Runner
from torch.utils.data import DataLoader

from .checkpoint_files import CheckpointReadError, check_checkpoint_file


class ConfigKeyError(ValueError):
    """A config key that nothing reads, or values that contradict each other."""


# Sub-configs handed to builders that take some keys themselves (build_norm_layer pops
# requires_grad, ...) or to initialisers: not checked key by key.
SKIPPED_KEYS = frozenset({'init_cfg', 'norm_cfg', 'act_cfg', 'conv_cfg', 'plugins', 'dcn'})
# Keys MMEngine's builders read themselves before calling the class.
BUILDER_KEYS = {'optim_wrapper': {'constructor', 'paramwise_cfg'},
                'param_scheduler': {'convert_to_iter_based'}}


def check_config(cfg: Any) -> None:
    """Checks the keys and the heads' classes (the weights file: :func:`check_backbone_weights`).

    Raises:
        ConfigKeyError: naming the first offending key.
    """
    check_keys(cfg)
    check_num_classes(cfg)


# --- keys ----------------------------------------------------------------------------------------
def check_keys(cfg: Any) -> None:
    """Checks the keys of every registered part the config describes (see the module docstring)."""
    from mmdet import registry as r

    for path, part, registries in _parts(cfg, r):
        _check_part(path, part, registries)
    for split in ('train', 'val', 'test'):
        loader = cfg.get(f'{split}_dataloader')
        if isinstance(loader, dict):
            _check_names(f'{split}_dataloader', loader, _params(DataLoader.__init__), 'DataLoader')
    if isinstance(cfg.get('randomness'), dict):
        _check_names('randomness', cfg.randomness, _params(Runner.set_randomness), 'randomness')


def _parts(cfg: Any, r: Any) -> Iterator[tuple[str, dict, tuple]]:
    """(config key, sub-config, registries to resolve its type in) of every part."""
    if isinstance(cfg.get('model'), dict):
        yield from _model_parts('model', cfg.model, (r.MODELS, r.TASK_UTILS))
    for name in ('train_cfg', 'val_cfg', 'test_cfg'):
        if isinstance(cfg.get(name), dict) and 'type' in cfg[name]:
            yield name, cfg[name], (r.LOOPS,)
    for name, hook in (cfg.get('default_hooks') or {}).items():
        if isinstance(hook, dict):
            yield f'default_hooks.{name}', hook, (r.HOOKS,)
    for index, hook in enumerate(cfg.get('custom_hooks') or []):
        if isinstance(hook, dict):
            yield f'custom_hooks[{index}]', hook, (r.HOOKS,)
    wrapper = cfg.get('optim_wrapper')
    if isinstance(wrapper, dict):
        yield 'optim_wrapper', wrapper, (r.OPTIM_WRAPPERS,)
        if isinstance(wrapper.get('optimizer'), dict):
            yield 'optim_wrapper.optimizer', wrapper['optimizer'], (r.OPTIMIZERS,)
    schedulers = cfg.get('param_scheduler')
    for index, scheduler in enumerate(schedulers if isinstance(schedulers, list) else
                                      [schedulers] if schedulers else []):
        yield f'param_scheduler[{index}]', scheduler, (r.PARAM_SCHEDULERS,)
    for split in ('train', 'val', 'test'):
        yield from _data_parts(f'{split}_dataloader', cfg.get(f'{split}_dataloader'), r)
        evaluators = cfg.get(f'{split}_evaluator')
        for index, metric in enumerate(evaluators if isinstance(evaluators, list) else
                                       [evaluators] if evaluators else []):
            if isinstance(metric, dict) and 'type' in metric:
                yield f'{split}_evaluator[{index}]', metric, (r.METRICS, r.EVALUATOR)


def _model_parts(path: str, part: dict, registries: tuple) -> Iterator[tuple[str, dict, tuple]]:
    """The model and every typed dict below it (the model's train_cfg/test_cfg included)."""
    if 'type' in part:
        yield path, part, registries
    for key, value in part.items():
        if key in SKIPPED_KEYS:
            continue
        values = value if isinstance(value, list) else [value]
        for index, item in enumerate(values):
            if isinstance(item, dict):
                suffix = f'[{index}]' if isinstance(value, list) else ''
                yield from _model_parts(f'{path}.{key}{suffix}', item, registries)


def _data_parts(path: str, loader: Any, r: Any) -> Iterator[tuple[str, dict, tuple]]:
    if not isinstance(loader, dict):
        return
    for key in ('sampler', 'batch_sampler'):
        if isinstance(loader.get(key), dict):
            yield f'{path}.{key}', loader[key], (r.DATA_SAMPLERS,)
    dataset, key = loader.get('dataset'), f'{path}.dataset'
    while isinstance(dataset, dict):
        yield key, dataset, (r.DATASETS,)
        for index, transform in enumerate(dataset.get('pipeline') or []):
            if isinstance(transform, dict):
                yield f'{key}.pipeline[{index}]', transform, (r.TRANSFORMS,)
        dataset, key = dataset.get('dataset'), f'{key}.dataset'


def _check_part(path: str, part: dict, registries: tuple) -> None:
    kind = part.get('type')
    cls = kind if inspect.isclass(kind) else None
    for registry in registries:
        if cls is None and isinstance(kind, str):
            cls = registry.get(kind)
    if not inspect.isclass(cls):
        return  # unknown or a function: MMEngine's own error names the registry and the type
    accepted = accepted_keys(cls)
    if accepted is not None:
        extra = BUILDER_KEYS.get(path.split('[')[0], set())
        _check_names(path, part, accepted | extra | {'type'}, cls.__name__)


def _check_names(path: str, part: dict, accepted: set[str], owner: str) -> None:
    for key in part:
        if key not in accepted and not key.startswith('_'):  # _delete_, _scope_
            close = difflib.get_close_matches(key, sorted(accepted), n=3, cutoff=0.6)
            hint = f'; did you mean {" or ".join(close)}?' if close else '.'
            raise ConfigKeyError(f'config key {path}.{key}: {owner} takes no {key!r}{hint} '
                                 f'It takes: {", ".join(sorted(accepted - {"type"}))}.')


# Classes whose **kwargs go to a known function rather than to a parent class.
def _kwargs_targets() -> dict[type, Callable]:
    from mmengine.hooks import CheckpointHook
    return {CheckpointHook: Runner.save_checkpoint}


def accepted_keys(cls: type) -> set[str] | None:
    """The keyword arguments ``cls`` accepts, following ``**kwargs`` to the parent classes.

    Returns:
        The names, or None when some ``**kwargs`` end where they cannot be followed (the class
        then takes anything, as far as a static check can tell).
    """
    names: set[str] = set()
    targets = _kwargs_targets()
    for klass in cls.__mro__:
        if klass is object or '__init__' not in klass.__dict__:
            continue
        params = inspect.signature(klass.__dict__['__init__']).parameters.values()
        names |= {p.name for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            return names - {'self'}
        if klass in targets:
            return (names | _params(targets[klass])) - {'self'}
    return None


def _params(function: Callable) -> set[str]:
    return {p.name for p in inspect.signature(function).parameters.values()
            if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)} - {'self'}


# --- classes -------------------------------------------------------------------------------------
def check_num_classes(cfg: Any) -> None:
    """The box and mask heads' ``num_classes`` agree with each other and the dataset's classes.

    The RPN (class-agnostic) and class-agnostic mask heads are left out.
    """
    heads = [(path, part['num_classes']) for path, part in _typed_dicts('model', cfg.get('model'))
             if 'num_classes' in part and _is_class_head(path, part)]
    if not heads:
        return
    if len({value for _, value in heads}) > 1:
        listing = ', '.join(f'{path}.num_classes={value}' for path, value in heads)
        raise ConfigKeyError(f'the heads disagree on the number of classes: {listing}')
    classes, source = dataset_classes(cfg)
    if classes is not None and len(classes) != heads[0][1]:
        raise ConfigKeyError(
            f'{heads[0][0]}.num_classes={heads[0][1]} but the training dataset has '
            f'{len(classes)} classes ({source}): {", ".join(map(str, classes[:10]))}'
            f'{" ..." if len(classes) > 10 else ""}')


def _is_class_head(path: str, part: dict) -> bool:
    last = path.rsplit('.', 1)[-1].split('[')[0]
    if last.startswith('rpn') or not last.endswith('head'):
        return False
    return not part.get('class_agnostic', False)  # FCNMaskHead(class_agnostic=True)


def _typed_dicts(path: str, part: Any) -> Iterator[tuple[str, dict]]:
    if isinstance(part, dict):
        yield path, part
        for key, value in part.items():
            if key not in SKIPPED_KEYS:
                yield from _typed_dicts(f'{path}.{key}', value)
    elif isinstance(part, list):
        for index, item in enumerate(part):
            yield from _typed_dicts(f'{path}[{index}]', item)


def dataset_classes(cfg: Any) -> tuple[list | None, str]:
    """The training dataset's classes and where they come from, or (None, '') if unknown."""
    from mmdet.registry import DATASETS

    dataset = (cfg.get('train_dataloader') or {}).get('dataset')
    while isinstance(dataset, dict) and isinstance(dataset.get('dataset'), dict):
        dataset = dataset['dataset']
    if not isinstance(dataset, dict):
        return None, ''
    classes = (dataset.get('metainfo') or {}).get('classes')
    if classes is not None:
        return list(classes), 'train_dataloader.dataset.metainfo.classes'
    cls = DATASETS.get(dataset['type']) if isinstance(dataset.get('type'), str) else None
    classes = getattr(cls, 'METAINFO', {}).get('classes')
    if classes is not None:
        return list(classes), f'the default classes of {cls.__name__}'
    return None, ''


# --- backbone weights --------------------------------------------------------------------------
def check_backbone_weights(cfg: Any) -> None:
    """``model.backbone.checkpoint``, if set to a local file, exists and holds weights."""
    backbone = (cfg.get('model') or {}).get('backbone')
    path = backbone.get('checkpoint') if isinstance(backbone, dict) else None
    if not isinstance(path, str) or '://' in path:
        return
    key, path = 'model.backbone.checkpoint', osp.expanduser(path)
    if not osp.isfile(path):
        raise ConfigKeyError(f'{key}: backbone weights file {path} does not exist')
    if path.endswith('.safetensors'):
        _check_safetensors(key, path)
        return
    try:
        check_checkpoint_file(path)
    except CheckpointReadError as error:
        raise ConfigKeyError(f'{key}: {error}') from None


def _check_safetensors(key: str, path: str) -> None:
    """A safetensors file: an 8-byte header length, a JSON header, then that many data bytes."""
    size = osp.getsize(path)
    with open(path, 'rb') as file:
        raw = file.read(8)
        length = struct.unpack('<Q', raw)[0] if len(raw) == 8 else -1
        try:
            header = json.loads(file.read(length)) if 0 < length < size else None
        except (ValueError, UnicodeDecodeError):
            header = None
    if not isinstance(header, dict):
        raise ConfigKeyError(f'{key}: {path} is not a safetensors file (no valid header)')
    end = max((entry['data_offsets'][1] for name, entry in header.items()
               if name != '__metadata__'), default=0)
    if size < 8 + length + end:
        raise ConfigKeyError(f'{key}: {path} is truncated ({size} bytes, its header describes '
                             f'{8 + length + end})')
